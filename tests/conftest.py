"""Shared fixtures. ``tests/`` and ``benchmarks/`` are importable through pytest's
``pythonpath`` setting (pyproject.toml), so helpers like ``zoo`` need no path changes here."""

import importlib
import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import zoo

torch.set_num_threads(min(2, torch.get_num_threads()))


def _fashion_mnist_here() -> bool:
    from saliency_sanity import data

    return data.fashion_mnist_available()


#: Resources outside Python's packages that some tests need: how to tell one is here, and how to
#: get it. A test marked ``@pytest.mark.needs("fashion_mnist")`` skips, naming the install
#: command, where the resource is missing; ``SALIENCY_SANITY_REQUIRE=fashion_mnist,chromium``
#: (set by ``.ci/run`` once it installed them) makes a missing one a failure instead.
RESOURCES = {
    "fashion_mnist": (_fashion_mnist_here, "Fashion-MNIST is not installed (Debian's "
                      "dataset-fashion-mnist): apt-get install dataset-fashion-mnist"),
    "chromium": (lambda: os.path.exists("/usr/bin/chromium"),
                 "Chromium is not installed (Debian's chromium): apt-get install chromium"),
}
#: Python packages the README installs in other environments (the model libraries, Ray): their
#: tests skip where they are missing. Every other ``pytest.importorskip`` names a package of the
#: ``test`` extra: with ``SALIENCY_SANITY_STRICT_IMPORTS=1`` (the fresh-machine rehearsal in
#: ``.ci/run``) a missing one fails instead of skipping, so a package dropped from the extra
#: fails CI.
OPTIONAL_PACKAGES = {"torchvision", "timm", "transformers", "zennit", "ray"}

if os.environ.get("SALIENCY_SANITY_STRICT_IMPORTS") == "1":
    _importorskip = pytest.importorskip

    def _strict_importorskip(modname: str, *args, **kwargs):
        if modname.split(".")[0] in OPTIONAL_PACKAGES:
            return _importorskip(modname, *args, **kwargs)
        try:
            return importlib.import_module(modname)
        except ImportError as err:
            raise ImportError(f"{modname} is needed by the tests but not installed: add it to "
                              f"the test extra in pyproject.toml ({err})") from err

    pytest.importorskip = _strict_importorskip


def pytest_configure(config):
    config.addinivalue_line("markers", "needs(name): needs an optional resource (conftest "
                            "RESOURCES): skipped with its install command where it is missing")


def pytest_collection_modifyitems(config, items):
    for item in items:  # every test on the Ray cluster is a `ray` test (.ci/run selects them)
        if "ray_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ray)


def pytest_runtest_setup(item):
    required = set(filter(None, os.environ.get("SALIENCY_SANITY_REQUIRE", "").split(",")))
    for mark in item.iter_markers("needs"):
        for name in mark.args:
            here, how = RESOURCES[name]
            if not here():
                if name in required:
                    pytest.fail(f"{how} (SALIENCY_SANITY_REQUIRE lists {name})")
                pytest.skip(how)

# zennit's reference helpers import zennit at module level: collected (for doctests) only in the
# environment that has it (the vision environment of .ci/run).
collect_ignore = [] if importlib.util.find_spec("zennit") else ["lrp_zennit.py"]


@pytest.fixture
def global_rng_guard():
    """Fails the test if the code under test consumed or reseeded torch's global RNG."""
    before = torch.random.get_rng_state().clone()
    yield
    assert torch.equal(torch.random.get_rng_state(), before), "global RNG was used"


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of many tiny ops: on a shared, loaded 2-core machine,
    waiting on OpenMP barriers costs far more than the second thread gains."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def npz(tmp_path):
    """The zoo CNN's four inputs (``x``) and labels 0-3 (``y``) as ``data.npz``: a CLI's data."""
    _, x = zoo.make("cnn")
    p = tmp_path / "data.npz"
    np.savez(p, x=x.numpy(), y=np.array([0, 1, 2, 3]))
    return p


@pytest.fixture
def weights(tmp_path):
    """A state dict for the zoo CNN (seed 5, not the factory's weights) as ``w.pt``."""
    p = tmp_path / "w.pt"
    torch.save(zoo.make("cnn", seed=5)[0].state_dict(), p)
    return p


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster for one test module (2 CPUs, no dashboard, a small object store);
    its address. Skips the module without Ray."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tasks use the driver's thread count: 2 workers on 2 cores
    # Workers import the test helpers (zoo) that pickled models refer to: the cluster's
    # processes inherit tests/ and src/ on their path, whatever the driver's PYTHONPATH.
    here = Path(__file__).resolve().parent
    path_before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(here), str(here.parent / "src")] + ([path_before] if path_before else []))
    try:
        ctx = ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 2**20,
                       logging_level="warning")
    finally:
        if path_before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = path_before
    yield ctx.address_info["address"]
    ray.shutdown()
    torch.set_num_threads(before)
