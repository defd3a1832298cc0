"""Masked data sets and DiffROAR with retraining: masks against numpy, determinism, resume after
SIGKILL, invalid runs, bad input, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from saliency_sanity import data, training
from saliency_sanity.checks import _masking as mk
from saliency_sanity.checks.roar import diffroar, plan_units, summarize

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.mark.parametrize("k", [0.05, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("side", ["top", "bottom"])
def test_keep_mask_matches_numpy_ranking(k, side):
    attr = torch.randn(5, 2, 6, 6, generator=torch.Generator().manual_seed(2))
    keep = mk.keep_mask(attr, k, side)
    for i in range(5):
        a = np.abs(attr[i].numpy().ravel())
        n = max(1, round(k * a.size))
        order = np.argsort(-a if side == "top" else a, kind="stable")[:n]
        ref = np.zeros(a.size, bool)
        ref[order] = True
        assert np.array_equal(keep[i].numpy().ravel(), ref)
        if n < a.size:
            kept, gone = a[ref], a[~ref]
            assert (kept.min() >= gone.max()) if side == "top" else (kept.max() <= gone.min())


def test_per_pixel_keeps_channels_together_and_fill_values():
    attr = torch.randn(3, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    keep = mk.keep_mask(attr, 0.25, "top", per="pixel")
    assert bool((keep == keep[:, :1]).all()) and int(keep[:, 0].sum()) == 3 * 4
    score = attr.abs().sum(1)
    for i in range(3):
        assert score[i][keep[i, 0]].min() >= score[i][~keep[i, 0]].max()
    x = torch.rand(10, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    xn = x.numpy().astype(np.float64)
    assert float(mk.fill_value(x)) == pytest.approx(xn.mean(), abs=1e-7)
    assert np.allclose(mk.fill_value(x, "channel").flatten().numpy(), xn.mean(axis=(0, 2, 3)))
    ds = data.Dataset("t", x, torch.zeros(10).long(), x[:4], torch.zeros(4).long(), ["a"])
    a_tr, a_te = torch.randn_like(x), torch.randn(4, 3, 4, 4)
    m = mk.masked_dataset(ds, a_tr, a_te, 0.3, "bottom", fill="channel")
    kept = mk.keep_mask(a_tr, 0.3, "bottom")
    assert torch.equal(m.x_train[kept], x[kept])
    fill = mk.fill_value(x, "channel").expand_as(x)
    assert torch.equal(m.x_train[~kept], fill[~kept])
    assert torch.equal(ds.x_train, x)  # the source is not modified


@pytest.mark.parametrize("k", [0.0, -0.1, 1.01, 2, "half", float("nan")])
def test_k_outside_unit_interval_is_rejected(k):
    with pytest.raises(ValueError, match=r"k must be"):
        mk.keep_mask(torch.ones(1, 4), k)
    with pytest.raises(ValueError, match=r"k must be"):
        plan_units(ks=(1.0, k))


def test_wrong_attribution_shape_and_bad_arguments():
    x = torch.rand(4, 1, 2, 2)
    with pytest.raises(ValueError, match="attributions have shape"):
        mk.apply_mask(x, torch.rand(4, 4), 0.5, "top", torch.tensor(0.0))
    with pytest.raises(ValueError, match="NaN"):
        mk.check_attribution(torch.full((4, 1, 2, 2), float("nan")), x)
    with pytest.raises(ValueError, match="side"):
        mk.keep_mask(torch.ones(1, 4), 0.5, "middle")
    with pytest.raises(ValueError, match="repeats"):
        plan_units(repeats=0)
    ds = data.load("mnist", n_train=8, n_test=4)
    with pytest.raises(ValueError, match="k must be"):  # before any training
        diffroar("mnist_mlp", ds, None, method="gradient", ks=(1.0, 0.0), cache_dir=False)
    with pytest.raises(ValueError, match="not both"):
        diffroar("mnist_mlp", ds, None, method="gradient", original=nn.Linear(2, 2),
                 adversarial=training.PGD(), cache_dir=False)
    with pytest.raises(TypeError, match="TrainConfig"):
        diffroar("mnist_mlp", ds, None, method="gradient", trainer={"epochs": 1}, cache_dir=False)


def test_attributions_are_cached_by_model_and_method(tmp_path, monkeypatch):
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    x, y = torch.rand(6, 1, 2, 2), torch.tensor([0, 1] * 3)
    a = mk.cached_attributions(net, x, y, "gradient", tmp_path, batch_size=4)
    # gradient of the given label's logit of a linear model = that row of W
    w = net[1].weight.detach()
    assert torch.allclose(a.flatten(1), w[y])

    def boom(*args, **kwargs):
        raise AssertionError("recomputed")

    monkeypatch.setattr(mk, "compute_attributions", boom)
    assert torch.equal(mk.cached_attributions(net, x, y, "gradient", tmp_path), a)
    with torch.no_grad():
        net[1].weight.add_(1.0)
    with pytest.raises(AssertionError, match="recomputed"):  # new weights, new key
        mk.cached_attributions(net, x, y, "gradient", tmp_path)


_TINY = {"ks": (1.0, 0.5), "repeats": 2, "model_kwargs": {"width": 0.02}, "progress": False,
         "trainer": training.TrainConfig(epochs=1, target_train_acc=None, batch_size=32)}


def test_same_seed_same_accuracies_bit_for_bit(global_rng_guard):
    ds = data.load("mnist", n_train=96, n_test=48)
    a = diffroar("mnist_mlp", ds, None, method="gradient", cache_dir=False, **_TINY)
    b = diffroar("mnist_mlp", ds, None, method="gradient", cache_dir=False, **_TINY)
    cols = ["k", "side", "repeat", "seed", "test_acc", "train_acc"]
    pd.testing.assert_frame_equal(a.table[cols], b.table[cols], check_exact=True)
    assert len(a.table) == 8 and a.valid
    # every top x bottom pair pooled, recomputed here from the table
    t = a.table[a.table["k"] == 0.5]
    top = t[t.side == "top"].test_acc.to_numpy()
    bot = t[t.side == "bottom"].test_acc.to_numpy()
    row = a.summary.set_index("k").loc[0.5]
    assert row["diffroar"] == pytest.approx(np.mean(top[:, None] - bot[None, :]), abs=1e-12)
    assert row["kar"] == pytest.approx(top.mean()) and row["roar_removed"] == 0.5
    pd.testing.assert_frame_equal(summarize(a.table), a.summary)


def test_trainer_missing_its_target_marks_the_run_invalid():
    ds = data.load("mnist", n_train=64, n_test=32)
    cfg = training.TrainConfig(epochs=1, target_train_acc=1.0)
    with pytest.warns(RuntimeWarning, match="INVALID"):
        r = diffroar("mnist_mlp", ds, None, method="gradient", ks=(1.0,), repeats=1, trainer=cfg,
                     model_kwargs={"width": 0.02}, cache_dir=False, progress=False)
    assert not r.valid and "original model" in r.settings["invalid_reason"]
    assert r.table["reached_target"].eq(False).all()


_SCRIPT = textwrap.dedent("""
    import json, sys, torch
    torch.set_num_threads(1)
    from saliency_sanity import data, training
    from saliency_sanity.checks.roar import diffroar
    ds = data.load("mnist", n_train=600, n_test=200)
    r = diffroar("mnist_mlp", ds, None, method="gradient", ks=(1.0, 0.5, 0.2), repeats=2,
                 trainer=training.TrainConfig(epochs=3, target_train_acc=None),
                 model_kwargs={"width": 0.05}, run_dir=sys.argv[1], progress=False)
    cols = ["k", "side", "repeat", "seed", "test_acc", "train_acc", "epochs", "cache_key"]
    json.dump({"table": r.table[cols].to_dict(orient="list"),
               "loaded": r.settings["units_loaded"]}, open(sys.argv[2], "w"))
""")


def _run(script: Path, run_dir: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(script), str(run_dir), str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_gives_the_same_table(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(_SCRIPT)
    ref = _run(script, tmp_path / "ref", tmp_path / "ref.json")
    assert ref.wait(timeout=600) == 0, ref.stderr.read().decode()[-2000:]
    run_dir = tmp_path / "killed"
    p = _run(script, run_dir, tmp_path / "killed.json")
    deadline = time.time() + 600
    while len(list((run_dir / "units").glob("*.json"))) < 3 and time.time() < deadline:
        assert p.poll() is None, "finished before it could be killed"
        time.sleep(0.05)
    assert p.poll() is None
    p.send_signal(signal.SIGKILL)
    p.wait()
    done = {f.stem: f.stat().st_mtime_ns for f in (run_dir / "units").glob("*.json")}
    assert 3 <= len(done) < 12
    q = _run(script, run_dir, tmp_path / "killed.json")
    assert q.wait(timeout=600) == 0, q.stderr.read().decode()[-2000:]
    a = json.loads((tmp_path / "ref.json").read_text())
    b = json.loads((tmp_path / "killed.json").read_text())
    assert a["table"] == b["table"]  # identical, bit for bit (floats round-trip through JSON)
    assert set(done) <= set(b["loaded"])  # finished units were not retrained
    for key, mtime in done.items():
        assert (run_dir / "units" / f"{key}.json").stat().st_mtime_ns == mtime


def _cli(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "saliency_sanity", *args], env=env,
                          capture_output=True, text=True, timeout=900)


_CLI_TINY = ["--n-train", "64", "--n-test", "32", "--width", "0.05", "--epochs", "1",
             "--pgd-steps", "1", "--no-progress"]


@pytest.mark.slow
def test_cli_diffroar_writes_a_run_and_exits_3_when_invalid(tmp_path):
    out = tmp_path / "run"
    r = _cli(["diffroar", "--out", str(out), "--ks", "1,0.5", "--repeats", "1",
              "--control-repeats", "2", "--original-epochs", "2", "--target-acc", "1.0",
              *_CLI_TINY])
    assert r.returncode == 3, r.stderr[-2000:]
    assert "INVALID" in r.stderr
    for f in ("results.csv", "diffroar.csv", "run.json", "report.html",
              "figures/diffroar.png", "figures/roar_kar.png"):
        assert (out / f).is_file(), f
    table = pd.read_csv(out / "results.csv")
    assert table["model"].value_counts().to_dict() == {"random": 8, "standard": 4, "robust": 4}
    assert set(table.loc[table["model"] == "random", "repeat"]) == {0, 1}
    runs = json.loads((out / "run.json").read_text())["settings"]["runs"]
    assert runs["standard"]["original_trainer"]["epochs"] == 2
    assert runs["robust"]["original"]["epochs"] <= 2 and runs["random"]["original"] == {}
    assert {r["trainer"]["epochs"] for r in runs.values()} == {1}


@pytest.mark.slow
def test_cli_blockmnist_writes_a_run(tmp_path):
    out = tmp_path / "bm"
    r = _cli(["blockmnist", "--out", str(out), "--n-maps", "8", "--classes", "2",
              "--cache-dir", str(tmp_path / "cache"), *_CLI_TINY])
    assert r.returncode == 0, r.stderr[-2000:]
    for f in ("results.csv", "summary.csv", "run.json", "report.html", "maps.pt",
              "figures/blockmnist_maps.png", "figures/signal_share.png"):
        assert (out / f).is_file(), f
    s = pd.read_csv(out / "summary.csv")
    assert list(s["model"]) == ["standard", "robust"]
    assert s["mass_share_mean"].between(0, 1).all()


@pytest.mark.parametrize(("args", "message"), [
    (["diffroar", "--ks", "1,1.5"], "k must be"),
    (["diffroar", "--ks", "1,half"], "--ks must be"),
    (["blockmnist", "--base", "cifar"], "unknown BlockMNIST base"),
])
def test_cli_bad_input_is_a_clear_error(tmp_path, capsys, args, message):
    from saliency_sanity.cli import main

    assert main([*args, "--out", str(tmp_path / "x"), *_CLI_TINY]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x" / "results.csv").exists()


def test_given_original_model_and_tensor_pairs_leave_the_model_untouched():
    ds = data.load("mnist", n_train=48, n_test=24)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    r = diffroar("mnist_mlp", (ds.x_train, ds.y_train), (ds.x_test, ds.y_test), method="gradient",
                 ks=(0.5,), repeats=1, original=net, model_kwargs={"width": 0.02},
                 trainer=training.TrainConfig(epochs=1, target_train_acc=None),
                 cache_dir=False, progress=False)
    assert net.training and all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert r.settings["original_fingerprint"] == mk.model_fingerprint(net)
    assert r.settings["original"] == {} and len(r.table) == 2
    with pytest.raises(TypeError, match=r"\(x, y\) pairs"):
        diffroar("mnist_mlp", ds.x_train, None, method="gradient", cache_dir=False)


def test_summary_standard_error_and_welch_p_value_against_scipy():
    """diffroar_se against the formula written out, p_value against scipy's Welch t-test;
    sides with equal values give no warning, degenerate cases are NaN."""
    import warnings

    from scipy import stats

    top = np.array([0.91, 0.88, 0.90, 0.86, 0.93])
    bot = np.array([0.62, 0.70, 0.66])
    t = pd.DataFrame({"method": "g", "k": 0.2, "side": ["top"] * 5 + ["bottom"] * 3,
                      "repeat": [0, 1, 2, 3, 4, 0, 1, 2], "test_acc": [*top, *bot]})
    s = summarize(t).iloc[0]
    se = np.sqrt(top.var(ddof=1) / 5 + bot.var(ddof=1) / 3)
    assert s["diffroar_se"] == pytest.approx(se, rel=1e-12)
    assert s["p_value"] == pytest.approx(stats.ttest_ind(top, bot, equal_var=False).pvalue,
                                         rel=1e-9)
    assert (s["n_top"], s["n_bottom"], s["n_pairs"]) == (5, 3, 15)
    assert s["diffroar"] == pytest.approx(top.mean() - bot.mean(), abs=1e-12)
    one = summarize(t[t["repeat"] == 0]).iloc[0]  # one repeat per side: no spread, no test
    assert np.isnan(one["diffroar_se"]) and np.isnan(one["p_value"])
    assert np.isnan(summarize(t.assign(test_acc=0.5)).iloc[0]["p_value"])  # nothing varies
    flat = t.assign(test_acc=np.where(t["side"] == "top", 0.95, t["test_acc"]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one side constant: a valid test, and no warning
        p = summarize(flat).iloc[0]["p_value"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy's own warning on the constant side
        ref = stats.ttest_ind(np.full(5, 0.95), bot, equal_var=False).pvalue
    assert p == pytest.approx(ref, rel=1e-9)


def test_original_trainer_trains_the_original_apart_from_the_retrainings():
    ds = data.load("mnist", n_train=96, n_test=48)
    kw = {**_TINY, "ks": (0.5,), "repeats": 1}
    longer = training.TrainConfig(epochs=3, target_train_acc=None, batch_size=32)
    r = diffroar("mnist_mlp", ds, None, method="gradient", cache_dir=False,
                 original_trainer=longer, **kw)
    assert r.settings["original"]["epochs"] == 3 and r.settings["original_trainer"]["epochs"] == 3
    assert r.table["epochs"].eq(1).all() and r.settings["trainer"]["epochs"] == 1
    # the original trained by hand with those settings ranks the coordinates the same way
    ref = training.train("mnist_mlp", ds, longer, cache_dir=False, progress=False,
                         model_kwargs={"width": 0.02})
    assert r.settings["original_fingerprint"] == mk.model_fingerprint(ref.model)
    same = diffroar("mnist_mlp", ds, None, method="gradient", cache_dir=False, **kw)
    assert same.settings["original"]["epochs"] == 1
    assert same.settings["original_fingerprint"] != r.settings["original_fingerprint"]
    with pytest.raises(TypeError, match="original_trainer must be"):
        diffroar("mnist_mlp", ds, None, method="gradient", cache_dir=False, original_trainer=3,
                 **kw)
    with pytest.raises(ValueError, match="not both"):
        diffroar("mnist_mlp", ds, None, method="gradient", cache_dir=False, original_trainer=longer,
                 original=ref.model, **kw)


def test_random_control_draws_a_map_per_repeat(monkeypatch):
    """Each repeat of the random-map control ranks by its own seeded uniform map (so the repeat
    spread covers the map's randomness); top and bottom of one repeat share it."""
    from saliency_sanity.checks import _retrain, roar
    from saliency_sanity.engine import derive_seed

    ds = data.load("mnist", n_train=40, n_test=20)
    seeds, maps = [], {}
    real = roar.cached_attributions

    def spy(model, x, y, method, *args):
        out = real(model, x, y, method, *args)
        seeds.append(args[-1])
        maps[args[-1]] = out
        return out

    monkeypatch.setattr(roar, "cached_attributions", spy)
    setups = []
    real_unit = roar.run_unit
    monkeypatch.setattr(roar, "run_unit", lambda u, s, d: setups.append(s) or real_unit(u, s, d))
    r = diffroar("mnist_mlp", ds, None, method="random", cache_dir=False, seed=3,
                 **{**_TINY, "ks": (0.5,), "repeats": 3})
    expect = [derive_seed(3, "random-map", split, rep) % 2**31
              for split in ("train", "test") for rep in range(3)]
    assert seeds == expect and len(set(seeds)) == 6 and len(r.table) == 6
    setup = setups[0]
    for unit in plan_units((0.5,), 3, seed=3):
        masked, _ = _retrain.unit_training(unit, setup)
        a = maps[expect[unit.repeat]]  # this repeat's training map, drawn independently here
        torch.testing.assert_close(a, mk.compute_attributions(
            None, ds.x_train, ds.y_train, "random", seed=expect[unit.repeat]))
        keep = mk.keep_mask(a, 0.5, unit.side)
        assert torch.equal(masked.x_train[keep], ds.x_train[keep])
        filled = masked.x_train[~keep]
        assert (filled == filled[0]).all()
        assert float(filled[0]) == pytest.approx(float(ds.x_train.double().mean()), abs=1e-6)
