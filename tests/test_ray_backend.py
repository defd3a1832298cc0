"""The Ray backend: the same tables as the local backend, bit for bit on CPU; worker and driver
faults; Ray imported only when asked for. A local Ray cluster is started inside the test run
(2 CPUs, no dashboard, a small object store) and shut down after the module."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch
import zoo
from interrupt import kill_midway

from saliency_sanity import (
    compare_models,
    data,
    faithfulness_test,
    methods,
    model_randomization_test,
    training,
)
from saliency_sanity.checks import data_randomization_test
from saliency_sanity.engine import store as store_mod

HERE = Path(__file__).parent
SRC = HERE.parent / "src"
KW = dict(methods={"gradient": "gradient", "ig": ("integrated_gradients", {"steps": 8}),
                   "smoothgrad": ("smoothgrad", {"samples": 4})},
          scores=["spearman_abs", "ssim"], batch_size=1, progress=False)


def cnn_factory():
    return zoo.make("cnn")[0]


def _same_run_dirs(a: Path, b: Path, tables=("results.csv", "null.csv"), cli=False) -> None:
    """Tables byte for byte; run.json equal but for the engine's record of the backend (and
    the command line, for a CLI run)."""
    for name in tables:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    ja = json.loads((a / "run.json").read_text())
    jb = json.loads((b / "run.json").read_text())
    assert jb["settings"]["engine"].pop("backend") == "ray"
    if cli:
        assert "--backend ray" in jb["settings"].pop("command")
        ja["settings"].pop("command")
    assert ja == jb
    assert not (b / "partial").exists()


@pytest.mark.ray
def test_model_randomization_on_ray_equals_local(ray_cluster, tmp_path):
    model, x = zoo.make("cnn")
    local = model_randomization_test(model, x, run_dir=tmp_path / "local", **KW)
    on_ray = model_randomization_test(model, x, run_dir=tmp_path / "ray", backend="ray", **KW)
    pd.testing.assert_frame_equal(local.table, on_ray.table, check_exact=True)
    pd.testing.assert_frame_equal(local.null, on_ray.null, check_exact=True)
    for label, by_stage in local.examples["maps"].items():
        for k, m in by_stage.items():
            assert (m == on_ray.examples["maps"][label][k]).all()
    assert local.stages == on_ray.stages
    _same_run_dirs(tmp_path / "local", tmp_path / "ray")
    # activation reuse happened on the workers, as often as here
    assert on_ray.settings["activation_reuse"] == local.settings["activation_reuse"]
    assert local.settings["activation_reuse"]["reused_operations"] > 0


@pytest.mark.ray
def test_faithfulness_on_ray_equals_local(ray_cluster, tmp_path):
    model, x = zoo.make("cnn")
    kw = dict(methods=["gradient", "smoothgrad"], metrics=["region_perturbation", "road"],
              settings={"region_perturbation": {"steps": 6}}, batch_size=2, progress=False)
    local = faithfulness_test(model, x, run_dir=tmp_path / "local", **kw)
    on_ray = faithfulness_test(model, x, run_dir=tmp_path / "ray", backend="ray", **kw)
    pd.testing.assert_frame_equal(local.table, on_ray.table, check_exact=True)
    assert len(local.table) > 0
    _same_run_dirs(tmp_path / "local", tmp_path / "ray", tables=("results.csv",))


@pytest.mark.ray
def test_data_randomization_on_ray_equals_local(ray_cluster, tmp_path):
    """Both trainings run as Ray tasks; this process writes them to the cache, where a local
    run finds them; the tables equal a local run's that trained here."""
    ds = data.load("mnist", n_train=64, n_test=8)
    kw = dict(n_samples=4, model_kwargs={"width": 0.05}, methods=["gradient"],
              scores=["spearman_abs"], controls=False, progress=False,
              batch_size=2, true_config=training.TrainConfig.true_labels(epochs=1),
              random_config=training.TrainConfig.random_labels(0, epochs=1))
    with pytest.warns(RuntimeWarning, match="INVALID"):
        local = data_randomization_test(ds, "mnist_mlp", cache_dir=False, **kw)
    with pytest.warns(RuntimeWarning, match="INVALID"):
        on_ray = data_randomization_test(ds, "mnist_mlp", backend="ray", cache_dir=tmp_path,
                                         **kw)
    with pytest.warns(RuntimeWarning, match="INVALID"):
        cached = data_randomization_test(ds, "mnist_mlp", cache_dir=tmp_path, **kw)
    pd.testing.assert_frame_equal(local.table, on_ray.table, check_exact=True)
    pd.testing.assert_frame_equal(local.table, cached.table, check_exact=True)
    assert len(local.table) == 4
    acc = cached.settings["accuracies"]
    assert acc["true"]["from_cache"] and acc["random"]["from_cache"]
    assert not on_ray.settings["accuracies"]["true"]["from_cache"]
    for which in ("true", "random"):
        for k in ("train_acc", "test_acc", "epochs", "cache_key"):
            assert acc[which][k] == local.settings["accuracies"][which][k]
    assert len(list(tmp_path.glob("*.pt"))) == 2


@pytest.mark.ray
def test_model_and_inputs_are_put_once(ray_cluster, monkeypatch):
    import ray

    puts: list[object] = []
    real_put = ray.put

    def counting(value, *a, **k):
        puts.append(value)
        return real_put(value, *a, **k)

    monkeypatch.setattr(ray, "put", counting)
    model, x = zoo.make("cnn")
    with pytest.warns(RuntimeWarning, match="bit-identical"):  # the same model twice
        r = compare_models(model, model, x, methods=["gradient"], scores=["pearson"],
                           controls=False, progress=False, batch_size=1, backend="ray")
    assert r.settings["engine"] == {"units": 4, "stage_models_held_at_most": 2,
                                    "backend": "ray"}
    assert len(puts) == 1 and puts[0]["x"] is not None  # one object for the 4 tasks
    assert (r.table["value"] == 1.0).all()  # the same model twice: identical maps


def _kill_once(marker: Path, driver: int):
    """A gradient method whose first call in a worker process kills that process (SIGKILL)."""
    grad = methods.get("gradient")

    def gradient(model, x, target):
        if os.getpid() != driver and not marker.exists():
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return grad(model, x, target)

    return gradient


@pytest.mark.ray
def test_worker_killed_mid_unit_is_retried_and_written_once(ray_cluster, tmp_path, monkeypatch):
    model, x = zoo.make("cnn")
    marker = tmp_path / "killed"
    kw = dict(KW, methods={"gradient": _kill_once(marker, os.getpid()), "ig":
                           "integrated_gradients"})
    local = model_randomization_test(model, x, **kw)
    assert not marker.exists()  # the driver never kills itself

    saved: list[str] = []
    real_save = store_mod.UnitStore.save

    def counting(self, key, chunk):
        saved.append(key)
        real_save(self, key, chunk)

    monkeypatch.setattr(store_mod.UnitStore, "save", counting)
    on_ray = model_randomization_test(model, x, run_dir=tmp_path / "run", backend="ray", **kw)
    assert marker.exists() and int(marker.read_text()) != os.getpid()  # a worker died
    assert sorted(saved) == [f"batch-{i:06d}" for i in range(4)]  # each unit written once
    pd.testing.assert_frame_equal(local.table, on_ray.table, check_exact=True)
    pd.testing.assert_frame_equal(local.null, on_ray.null, check_exact=True)


SCRIPT = """
import sys, time
import torch, zoo
from saliency_sanity import methods, model_randomization_test

torch.set_num_threads(1)
backend, address, out = sys.argv[1:4]
grad = methods.get("gradient")


def slow_gradient(model, x, target):
    time.sleep(0.1)
    return grad(model, x, target)


model, x = zoo.make("cnn")
x = torch.cat([x, x.flip(0)])
extra = {"ray_address": address} if backend == "ray" else {}
model_randomization_test(model, x, methods={"gradient": slow_gradient},
                         scores=["spearman_abs"], batch_size=1, progress=True, run_dir=out,
                         backend=backend, **extra)
"""


@pytest.mark.ray
@pytest.mark.slow
def test_driver_killed_resumes_on_ray_and_locally(ray_cluster, tmp_path):
    script = tmp_path / "run_check.py"
    script.write_text(textwrap.dedent(SCRIPT))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), str(HERE)]),
               OMP_NUM_THREADS="1")

    def cmd(backend: str, out: Path) -> list[str]:
        return [sys.executable, str(script), backend, ray_cluster, str(out)]

    ref = tmp_path / "ref"  # the script's run, uninterrupted, here
    model, x = zoo.make("cnn")
    grad = methods.get("gradient")

    def slow_gradient(model, x, target):
        return grad(model, x, target)

    model_randomization_test(model, torch.cat([x, x.flip(0)]),
                             methods={"gradient": slow_gradient}, scores=["spearman_abs"],
                             batch_size=1, progress=False, run_dir=ref)

    out = tmp_path / "killed"
    n_done = kill_midway(cmd("ray", out), env, out, units=8)
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(out), str(copy)], check=True)

    for backend, where in (("ray", out), ("local", copy)):  # the same command, either backend
        done = subprocess.run(cmd(backend, where), env=env, check=True, capture_output=True,
                              text=True, timeout=300)
        assert f"resuming: {n_done} of 8 units done" in done.stderr
        for name in ("results.csv", "null.csv"):
            assert (where / name).read_bytes() == (ref / name).read_bytes(), (backend, name)


@pytest.mark.ray
@pytest.mark.slow
def test_cli_backend_ray(ray_cluster, tmp_path, capsys):
    import numpy as np

    from saliency_sanity.cli import main

    _, x = zoo.make("cnn")
    npz = tmp_path / "d.npz"
    np.savez(npz, x=x.numpy())
    args = ["model-randomization", "--model", "test_ray_backend:cnn_factory", "--data", str(npz),
            "--methods", "gradient", "--scores", "spearman_abs", "--batch-size", "2",
            "--random-logit", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "local")]) == 0
    assert main([*args, "--out", str(tmp_path / "ray"), "--backend", "ray", "--ray-address",
                 ray_cluster]) == 0
    _same_run_dirs(tmp_path / "local", tmp_path / "ray", cli=True)
    # the extras run on the same backend
    _same_run_dirs(tmp_path / "local" / "random_logit", tmp_path / "ray" / "random_logit",
                   tables=("results.csv",))


# ------------------------------------------------------------------ no Ray unless asked for
def test_a_local_run_does_not_import_ray():
    code = textwrap.dedent("""
        import sys, torch
        import saliency_sanity
        from torch import nn
        net = nn.Sequential(nn.Linear(4, 3))
        r = saliency_sanity.model_randomization_test(net, torch.ones(2, 4), progress=False,
                                                     methods=["gradient"])
        assert len(r.table) > 0
        assert "ray" not in sys.modules, "ray was imported"
        print("ok")
    """)
    env = dict(os.environ, PYTHONPATH=str(SRC))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_without_ray_asking_for_it_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # "not installed"
    net = torch.nn.Sequential(torch.nn.Linear(4, 3))
    with pytest.raises(ImportError, match=r"pip install 'saliency-sanity\[ray\]'"):
        model_randomization_test(net, torch.ones(2, 4), methods=["gradient"], progress=False,
                                 backend="ray")


def test_backend_settings_are_checked():
    net = torch.nn.Sequential(torch.nn.Linear(4, 3))
    x = torch.ones(2, 4)
    with pytest.raises(ValueError, match="backend must be one of"):
        compare_models(net, net, x, methods=["gradient"], progress=False, backend="dask")
    with pytest.raises(ValueError, match="Ray backend only"):
        compare_models(net, net, x, methods=["gradient"], progress=False, ray_address="auto")


def test_cli_scaling_flags_are_checked(tmp_path, monkeypatch, capsys):
    import numpy as np

    from saliency_sanity.cli import main

    _, x = zoo.make("cnn")
    npz = tmp_path / "d.npz"
    np.savez(npz, x=x.numpy())
    args = ["model-randomization", "--model", "test_ray_backend:cnn_factory", "--data", str(npz),
            "--methods", "gradient", "--scores", "spearman_abs", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "a"), "--ray-address", "auto"]) == 2
    assert "--ray-address needs --backend ray" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)  # "not installed"
    assert main([*args, "--out", str(tmp_path / "b"), "--backend", "ray"]) == 2
    assert "pip install 'saliency-sanity[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "b" / "partial").exists()

