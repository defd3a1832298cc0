"""Figures from results only: similarity curves as small multiples starting at the trained model,
controls each in their own grey style, distances labelled as such, heat-map labels readable on
every colour. Built on a synthetic result (no model, fast)."""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from saliency_sanity.checks import COLUMNS, CheckResult
from saliency_sanity.plots import (
    CONTROL_STYLES,
    METHOD_COLORS,
    score_perfect,
    similarity_curves,
    text_color,
)
from saliency_sanity.plots_critiques import activation_scales_figure, ranking_figure

METHODS = ["gradient", "smoothgrad", "guided_backprop", "gradcam", "vargrad"]
CONTROLS = ["edge_sobel", "random_gaussian", "random_uniform"]
SCORES = {"spearman_abs": {"range": [-1.0, 1.0], "higher_is_better": True},
          "mse": {"range": [0.0, float("inf")], "higher_is_better": False}}


@pytest.fixture(scope="module")
def result() -> CheckResult:
    rng = np.random.default_rng(0)
    rows, null = [], []
    for metric in SCORES:
        for m in METHODS + CONTROLS:
            for k, layer in ((1, "fc2"), (2, "fc1"), (3, "conv1")):
                for i in range(6):
                    sim = 1.0 / (k + 1) + 0.02 * rng.standard_normal()
                    v = sim if metric == "spearman_abs" else 2 * (1 - sim)
                    rows.append((m, k, layer, i, metric, v))
                    null.append((m, k, layer, i, metric, v + 0.01))
    return CheckResult(
        check="model_randomization", table=pd.DataFrame(rows, columns=COLUMNS),
        null=pd.DataFrame(null, columns=COLUMNS),
        stages=[{"index": k, "block": b} for k, b in ((0, None), (1, "fc2"), (2, "fc1"),
                                                      (3, "conv1"))],
        settings={"order": "cascading", "controls": CONTROLS, "scores": SCORES})


def test_perfect_value_comes_from_the_score_settings(result):
    assert score_perfect(result, "spearman_abs") == (True, 1.0)
    assert score_perfect(result, "mse") == (False, 0.0)
    assert score_perfect(result, "ssim") == (True, 1.0)  # not in the run: the registry's


@pytest.mark.parametrize("metric, perfect", [("spearman_abs", 1.0), ("mse", 0.0)])
def test_similarity_curves_one_panel_per_method_from_the_trained_model(result, metric, perfect):
    fig = similarity_curves(result, metric)
    try:
        panels = [ax for ax in fig.axes if ax.get_visible()]
        assert [ax.get_title() for ax in panels] == METHODS  # controls get no panel
        assert len(fig.axes) == 6  # 2 rows x 3 columns, the last one hidden
        for j, ax in enumerate(panels):
            lines = ax.get_lines()
            # 3 controls, the null mean, the method, the trained model's marker
            assert len(lines) == 6
            for line in lines:
                assert line.get_xdata()[0] == 0 and line.get_ydata()[0] == perfect
            if j >= 2:  # the lowest panel of each column names the stages
                assert [t.get_text() for t in ax.get_xticklabels()] == [
                    "trained", "fc2", "fc1", "conv1"]
                assert ax.get_xlabel() == "randomized up to block"
            method = lines[4]
            assert method.get_color() == METHOD_COLORS[j]
            # the method's colour is never grey: grey is for controls and nulls
            assert len(set(np.round(matplotlib.colors.to_rgb(method.get_color()), 3))) > 1
            # controls: grey, each its own line style and marker
            styles = {(c.get_linestyle(), c.get_marker()) for c in lines[:3]}
            assert len(styles) == 3
            for c, style in zip(lines[:3], CONTROL_STYLES, strict=False):
                rgb = matplotlib.colors.to_rgb(c.get_color())
                assert rgb[0] == rgb[1] == rgb[2]
                assert c.get_marker() == style["marker"]
        legend = [t.get_text() for t in fig.legends[0].get_texts()]
        assert legend[0] == f"trained model: map vs itself ({perfect:g})"
        assert sum("null band" in t for t in legend) == 1  # drawn once per method, named once
        assert [t for t in legend if "(control)" in t] == [f"{c} (control)" for c in CONTROLS]
        ylabel = panels[0].get_ylabel()
        if metric == "mse":
            assert "distance: lower = more similar" in ylabel
            assert "lower = more similar" in fig._suptitle.get_text()
        else:
            assert ylabel == metric and "lower" not in fig._suptitle.get_text()
    finally:
        plt.close(fig)


def test_text_color_follows_luminance():
    cmap = plt.get_cmap("RdBu_r")
    assert text_color(cmap(0.0)) == "white"   # dark blue
    assert text_color(cmap(0.5)) == "black"   # near white
    assert text_color(cmap(1.0)) == "white"   # dark red
    viridis = plt.get_cmap("viridis")
    assert text_color(viridis(0.0)) == "white" and text_color(viridis(1.0)) == "black"


def _cell_texts(ax):
    """(text, colour of the text, colour of the cell under it) for every annotated cell."""
    im = ax.images[0]
    data = im.get_array()
    out = []
    for t in ax.texts:
        x, y = t.get_position()
        cell = im.cmap(im.norm(data[int(round(y)), int(round(x))]))
        out.append((t.get_text(), t.get_color(), cell))
    return out


def test_heatmap_labels_are_readable_on_every_cell():
    df = pd.DataFrame({"stage": [1, 1, 2, 2], "randomized_block": ["fc", "fc", "conv", "conv"],
                       "block": ["conv", "fc", "conv", "fc"],
                       "position": ["below", "randomized", "randomized", "randomized"],
                       "spearman": [1.0, -0.95, 0.0, 0.5]})
    fig = activation_scales_figure(df)
    try:
        cells = _cell_texts(fig.axes[0])
        assert len(cells) == 4
        colors = {text: color for text, color, _ in cells}
        assert colors == {"1.00": "white", "-0.95": "white", "0.00": "black", "0.50": "black"}
        for _, color, cell in cells:
            assert color == text_color(cell)
    finally:
        plt.close(fig)
    ranks = pd.DataFrame({"A": [1.0, 2.0, 3.0], "B": [3.0, 1.0, 2.0]}, index=["g", "h", "i"])
    tau = pd.DataFrame([[1.0, -0.5], [-0.5, 1.0]], index=["A", "B"], columns=["A", "B"])
    fig = ranking_figure(ranks, tau)
    try:
        heatmaps = [ax for ax in fig.axes if ax.texts]  # not the colour bars
        assert len(heatmaps) == 2
        for ax in heatmaps:
            cells = _cell_texts(ax)
            assert cells and all(color == text_color(cell) for _, color, cell in cells)
            assert {color for _, color, _ in cells} == {"white", "black"}
    finally:
        plt.close(fig)
