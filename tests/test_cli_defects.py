"""Command-line defects of issue 13, one test each: ``python -m``, --device on a CPU-only build,
model files with sibling modules and failing factories, corrupt images, plain-pickle weights,
--n-samples beyond the data, Ctrl-C, warnings during progress bars, and --normalize."""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import zoo
from skimage import io as skio

import saliency_sanity
from saliency_sanity import cli
from saliency_sanity.cli import main
from saliency_sanity.io_inputs import InputError, Normalized, parse_normalize

FAST = ["--methods", "gradient", "--scores", "spearman_abs", "--controls", "none",
        "--no-progress"]
SRC = str(Path(saliency_sanity.__file__).resolve().parents[1])


def cnn_factory():
    return zoo.make("cnn")[0]


def failing_factory():
    raise RuntimeError("the weights server is unreachable")


def run(args, capsys):
    rc = main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def mr(out, data, model="test_cli_defects:cnn_factory", extra=()):
    return ["model-randomization", "--model", model, "--data", data, "--out", out, *FAST, *extra]


def assert_clear_error(rc, err, *fragments):
    assert rc == 2, err
    assert err.startswith("saliency-sanity: error: "), err
    assert "Traceback" not in err and "AssertionError" not in err
    for f in fragments:
        assert f in err, f"{f!r} not in {err!r}"


# ------------------------------------------------------------------------------ python -m
def test_python_dash_m_works_like_the_console_script():
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.run([sys.executable, "-m", "saliency_sanity", "list"], capture_output=True,
                       text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "methods:" in p.stdout and "guided_backprop" in p.stdout
    p = subprocess.run([sys.executable, "-m", "saliency_sanity", "report", "/no/such/run"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 2 and p.stderr.startswith("saliency-sanity: error: ")


# ------------------------------------------------------------------------------ --device
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda_is_a_clear_error(tmp_path, capsys, npz):
    out = tmp_path / "out"
    rc, _, err = run(mr(out, npz, extra=["--device", "cuda"]), capsys)
    assert_clear_error(rc, err, "--device cuda", "--device cpu")
    assert not out.exists()
    rc, _, err = run(mr(out, npz, extra=["--device", "gpu0"]), capsys)
    assert_clear_error(rc, err, "is not a device name")


# ------------------------------------------------------------------------------ model files
def test_model_file_importing_a_sibling_module(tmp_path, capsys, npz):
    pkg = tmp_path / "mymodels"
    pkg.mkdir()
    # a sibling module of the model file (zoo is importable: the tests folder is on sys.path)
    (pkg / "my_layers.py").write_text("import zoo\n\ndef make():\n    return zoo.make('cnn')[0]\n")
    (pkg / "net.py").write_text("from my_layers import make\n\ndef factory():\n    return make()\n")
    (pkg / "broken.py").write_text("def factory():\n    raise RuntimeError('no GPU, no model')\n")
    before = list(sys.path)
    out = tmp_path / "run"
    # also: --n-samples beyond the 4 inputs of the data set warns with the number used
    rc, _, err = run(mr(out, npz, model=f"{pkg / 'net.py'}:factory",
                        extra=["--n-samples", "10"]), capsys)
    assert rc == 0, err
    assert "saliency-sanity: warning: --n-samples 10 is more than the 4 inputs" in err
    assert "using all 4" in err
    assert json.loads((out / "run.json").read_text())["settings"]["n_samples"] == 4
    assert str(pkg) not in sys.path[: len(sys.path) - len(before) + 1]  # folder removed again
    rc, _, err = run(mr(tmp_path / "r2", npz, model=f"{pkg / 'broken.py'}:factory"), capsys)
    assert_clear_error(rc, err, "broken.py:factory() failed", "RuntimeError: no GPU, no model")


def test_factory_that_raises(tmp_path, capsys, npz):
    rc, _, err = run(mr(tmp_path / "out", npz, model="test_cli_defects:failing_factory"), capsys)
    assert_clear_error(rc, err, "the weights server is unreachable", "failing_factory")
    assert err.count("\n") == 1


# ------------------------------------------------------------------------------ data files
def test_corrupt_image_names_the_file(tmp_path, capsys):
    root = tmp_path / "imgs"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        rs = np.random.RandomState(0)
        skio.imsave(root / c / "ok.png", (rs.rand(16, 16) * 255).astype(np.uint8))
    (root / "b" / "broken.png").write_bytes(b"\x89PNG not really" * 20)
    rc, _, err = run(mr(tmp_path / "out", root), capsys)
    assert_clear_error(rc, err, "broken.png is not a readable image", "Remove or replace")
    assert "pip install" not in err and "plugin" not in err
    assert err.count("\n") == 1


def test_plain_pickle_weights_one_clean_message(tmp_path, capsys, npz):
    w = tmp_path / "w.pkl"
    with open(w, "wb") as f:
        pickle.dump(zoo.make("cnn", seed=5)[0].state_dict(), f)
    rc, _, err = run(mr(tmp_path / "out", npz, extra=["--weights", w]), capsys)
    assert_clear_error(rc, err, "plain Python pickle", "--unsafe-load",
                       "torch.save(model.state_dict(), path)")
    assert err.count("\n") == 1 and "UserWarning" not in err  # no torch warning first
    assert err.rstrip().endswith("torch.save(model.state_dict(), path)")  # not cut mid-word
    with pytest.raises(InputError):  # also from the API
        saliency_sanity.io_inputs.load_weights(w)
    state = saliency_sanity.io_inputs.load_weights(w, unsafe_load=True)
    ref = zoo.make("cnn", seed=5)[0].state_dict()
    assert all(torch.equal(state[k], ref[k]) for k in ref)


def test_corrupt_weights_message_is_not_cut_mid_word(tmp_path, capsys, npz):
    w = tmp_path / "w.pt"
    torch.save(zoo.make("cnn")[0].state_dict(), w, _use_new_zipfile_serialization=False)
    data = w.read_bytes()
    w.write_bytes(data[: len(data) // 3])
    rc, _, err = run(mr(tmp_path / "out", npz, extra=["--weights", w]), capsys)
    assert_clear_error(rc, err, "not a readable PyTorch checkpoint")
    assert err.count("\n") == 1
    # every parenthesis opened in the message is closed: nothing was sliced off mid-text
    assert err.count("(") == err.count(")")


# ------------------------------------------------------------------------------ Ctrl-C
def test_ctrl_c_exits_130_with_one_line(tmp_path, capsys, npz, monkeypatch):
    import saliency_sanity.checks as checks

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(checks, "model_randomization_test", interrupted)
    out = tmp_path / "out"
    rc, _, err = run(mr(out, npz), capsys)
    assert rc == 130
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "interrupted" in err and "run the same command again to continue" in err
    assert str(out) in err


# ------------------------------------------------------------------------------ warnings
def test_warnings_are_written_through_tqdm_on_their_own_line(monkeypatch):
    from tqdm import tqdm

    buf = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buf)
    shown_before = warnings.showwarning
    with cli.warnings_through_tqdm():
        bar = tqdm(total=4, file=sys.stderr, desc="stage", mininterval=0)
        bar.update(1)
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("2 of 16 samples are constant", UserWarning, stacklevel=1)
        bar.update(1)
        bar.close()
    assert warnings.showwarning is shown_before
    pieces = [p.strip() for p in buf.getvalue().replace("\r", "\n").split("\n")]
    assert "saliency-sanity: warning: 2 of 16 samples are constant (UserWarning)" in pieces
    assert not any("stage" in p and "warning" in p for p in pieces)  # not glued to the bar


# ------------------------------------------------------------------------------ --normalize
def test_parse_normalize():
    assert parse_normalize("0.1307,0.3081") == ([0.1307], [0.3081])
    assert parse_normalize("0.485,0.456,0.406/0.229,0.224,0.225") == (
        [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    for bad in ("0.5", "1,2,3", "0.5,0.4/0.2", "a,b", "0.5,0"):
        with pytest.raises(InputError, match="--normalize"):
            parse_normalize(bad)


def test_normalized_model_hand_derived_gradient():
    """d/dx f((x - m) / s) = f'((x - m) / s) / s, per channel."""
    model, x = zoo.make("resnet")  # 3 channels
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    net = Normalized(model, mean, std).eval()
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(net(x), model((x - m) / s))
    xa = x.clone().requires_grad_(True)
    (ga,) = torch.autograd.grad(net(xa)[:, 1].sum(), xa)
    xn = ((x - m) / s).requires_grad_(True)
    (gn,) = torch.autograd.grad(model(xn)[:, 1].sum(), xn)
    torch.testing.assert_close(ga, gn / s)
    assert sorted(net.state_dict())[:2] == ["mean", "model.bn.bias"]
    with pytest.raises(ValueError, match="per-channel"):
        Normalized(zoo.make("cnn")[0], mean, std)(zoo.make("cnn")[1])


def test_normalize_option_runs_and_is_recorded(tmp_path, capsys, npz):
    out = tmp_path / "run"
    rc, _, err = run(mr(out, npz, extra=["--normalize", "0.1307,0.3081",
                                         "--group-by", "children"]), capsys)
    assert rc == 0, err
    s = json.loads((out / "run.json").read_text())["settings"]
    assert s["model"]["normalize"] == "0.1307,0.3081"
    assert [b["name"] for b in s["blocks"]] == ["model.conv1", "model.conv2", "model.fc1",
                                                "model.fc2"]
    rc, _, err = run(mr(tmp_path / "r2", npz, extra=["--normalize", "0.5,0.5,0.5/0.2,0.2,0.2"]),
                     capsys)
    assert_clear_error(rc, err, "3 per-channel values")
