"""DiffROAR, BlockMNIST and localization on the Ray backend: the same tables (and trained
models) as a local run, bit for bit on CPU; only the driver writes; runs resume across
backends. A local Ray cluster (2 CPUs) is started inside the test run (conftest's ray_cluster)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from saliency_sanity import data, localization_test, training
from saliency_sanity.checks.blockmnist import blockmnist_experiment
from saliency_sanity.checks.roar import diffroar
from saliency_sanity.grids import GridSet

_TINY = {"ks": (1.0, 0.5), "repeats": 1, "model_kwargs": {"width": 0.02}, "progress": False,
         "trainer": training.TrainConfig(epochs=1, target_train_acc=None, batch_size=32)}
_COLS = ["method", "k", "side", "repeat", "seed", "test_acc", "train_acc", "epochs",
         "reached_target", "cache_key", "from_cache"]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


@pytest.mark.ray
def test_diffroar_on_ray_equals_local_and_resumes_across_backends(ray_cluster, tmp_path):
    ds = data.load("mnist", n_train=96, n_test=48)
    local = diffroar("mnist_mlp", ds, None, method="gradient", run_dir=tmp_path / "local", **_TINY)
    on_ray = diffroar("mnist_mlp", ds, None, method="gradient", run_dir=tmp_path / "ray",
                      backend="ray", **_TINY)
    pd.testing.assert_frame_equal(local.table[_COLS], on_ray.table[_COLS], check_exact=True)
    pd.testing.assert_frame_equal(local.summary, on_ray.summary, check_exact=True)
    assert on_ray.settings.pop("engine") == {"backend": "ray"}
    assert len(on_ray.settings["units_trained"]) == 4
    assert local.settings == on_ray.settings
    # the unit rows and the trained models the driver wrote are the local run's
    units = sorted(p.name for p in (tmp_path / "local" / "units").iterdir())
    assert units == sorted(p.name for p in (tmp_path / "ray" / "units").iterdir())
    for name in units:
        a, b = (json.loads((tmp_path / d / "units" / name).read_text()) for d in ("local", "ray"))
        a.pop("seconds"), b.pop("seconds")
        assert a == b
    models = sorted(p.name for p in (tmp_path / "local" / "models").glob("*.pt"))
    assert models == sorted(p.name for p in (tmp_path / "ray" / "models").glob("*.pt"))
    assert len(models) == 5  # the original and four retrainings
    for name in models:
        wa, wb = _weights(tmp_path / "local" / "models" / name), \
            _weights(tmp_path / "ray" / "models" / name)
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # a finished Ray run resumes locally (and the other way round) without training
    again = diffroar("mnist_mlp", ds, None, method="gradient", run_dir=tmp_path / "ray", **_TINY)
    assert again.settings["units_trained"] == [] and len(again.settings["units_loaded"]) == 4
    pd.testing.assert_frame_equal(again.table[_COLS[:-1]], local.table[_COLS[:-1]],
                                  check_exact=True)
    (tmp_path / "local" / "units" / units[0]).unlink()  # one row lost, its model cached
    back = diffroar("mnist_mlp", ds, None, method="gradient", run_dir=tmp_path / "local",
                    backend="ray", **_TINY)
    assert back.settings["units_trained"] == [units[0][:-5]]
    pd.testing.assert_frame_equal(back.table[_COLS[:-1]], local.table[_COLS[:-1]],
                                  check_exact=True)


@pytest.mark.ray
def test_blockmnist_on_ray_equals_local(ray_cluster, tmp_path):
    kw = dict(n_train=32, n_test=16, n_maps=4, classes=2, epochs=1, width=0.05,
              attack=training.PGD("l2", eps=1.0, steps=1), progress=False)
    local = blockmnist_experiment(cache_dir=tmp_path / "local", **kw)
    on_ray = blockmnist_experiment(cache_dir=tmp_path / "ray", backend="ray", **kw)
    pd.testing.assert_frame_equal(local["table"], on_ray["table"], check_exact=True)
    pd.testing.assert_frame_equal(local["summary"], on_ray["summary"], check_exact=True)
    for name in ("standard", "robust"):
        assert torch.equal(local["maps"][name], on_ray["maps"][name])
    again = blockmnist_experiment(cache_dir=tmp_path / "ray", **kw)  # the driver cached both
    pd.testing.assert_frame_equal(again["summary"], local["summary"], check_exact=True)


def _net() -> nn.Module:
    g = torch.Generator().manual_seed(3)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return net


@pytest.mark.ray
def test_localization_on_ray_equals_local(ray_cluster, tmp_path):
    g = torch.Generator().manual_seed(0)
    labels = torch.stack([torch.randperm(10, generator=g)[:4] for _ in range(4)])
    grids = GridSet(torch.rand(4, 1, 16, 16, generator=g), labels,
                    torch.zeros(4, 4, dtype=torch.long))
    kw = dict(methods=["gradient", "gradient_x_input"], settings=["gridpg", "difull"],
              layers=["input", "final"], smoothing=True, controls=False, batch_size=2,
              progress=False)
    local = localization_test(_net(), grids, run_dir=tmp_path / "local", **kw)
    on_ray = localization_test(_net(), grids, run_dir=tmp_path / "ray", backend="ray", **kw)
    assert len(local.table) > 0 and local.table["value"].notna().all()
    pd.testing.assert_frame_equal(local.table, on_ray.table, check_exact=True)
    assert (tmp_path / "local" / "results.csv").read_bytes() == \
        (tmp_path / "ray" / "results.csv").read_bytes()
    assert on_ray.settings["engine"].pop("backend") == "ray"
    assert local.settings == on_ray.settings
    assert not (tmp_path / "ray" / "partial").exists()


def test_diffroar_and_blockmnist_check_the_backend(monkeypatch, tmp_path, capsys):
    ds = data.load("mnist", n_train=16, n_test=8)
    with pytest.raises(ValueError, match="backend must be one of"):
        diffroar("mnist_mlp", ds, None, method="random", backend="dask", **_TINY)
    with pytest.raises(ValueError, match="Ray backend only"):
        blockmnist_experiment(ray_address="auto", progress=False)
    monkeypatch.setitem(sys.modules, "ray", None)  # "not installed": said before any training
    with pytest.raises(ImportError, match=r"pip install 'saliency-sanity\[ray\]'"):
        diffroar("mnist_mlp", ds, None, method="gradient", backend="ray", cache_dir=False, **_TINY)
    from saliency_sanity.cli import main

    args = ["diffroar", "--n-train", "16", "--n-test", "8", "--epochs", "1", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "a"), "--ray-address", "auto"]) == 2
    assert "--ray-address needs --backend ray" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "b"), "--backend", "ray"]) == 2
    assert "pip install 'saliency-sanity[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "b" / "results.csv").exists()


@pytest.mark.ray
def test_cli_diffroar_backend_ray_equals_local(ray_cluster, tmp_path):
    from saliency_sanity.cli import main

    args = ["diffroar", "--ks", "1,0.5", "--repeats", "1", "--n-train", "64", "--n-test", "32",
            "--width", "0.05", "--epochs", "1", "--original-epochs", "1", "--control-repeats",
            "2", "--pgd-steps", "1", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "local")]) == 0
    assert main([*args, "--out", str(tmp_path / "ray"), "--backend", "ray",
                 "--ray-address", ray_cluster]) == 0
    a, b = (pd.read_csv(tmp_path / d / "results.csv") for d in ("local", "ray"))
    cols = [c for c in a.columns if c != "seconds"]
    assert len(a) == 16  # standard 4, robust 4, random control 8 (2 repeats)
    pd.testing.assert_frame_equal(a[cols], b[cols], check_exact=True)
    for name in ("diffroar.csv",):
        assert (tmp_path / "local" / name).read_bytes() == (tmp_path / "ray" / name).read_bytes()
