"""A catalogue of bad inputs: each gives a clear error (what is wrong, what to do) and leaves no
partial files behind. CLI cases go through ``saliency_sanity.cli.main`` (exit status 2,
``saliency-sanity: error: ...`` on stderr); API cases through the Python functions."""

from __future__ import annotations

import errno
import json
import os

import numpy as np
import pandas as pd
import pytest
import torch
import zoo
from torch import nn

from saliency_sanity import model_randomization_test
from saliency_sanity.checks import COLUMNS, CheckResult
from saliency_sanity.cli import main
from saliency_sanity.report import write_run

FAST = ["--methods", "gradient", "--scores", "spearman_abs", "--controls", "none",
        "--no-progress"]


# ---------------------------------------------------------------------------------- factories
def cnn_factory():
    return zoo.make("cnn")[0]


def resnet_factory():
    return zoo.make("resnet")[0]


class _Unreached(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(256, 10)
        self.unused = nn.Linear(10, 10)  # never called in forward

    def forward(self, x):
        return self.fc(x.flatten(1))


def unreached_factory():
    return _Unreached()


class _NotLogits(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x):
        return self.conv(x)  # a feature map, not (B, classes)


def not_logits_factory():
    return _NotLogits()


# ---------------------------------------------------------------------------------- helpers
def _files(d):
    return sorted(p.name for p in d.rglob("*")) if d.exists() else []


def run_cli(args, capsys):
    rc = main([str(a) for a in args])
    err = capsys.readouterr().err
    return rc, err


def assert_clear_error(rc, err, *fragments):
    assert rc == 2, err
    assert err.startswith("saliency-sanity: error: "), err
    assert "Traceback" not in err
    for f in fragments:
        assert f in err, f"{f!r} not in {err!r}"


def mr_args(out, data, model="test_bad_inputs:cnn_factory", extra=()):
    return ["model-randomization", "--model", model, "--data", data, "--out", out, *FAST,
            *extra]


def npz_with(tmp_path, name="bad.npz", **arrays):
    p = tmp_path / name
    np.savez(p, **arrays)
    return p


# ------------------------------------------------------------------------- CLI: data problems
CLI_DATA_CASES = {
    "x_1d": (dict(x=np.zeros(4, np.float32)), ["'x' must be (N, C, H, W)"]),
    "x_strings": (dict(x=np.array([["a", "b"]] * 4)), ["'x' must be numeric"]),
    "x_nan": (dict(x=np.full((4, 1, 16, 16), np.nan, np.float32)), ["NaN", "clean"]),
    "x_empty": (dict(x=np.zeros((0, 1, 16, 16), np.float32)), ["holds no inputs"]),
    "no_x": (dict(inputs=np.zeros((4, 1, 16, 16), np.float32)), ["has no array 'x'"]),
    "y_float": (dict(x=np.zeros((4, 1, 16, 16), np.float32), y=np.zeros(4)),
                ["'y' must be 4 integer labels"]),
    "wrong_channels": (dict(x=np.zeros((4, 3, 16, 16), np.float32)),
                       ["the model fails on inputs of shape (3, 16, 16)", "--channels"]),
}


@pytest.mark.parametrize("case", list(CLI_DATA_CASES))
def test_cli_bad_data(tmp_path, capsys, case):
    arrays, fragments = CLI_DATA_CASES[case]
    data = npz_with(tmp_path, **arrays)
    out = tmp_path / "out"
    rc, err = run_cli(mr_args(out, data), capsys)
    assert_clear_error(rc, err, *fragments)
    assert _files(out) == []


def test_cli_labels_out_of_range(tmp_path, capsys):
    x = zoo.make("cnn")[1].numpy()
    data = npz_with(tmp_path, x=x, y=np.array([0, 1, 2, 42]))
    out = tmp_path / "out"
    rc, err = run_cli(mr_args(out, data, extra=["--target-mode", "fixed"]), capsys)
    assert_clear_error(rc, err, "labels out of range", "10 classes", "[42]",
                       "--target-mode predicted")
    assert _files(out) == []


def test_cli_zero_samples(tmp_path, capsys, npz):
    out = tmp_path / "out"
    rc, err = run_cli(mr_args(out, npz, extra=["--n-samples", "0"]), capsys)
    assert_clear_error(rc, err, "--n-samples must be >= 1")
    assert _files(out) == []


def test_cli_missing_data(tmp_path, capsys):
    out = tmp_path / "out"
    rc, err = run_cli(mr_args(out, tmp_path / "nowhere.npz"), capsys)
    assert_clear_error(rc, err, "not a built-in data set", "an .npz file")
    assert _files(out) == []


# ---------------------------------------------------------------------- CLI: names and models
@pytest.mark.parametrize("flag, value, fragments", [
    ("--methods", "gradiant", ["unknown method 'gradiant'", "known methods:", "gradient"]),
    ("--scores", "spearmen", ["unknown score 'spearmen'", "known scores:", "spearman_abs"]),
])
def test_cli_unknown_names(tmp_path, capsys, npz, flag, value, fragments):
    out = tmp_path / "out"
    args = mr_args(out, npz)
    args[args.index(flag) + 1] = value
    rc, err = run_cli(args, capsys)
    assert_clear_error(rc, err, *fragments)
    assert _files(out) == []


@pytest.mark.parametrize("model, fragments", [
    ("torch.nn:Flatten", ["has no parameters", "nothing to randomize"]),
    ("test_bad_inputs:unreached_factory", ["never reached", "unused"]),
    ("test_bad_inputs:not_logits_factory", ["must return logits of shape (batch, classes)"]),
    ("no_such_module_xyz:f", ["cannot import", "PYTHONPATH"]),
])
def test_cli_bad_models(tmp_path, capsys, npz, model, fragments):
    out = tmp_path / "out"
    rc, err = run_cli(mr_args(out, npz, model=model), capsys)
    assert_clear_error(rc, err, *fragments)
    assert _files(out) == []


def test_cli_bad_model_kwargs(tmp_path, capsys, npz):
    out = tmp_path / "out"
    rc, err = run_cli(mr_args(out, npz, extra=["--model-kwargs", "{oops"]), capsys)
    assert_clear_error(rc, err, "--model-kwargs must be a JSON object")
    assert _files(out) == []


# ---------------------------------------------------------------------------- CLI: weights
def _weights_case(tmp_path, weights, case):
    if case == "corrupt":
        p = tmp_path / "corrupt.pt"
        p.write_bytes(os.urandom(2048))
    elif case == "truncated":
        data = weights.read_bytes()
        p = tmp_path / "trunc.pt"
        p.write_bytes(data[: len(data) // 2])
    elif case == "pickled":
        p = tmp_path / "pickled.pt"
        torch.save({"state_dict": zoo.make("cnn")[0].state_dict(), "note": object()}, p)
    elif case == "other_arch":
        p = tmp_path / "resnet.pt"
        torch.save(zoo.make("resnet")[0].state_dict(), p)
    else:
        p = tmp_path / "missing.pt"
    return p


@pytest.mark.parametrize("case, fragments", [
    ("corrupt", ["not a readable PyTorch checkpoint", "corrupt or truncated"]),
    ("truncated", ["not a readable PyTorch checkpoint", "corrupt or truncated"]),
    ("pickled", ["weights_only loading refuses", "--unsafe-load", "state_dict()"]),
    ("other_arch", ["do not fit"]),
    ("missing", ["does not exist"]),
])
def test_cli_bad_weights(tmp_path, capsys, npz, weights, case, fragments):
    w = _weights_case(tmp_path, weights, case)
    out = tmp_path / "out"
    rc, err = run_cli(mr_args(out, npz, extra=["--weights", w]), capsys)
    assert_clear_error(rc, err, *fragments)
    assert _files(out) == []


# ------------------------------------------------------------------------ CLI: output problems
def test_cli_out_under_a_file(tmp_path, capsys, npz):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    rc, err = run_cli(mr_args(blocker / "run", npz), capsys)
    assert_clear_error(rc, err, "cannot create the output directory", "is a file",
                       "choose another --out")
    assert blocker.read_text() == "x"


def test_cli_out_is_a_file(tmp_path, capsys, npz):
    target = tmp_path / "run"
    target.write_text("keep me")
    rc, err = run_cli(mr_args(target, npz), capsys)
    assert_clear_error(rc, err, "exists and is not a folder")
    assert target.read_text() == "keep me"


def test_cli_out_not_writable(tmp_path, capsys, npz, monkeypatch):
    out = tmp_path / "ro"
    out.mkdir()
    if os.geteuid() != 0:
        out.chmod(0o500)
    else:  # root writes anywhere: simulate the permission check's answer
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, m, *a, **k: False
                            if os.path.abspath(p) == str(out) else real(p, m, *a, **k))
    try:
        rc, err = run_cli(mr_args(out, npz), capsys)
    finally:
        out.chmod(0o700)
    assert_clear_error(rc, err, "not writable", "choose another --out")
    assert _files(out) == []


@pytest.mark.parametrize("where", ["to_csv", "savez", "figure", "report"])
def test_cli_full_disk_leaves_no_incomplete_file(tmp_path, capsys, npz, monkeypatch, where):
    """A full disk at any write: a clear error, no temporary or half-written file anywhere, and
    whatever stays is complete (finished batches, or a finished result), so rerunning the same
    command continues and ends with the table of a clean run."""
    def enospc(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    clean = tmp_path / "clean"
    assert run_cli(mr_args(clean, npz), capsys)[0] == 0
    with monkeypatch.context() as mp:
        if where == "to_csv":
            mp.setattr(pd.DataFrame, "to_csv", enospc)
        elif where == "savez":
            mp.setattr(np, "savez_compressed", enospc)
        elif where == "figure":
            import matplotlib.figure

            mp.setattr(matplotlib.figure.Figure, "savefig", enospc)
        else:
            from saliency_sanity.report import html

            mp.setattr(html, "_write_shareable", enospc)
        out = tmp_path / "out"
        rc, err = run_cli(mr_args(out, npz), capsys)
    assert_clear_error(rc, err, "no space left on the device", "no incomplete file",
                       "rerun the same command")
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert not [p for p in leftovers if p.name.endswith(".tmp") or p.name.startswith(".")]
    for p in leftovers:
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:  # complete, readable
                assert z.files
        elif p.suffix == ".json":
            json.loads(p.read_text())
    if (out / "results.csv").exists():  # only ever together with run.json: a whole result
        assert (out / "run.json").exists()
        CheckResult.load(out)
    assert run_cli(mr_args(out, npz), capsys)[0] == 0
    pd.testing.assert_frame_equal(pd.read_csv(out / "results.csv"),
                                  pd.read_csv(clean / "results.csv"))
    assert (out / "report.html").exists() and not (out / "partial").exists()


def test_full_disk_keeps_an_existing_run_intact(tmp_path, monkeypatch):
    """A rerun into an existing run directory that fails keeps the old files unchanged."""
    model, x = zoo.make("cnn")
    res = model_randomization_test(model, x, methods=["gradient"], scores=["spearman_abs"],
                                   controls=False, progress=False)
    out = write_run(res, tmp_path / "run", figures=False)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    def enospc(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", enospc)
    with pytest.raises(OSError, match="No space"):
        write_run(res, out, figures=False)
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert after == before


# ------------------------------------------------------------------------------ CLI: report
def test_cli_report_not_a_run_dir(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc, err = run_cli(["report", tmp_path / "empty"], capsys)
    assert_clear_error(rc, err, "is not a saliency-sanity run directory", "results.csv")
    assert _files(tmp_path / "empty") == []
    rc, err = run_cli(["report", tmp_path / "nope"], capsys)
    assert_clear_error(rc, err, "does not exist", "results.csv and run.json")


def test_cli_report_corrupt_results(tmp_path, capsys):
    d = tmp_path / "run"
    d.mkdir()
    (d / "results.csv").write_text("a,b\n1,2\n")
    (d / "run.json").write_text('{"check": "model_randomization"}')
    rc, err = run_cli(["report", d], capsys)
    assert_clear_error(rc, err, "has columns", "expected")
    assert not (d / "report.html").exists()
    assert sorted(p.name for p in d.iterdir()) == ["results.csv", "run.json"]


# ------------------------------------------------------------------------------ API cases
@pytest.fixture(scope="module")
def cnn():
    return zoo.make("cnn")


KW = dict(methods=["gradient"], scores=["spearman_abs"], controls=False, progress=False)


@pytest.mark.parametrize("x, exc, fragment", [
    (torch.zeros(4, 16, 16), ValueError, "x must have shape (B, C, H, W)"),
    (torch.zeros(4, 1, 16, 16, dtype=torch.int64), TypeError, "convert with x.float()"),
    (torch.full((4, 1, 16, 16), float("nan")), ValueError, "NaN or inf"),
    (torch.zeros(0, 1, 16, 16), ValueError, "pass at least one input"),
])
def test_api_bad_inputs(cnn, x, exc, fragment):
    with pytest.raises(exc) as info:
        model_randomization_test(cnn[0], x, **KW)
    assert fragment in str(info.value)


def test_api_target_problems(cnn):
    model, x = cnn
    with pytest.raises(ValueError, match="target out of range for a model with 10 classes"):
        model_randomization_test(model, x, target=[0, 1, 2, 99], **KW)
    with pytest.raises(ValueError, match="1-D tensor of 4 class indices"):
        model_randomization_test(model, x, target=[0, 1], **KW)
    with pytest.raises(TypeError, match="integer class indices"):
        model_randomization_test(model, x, target=torch.zeros(4), **KW)


def test_api_unknown_names(cnn):
    model, x = cnn
    with pytest.raises(KeyError, match="known methods: .*gradient"):
        model_randomization_test(model, x, **{**KW, "methods": ["gradiant"]})
    with pytest.raises(KeyError, match="known scores: .*spearman_abs"):
        model_randomization_test(model, x, **{**KW, "scores": ["spearmen"]})


def test_api_unreached_layers(cnn):
    x = cnn[1]
    with pytest.raises(ValueError, match="never reached the parameters of these modules"):
        model_randomization_test(_Unreached(), x, **KW)


def test_api_model_without_parameters(cnn):
    with pytest.raises((ValueError, TypeError), match="no parameters"):
        model_randomization_test(nn.Flatten(), cnn[1], **KW)


def test_api_write_run_full_disk_leaves_nothing(tmp_path, monkeypatch, cnn):
    res = CheckResult(check="model_randomization", table=pd.DataFrame(
        [["g", 1, "fc", 0, "spearman_abs", 0.1]], columns=COLUMNS))

    def enospc(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", enospc)
    with pytest.raises(OSError):
        write_run(res, tmp_path / "run")
    assert list(tmp_path.iterdir()) == []
