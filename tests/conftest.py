"""Shared fixtures. ``tests/`` and ``benchmarks/`` are importable through pytest's
``pythonpath`` setting (pyproject.toml), so helpers like ``zoo`` need no path changes here."""

import importlib.util

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))

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
