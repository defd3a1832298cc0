"""The command line: run directories, figures, and clear errors that leave no files behind."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
import zoo

from saliency_sanity.checks import COLUMNS
from saliency_sanity.cli import main


def cnn_factory():
    return zoo.make("cnn")[0]


def test_model_randomization_run_directory(tmp_path, npz, weights, capsys):
    out = tmp_path / "run"
    rc = main(["model-randomization", "--model", "test_cli:cnn_factory", "--weights",
               str(weights), "--data", str(npz), "--methods", "gradient,guided_backprop",
               "--scores", "spearman_abs,ssim", "--out", str(out), "--no-progress"])
    assert rc == 0
    table = pd.read_csv(out / "results.csv")
    assert list(table.columns) == COLUMNS
    run = json.loads((out / "run.json").read_text())
    assert run["settings"]["command"].startswith("saliency-sanity model-randomization")
    assert [b["name"] for b in run["settings"]["blocks"]] == ["conv1", "conv2", "fc1", "fc2"]
    zoo.assert_png(out / "figures" / "cascading_grid.png")
    zoo.assert_png(out / "figures" / "similarity_ssim.png")
    assert set(table["method"]) == {"gradient", "guided_backprop", "edge_sobel",
                                    "random_gaussian", "random_uniform"}
    assert set(table["metric"]) == {"spearman_abs", "ssim"}
    assert table["value"].between(-1, 1).all()
    assert "run directory" in capsys.readouterr().out


def test_torchscript_model(tmp_path, npz):
    model, x = zoo.make("cnn")
    ts = tmp_path / "m.pt"
    torch.jit.trace(model, x).save(str(ts))
    rc = main(["model-randomization", "--model", str(ts), "--data", str(npz), "--methods",
               "gradient", "--scores", "spearman", "--controls", "none", "--out",
               str(tmp_path / "r"), "--no-progress"])
    assert rc == 0
    assert len(pd.read_csv(tmp_path / "r" / "results.csv")) == 4 * 4


@pytest.mark.parametrize("case, message", [
    ("pickled", "--unsafe-load"),
    ("truncated", "corrupt or truncated"),
    ("missing", "does not exist"),
    ("bad_module", "cannot import"),
    ("bad_method", "unknown method"),
])
def test_errors_are_clear_and_leave_no_files(tmp_path, npz, weights, capsys, case, message):
    model_spec = "test_cli:cnn_factory"
    w = str(weights)
    methods_arg = "gradient"
    if case == "pickled":
        w = str(tmp_path / "pickled.pt")
        torch.save({"state_dict": zoo.make("cnn")[0].state_dict(), "note": object()}, w)
    elif case == "truncated":
        data = weights.read_bytes()
        w = str(tmp_path / "trunc.pt")
        (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    elif case == "missing":
        w = str(tmp_path / "nope.pt")
    elif case == "bad_module":
        model_spec = "no_such_module_xyz:f"
    elif case == "bad_method":
        methods_arg = "gradiant"
    out = tmp_path / "out"
    rc = main(["model-randomization", "--model", model_spec, "--weights", w, "--data", str(npz),
               "--methods", methods_arg, "--out", str(out), "--no-progress"])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_list(capsys):
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    assert "guided_backprop" in text and "spearman_abs" in text and "cascading" in text


def test_torchscript_refuses_hook_based_methods(tmp_path, npz):
    model, x = zoo.make("cnn")
    ts = tmp_path / "m.pt"
    torch.jit.trace(model, x).save(str(ts))
    rc = main(["model-randomization", "--model", str(ts), "--data", str(npz), "--methods",
               "guided_backprop", "--out", str(tmp_path / "r"), "--no-progress"])
    assert rc == 2


def test_run_files_have_ordinary_permissions(tmp_path, npz):
    import os
    import stat

    out = tmp_path / "perm"
    assert main(["model-randomization", "--model", "test_cli:cnn_factory", "--data", str(npz),
                 "--methods", "gradient", "--scores", "spearman", "--out", str(out),
                 "--no-progress"]) == 0
    mask = os.umask(0)
    os.umask(mask)
    for f in ("results.csv", "run.json", "report.html"):
        assert stat.S_IMODE((out / f).stat().st_mode) == 0o666 & ~mask, f
