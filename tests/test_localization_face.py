"""The localization check's face: figures, the report page, the command line and its errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import zoo

from saliency_sanity import localization_test
from saliency_sanity.cli import main
from saliency_sanity.grids import GridSet
from saliency_sanity.models import MnistCNN
from saliency_sanity.report import write_run

pytestmark = pytest.mark.usefixtures("one_thread")


def small_cnn():
    return MnistCNN(width=0.25, seed=0)


def _grids(count: int = 4) -> GridSet:
    g = torch.Generator().manual_seed(0)
    labels = torch.stack([torch.randperm(10, generator=g)[:4] for _ in range(count)])
    return GridSet(torch.rand(count, 1, 56, 56, generator=g), labels,
                   torch.zeros(count, 4, dtype=torch.long))


def test_write_run_figures_and_report(tmp_path):
    r = localization_test(small_cnn().eval(), _grids(), methods=["gradient", "gradcam"],
                          settings=["difull"], layers=["input", "final"], progress=False,
                          controls=False)
    out = write_run(r, tmp_path / "run")
    for name in ("boxes_localization", "aggatt_difull"):
        zoo.assert_png(out / "figures" / f"{name}.png")
    page = (out / "report.html").read_text()
    assert "provably wrong" in page
    # Grad-CAM on the input weights every cell's pixels with the head's channel weights
    assert "which scores 0): gradcam.</p>" in page
    assert page.count("<img") == 2 and "Chance is 0.250" in page


def test_cli_builds_grids_and_reuses_them(tmp_path, capsys):
    # an "oracle" data set: class c images are a bright c-th stripe, a model that reads them
    x = torch.zeros(40, 1, 28, 28)
    y = torch.arange(40) % 10
    for i in range(40):
        x[i, 0, :, int(y[i]) * 2] = 1.0
    np.savez(tmp_path / "d.npz", x=x.numpy(), y=y.numpy())
    out = tmp_path / "run"
    rc = main(["localization", "--model", "test_localization_face:stripe_model", "--data",
               str(tmp_path / "d.npz"), "--count", "4", "--settings", "difull",
               "--layers", "input,final", "--methods", "gradient,gradient_x_input",
               "--smoothing", "2", "--out", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    t = pd.read_csv(out / "results.csv")
    assert list(t.columns) == ["method", "setting", "layer", "sample", "head", "metric", "value"]
    run = json.loads((out / "run.json").read_text())
    assert run["settings"]["smoothing"] == {"sigma": 2.0, "kernel_size": 13}
    assert run["settings"]["command"].startswith("saliency-sanity localization")
    d = t[(t.setting == "difull") & (t.layer == "input") & (t.metric == "localization")]
    assert (d["value"] == 1.0).all()
    out2 = tmp_path / "run2"
    rc = main(["localization", "--model", "test_localization_face:stripe_model", "--grids",
               str(out / "grids.npz"), "--settings", "difull", "--layers", "input",
               "--methods", "gradient", "--out", str(out2), "--no-progress"])
    assert rc == 0
    t2 = pd.read_csv(out2 / "results.csv")
    pd.testing.assert_frame_equal(t2.reset_index(drop=True),
                                  d[d.method == "gradient"].reset_index(drop=True))


def stripe_model():
    """Reads the stripe: conv features, global pool, linear (confident on stripe images)."""
    from torch import nn

    net = nn.Sequential(nn.Conv2d(1, 10, (1, 28), bias=False), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(10, 10))
    with torch.no_grad():
        w = torch.zeros(10, 1, 1, 28)
        for c in range(10):
            w[c, 0, 0, 2 * c] = 1.0
        net[0].weight.copy_(w)
        net[4].weight.copy_(torch.eye(10) * 50)
        net[4].bias.zero_()
    return net


@pytest.mark.parametrize("extra, message", [
    (["--grid", "1"], "n (cells per side) must be an integer >= 2"),
    (["--count", "50"], "too few confident images"),
    (["--layers", "input,conv9"], "no layer named 'conv9'"),
    (["--layers", "4"], "'4' is not spatial"),
    (["--settings", "gridpg,nope"], "unknown settings"),
    (["--smoothing", "wide"], "--smoothing must be"),
])
def test_cli_bad_inputs_clear_errors_no_files(tmp_path, capsys, extra, message):
    x = torch.zeros(20, 1, 28, 28)
    y = torch.arange(20) % 10
    for i in range(20):
        x[i, 0, :, int(y[i]) * 2] = 1.0
    np.savez(tmp_path / "d.npz", x=x.numpy(), y=y.numpy())
    out = tmp_path / "run"
    rc = main(["localization", "--model", "test_localization_face:stripe_model", "--data",
               str(tmp_path / "d.npz"), "--count", "2", "--methods", "gradient",
               "--out", str(out), "--no-progress", *extra])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_cli_refuses_non_image_data(tmp_path, capsys):
    np.savez(tmp_path / "flat.npz", x=np.zeros((8, 20), dtype=np.float32), y=np.arange(8) % 4)
    rc = main(["localization", "--model", "test_localization_face:stripe_model", "--data",
               str(tmp_path / "flat.npz"), "--out", str(tmp_path / "run"), "--no-progress"])
    assert rc == 2
    assert "make_grids needs images (N, C, H, W)" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_demo_localization_part(tmp_path):
    from saliency_sanity.demo import demo_localization, demo_model

    trained, ds = demo_model(seed=0, progress=False)
    lines = []
    r = demo_localization(trained.model, ds, tmp_path / "loc", progress=False, log=lines.append)
    assert (tmp_path / "loc" / "report.html").is_file() and (tmp_path / "loc" / "grids.npz")
    t = r.table[(r.table.setting == "difull") & (r.table.layer == "input")
                & (r.table.metric == "localization") & (r.table.method != "gradcam")]
    assert (t["value"] == 1.0).all()
    assert "DiFull gradient at the input 1.000" in lines[0]
