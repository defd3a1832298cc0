"""Resumable runs: a run killed at any point continues where it stopped, with the same table."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import zoo
from interrupt import kill_midway

from saliency_sanity import methods, model_randomization_test
from saliency_sanity.checks import CheckResult

HERE = Path(__file__).parent


class SlowCNN(zoo.CNN):
    """The zoo CNN, slowed down so a run can be killed part-way through."""

    def forward(self, x):
        time.sleep(0.01)
        return super().forward(x)


def slow_factory():
    model, _ = zoo.make("cnn")
    slow = SlowCNN()
    slow.load_state_dict(model.state_dict())
    return slow.eval()


KW = dict(methods=["gradient", "integrated_gradients"], scores=["spearman_abs", "ssim"],
          controls=["random_gaussian"], batch_size=1, progress=False)


def test_crash_then_resume_equals_uninterrupted(tmp_path):
    model, x = zoo.make("cnn")
    full = model_randomization_test(model, x, **KW)

    calls = {"n": 0}
    grad = methods.get("gradient")

    def crashing(m, xb, t):
        calls["n"] += 1
        if calls["n"] == 20:  # 9 calls per batch (5 stages + 4 null twins): in the third batch
            raise RuntimeError("simulated crash")
        return grad(m, xb, t)

    crashing.__name__ = "gradient_like"
    kw = dict(KW, methods={"gradient": crashing, "integrated_gradients": "integrated_gradients"})
    with pytest.raises(RuntimeError, match="simulated crash"):
        model_randomization_test(model, x, run_dir=tmp_path / "run", **kw)
    saved = sorted(p.name for p in (tmp_path / "run" / "partial").glob("batch-*.npz"))
    assert saved == ["batch-000000.npz", "batch-000001.npz"]

    # the rerun computes only what is missing: a method that fails in batches 0-1 is not called
    done_calls = {"n": 0}

    def counting(m, xb, t):
        done_calls["n"] += 1
        return grad(m, xb, t)

    counting.__name__ = "gradient_like"
    kw2 = dict(KW, methods={"gradient": counting, "integrated_gradients": "integrated_gradients"})
    resumed = model_randomization_test(model, x, run_dir=tmp_path / "run", **kw2)
    n_stages = len(resumed.stages)
    assert done_calls["n"] == 2 * (2 * n_stages - 1)  # 2 batches left x (stages + null twins)
    pd.testing.assert_frame_equal(resumed.table, full.table)
    pd.testing.assert_frame_equal(resumed.null, full.null)
    assert not (tmp_path / "run" / "partial").exists()
    back = CheckResult.load(tmp_path / "run")
    np.testing.assert_array_equal(back.table["value"].to_numpy(), full.table["value"].to_numpy())


def test_finished_run_is_loaded_not_recomputed(tmp_path):
    model, x = zoo.make("cnn")
    grad = methods.get("gradient")

    def works(m, xb, t):
        return grad(m, xb, t)

    def never(m, xb, t):
        raise AssertionError("recomputed")

    works.__name__ = never.__name__ = "gradient_like"  # same settings, same fingerprint
    first = model_randomization_test(model, x, run_dir=tmp_path / "r",
                                     **dict(KW, methods={"g": works}))
    again = model_randomization_test(model, x, run_dir=tmp_path / "r",
                                     **dict(KW, methods={"g": never}))
    pd.testing.assert_frame_equal(again.table, first.table)


def test_other_settings_are_refused_and_nothing_is_touched(tmp_path):
    model, x = zoo.make("cnn")
    model_randomization_test(model, x, run_dir=tmp_path / "r", **KW)
    before = {p: p.read_bytes() for p in (tmp_path / "r").rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match="other settings"):
        model_randomization_test(model, x, run_dir=tmp_path / "r", **dict(KW, seed=5))
    other, _ = zoo.make("cnn", seed=3)
    with pytest.raises(ValueError, match="other settings"):
        model_randomization_test(other, x, run_dir=tmp_path / "r", **KW)
    with pytest.raises(ValueError, match="other settings"):
        model_randomization_test(model, x + 1, run_dir=tmp_path / "r", **KW)
    after = {p: p.read_bytes() for p in (tmp_path / "r").rglob("*") if p.is_file()}
    assert after == before


def _cli(out: Path, npz: Path) -> list[str]:
    return [sys.executable, "-m", "saliency_sanity.cli", "model-randomization", "--model",
            "test_resume:slow_factory", "--data", str(npz), "--methods",
            "gradient,integrated_gradients", "--scores", "spearman_abs,ssim", "--batch-size", "1",
            "--out", str(out), "--no-progress"]


def test_sigkill_and_rerun_same_command(tmp_path):
    _, x = zoo.make("cnn")
    x = torch.cat([x, x.flip(0)])  # 8 samples, 8 batches
    npz = tmp_path / "d.npz"
    np.savez(npz, x=x.numpy())
    env = dict(os.environ, PYTHONPATH=f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")

    ref = tmp_path / "ref"
    subprocess.run(_cli(ref, npz), env=env, check=True, capture_output=True, timeout=300)

    out = tmp_path / "killed"
    kill_midway(_cli(out, npz), env, out, units=8)

    subprocess.run(_cli(out, npz), env=env, check=True, capture_output=True, timeout=300)
    a = pd.read_csv(ref / "results.csv")
    b = pd.read_csv(out / "results.csv")
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(pd.read_csv(ref / "null.csv"), pd.read_csv(out / "null.csv"))
