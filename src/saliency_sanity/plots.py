"""Figures from result objects only (nothing is recomputed here)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._io import atomic_write
from .results import CheckResult
from .results.spec import find as find_check

#: The methods' colours: matplotlib's tab10 without its grey (grey is for controls and nulls).
METHOD_COLORS = ("C0", "C1", "C2", "C3", "C4", "C5", "C6", "C8", "C9")

#: The controls' styles in the similarity curves: a grey family, each its own line and marker.
CONTROL_STYLES: tuple[dict[str, Any], ...] = (
    {"color": "0.25", "linestyle": "--", "marker": "s"},
    {"color": "0.5", "linestyle": "-.", "marker": "^"},
    {"color": "0.65", "linestyle": (0, (1, 1.5)), "marker": "v"},
    {"color": "0.4", "linestyle": (0, (5, 1.5, 1, 1.5, 1, 1.5)), "marker": "D"},
)


def text_color(rgba: Sequence[float]) -> str:
    """Black or white, whichever has the higher contrast on a cell of colour ``rgba``: by the
    WCAG contrast ratio, white when the colour's relative luminance is below 0.179 (where both
    contrasts are equal, about 4.6:1).

    Example:
        >>> text_color((1.0, 1.0, 0.8)), text_color((0.05, 0.1, 0.4)), text_color((0.7, 0.0, 0.0))
        ('black', 'white', 'white')
    """
    def lin(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (lin(float(c)) for c in rgba[:3])
    return "white" if 0.2126 * r + 0.7152 * g + 0.0722 * b < 0.179 else "black"


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def display_map(m: np.ndarray) -> np.ndarray:
    """A map as the paper displays it: absolute value summed over channels, scaled by its 99th
    percentile and clipped to [0, 1]. Accepts (C, H, W), (H, W) or (D,)."""
    import torch

    from . import postprocess

    t = torch.as_tensor(np.asarray(m, dtype=np.float32))[None]
    if t.dim() == 2:  # flat (1, D): show as a row
        return postprocess.absolute(t)[0].numpy()[None, :]
    return postprocess.absolute(t)[0].numpy()


def _display_input(x: np.ndarray) -> tuple[np.ndarray, str | None]:
    if x.ndim == 1:
        return x[None, :], "gray"
    if x.shape[0] == 1:
        return x[0], "gray"
    img = np.moveaxis(x[:3], 0, -1)
    lo, hi = float(img.min()), float(img.max())
    return (img - lo) / (hi - lo + 1e-12), None


def _stage_labels(result: CheckResult) -> dict[int, str]:
    labels = {0: "trained"}
    for st in result.stages:
        if st["index"] > 0:
            labels[st["index"]] = str(st["block"])
    return labels


def _is_control(result: CheckResult, method: str) -> bool:
    return method in set(result.settings.get("controls", []))


def cascading_grid(result: CheckResult, sample: int = 0, path: str | os.PathLike | None = None,
                   methods: Sequence[str] | None = None):
    """The paper's cascading figure: rows = methods, columns = input then each stage.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from saliency_sanity import model_randomization_test
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(72, 3))
        >>> res = model_randomization_test(net, torch.rand(2, 1, 8, 8), methods=["gradient"],
        ...                                scores=["spearman"], progress=False)
        >>> fig = cascading_grid(res, sample=0)
        >>> len(fig.axes)  # 4 methods (gradient + 3 default controls) x (input + 3 stages)
        16
    """
    plt = _plt()
    ex = result.examples
    if not ex or not ex.get("maps"):
        raise ValueError("this result kept no example maps (n_examples=0); rerun with n_examples>0")
    n_kept = len(ex["inputs"])
    if not 0 <= sample < n_kept:
        raise ValueError(f"sample {sample} was not kept; the result keeps samples 0..{n_kept - 1}")
    names = list(methods) if methods is not None else list(ex["maps"])
    stages = sorted({k for n in names for k in ex["maps"][n]})
    labels = _stage_labels(result)
    ncol = len(stages) + 1
    fig, axes = plt.subplots(len(names), ncol, figsize=(1.25 * ncol + 1.2, 1.25 * len(names) + 0.6),
                             squeeze=False)
    img, cmap = _display_input(ex["inputs"][sample])
    for r, name in enumerate(names):
        axes[r, 0].imshow(img, cmap=cmap)
        axes[r, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
        for c, k in enumerate(stages, start=1):
            axes[r, c].imshow(display_map(ex["maps"][name][k][sample]), cmap="gray", vmin=0, vmax=1)
    axes[0, 0].set_title("input", fontsize=8)
    for c, k in enumerate(stages, start=1):
        axes[0, c].set_title(labels.get(k, str(k)), fontsize=7, rotation=45, ha="left")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    order = result.settings.get("order", "")
    fig.suptitle(f"{order} randomization, sample {int(ex['samples'][sample])}", fontsize=9, y=1.0)
    fig.tight_layout()
    if path is not None:
        _savefig(fig, path)
    return fig


def score_perfect(result: CheckResult, metric: str) -> tuple[bool, float]:
    """``(higher_is_better, perfect)`` of ``metric``: the value of a map scored against itself,
    read from ``result.settings["scores"]`` (the top of the range for a similarity, the bottom
    for a distance such as ``mse``), else from the score registry.

    Example:
        >>> import pandas as pd
        >>> r = CheckResult(check="model_randomization", table=pd.DataFrame(), settings={
        ...     "scores": {"mse": {"range": [0.0, float("inf")], "higher_is_better": False}}})
        >>> score_perfect(r, "mse"), score_perfect(r, "spearman_abs")
        ((False, 0.0), (True, 1.0))
    """
    meta = (result.settings.get("scores") or {}).get(metric)
    if meta is None:
        try:
            from . import scores

            meta = scores.get(metric).settings()
        except Exception:  # an unknown score: assume a correlation-like similarity
            meta = {}
    hib = bool(meta.get("higher_is_better", True))
    rng = meta.get("range") or ([-1.0, 1.0] if hib else [0.0, float("inf")])
    perfect = float(rng[1] if hib else rng[0])
    if not np.isfinite(perfect):
        perfect = 1.0 if hib else 0.0
    return hib, perfect


def _panel_grid(n: int) -> tuple[int, int]:
    """(rows, columns) of the small multiples: up to 4 in a row, else 3 columns."""
    ncol = n if n <= 4 else 3
    return -(-n // ncol), ncol


def similarity_curves(result: CheckResult, metric: str, path: str | os.PathLike | None = None):
    """Similarity to the trained model's maps per stage: one panel per method (small multiples,
    shared axes), mean and 95% interval over samples.

    Every curve starts at the trained model (stage 0), where a map is compared with itself: the
    score's perfect value (1 for correlations and SSIM, 0 for ``mse``; :func:`score_perfect`).
    Each panel shows the method's null band once (two independently randomized models at each
    stage, grey) and the controls as grey reference lines, each with its own line style and
    marker. A distance (``higher_is_better`` False, e.g. ``mse``) is labelled "lower = more
    similar".

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from saliency_sanity import model_randomization_test
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(72, 3))
        >>> res = model_randomization_test(net, torch.rand(6, 1, 8, 8), scores=["spearman_abs"],
        ...     methods=["gradient", "smoothgrad"], progress=False, n_examples=0)
        >>> fig = similarity_curves(res, "spearman_abs")
        >>> [ax.get_title() for ax in fig.axes]
        ['gradient', 'smoothgrad']
        >>> # every line starts at the trained model: 3 controls, null, method, its marker
        >>> [float(line.get_ydata()[0]) for line in fig.axes[0].lines]
        [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    """
    plt = _plt()
    summ = result.summary()
    summ = summ[summ["metric"] == metric]
    if summ.empty:
        raise ValueError(
            f"no rows for metric {metric!r}; this result has: "
            f"{', '.join(sorted(result.table['metric'].unique()))}"
        )
    hib, perfect = score_perfect(result, metric)
    labels = _stage_labels(result)
    stages = sorted(int(k) for k in summ["stage"].unique())
    if 0 not in stages:
        stages = [0, *stages]
    null = result.summary(null=True)
    null = null[null["metric"] == metric] if not null.empty else null
    names = list(dict.fromkeys(summ["method"]))
    controls = [m for m in names if _is_control(result, m)]
    methods = [m for m in names if m not in controls] or controls[:1]
    nrow, ncol = _panel_grid(len(methods))
    fig, axes = plt.subplots(nrow, ncol, figsize=(2.2 + 2.6 * ncol, 0.9 + 2.3 * nrow),
                             sharex=True, sharey=True, squeeze=False)

    def series(g):
        """x positions and (mean, lo, hi), starting at the trained model (perfect)."""
        g = g.sort_values("stage")
        xs = [stages.index(int(k)) for k in g["stage"]]
        cols = [list(g[c].astype(float)) for c in ("mean", "lo", "hi")]
        if 0 not in g["stage"].astype(int).tolist():
            xs = [0, *xs]
            cols = [[perfect, *c] for c in cols]
        return xs, cols

    for i, method in enumerate(methods):
        ax = axes.flat[i]
        for j, c in enumerate(controls):
            xs, (mean, _, _) = series(summ[summ["method"] == c])
            ax.plot(xs, mean, markersize=3, linewidth=1.0, zorder=1,
                    **CONTROL_STYLES[j % len(CONTROL_STYLES)])
        n = null[null["method"] == method] if not null.empty else null
        if len(n):
            xs, (mean, lo, hi) = series(n)
            ax.fill_between(xs, lo, hi, color="0.82", alpha=0.7, linewidth=0, zorder=0)
            ax.plot(xs, mean, color="0.6", linewidth=0.8, zorder=1)
        xs, (mean, lo, hi) = series(summ[summ["method"] == method])
        color = METHOD_COLORS[names.index(method) % len(METHOD_COLORS)]
        ax.fill_between(xs, lo, hi, color=color, alpha=0.2, linewidth=0, zorder=2)
        ax.plot(xs, mean, color=color, marker="o", markersize=3.5, linewidth=1.6, zorder=3)
        ax.plot([0], [perfect], marker="o", markersize=6, color="k", markerfacecolor="w",
                linestyle="none", zorder=4)
        ax.set_title(method, fontsize=8.5)
        ax.grid(axis="y", color="0.92", linewidth=0.6)
        ax.tick_params(labelsize=7)
    for ax in axes.flat[len(methods):]:
        ax.set_visible(False)
    xlabel = ("randomized block" if result.settings.get("order") == "independent"
              else "randomized up to block")
    for i, ax in enumerate(axes.flat[:len(methods)]):
        if i + ncol < len(methods):
            continue  # a panel below shows the stages
        ax.set_xticks(range(len(stages)))
        ax.set_xticklabels([labels.get(k, str(k)) for k in stages], rotation=45, ha="right",
                           fontsize=7)
        ax.tick_params(axis="x", labelbottom=True)
        ax.set_xlabel(xlabel, fontsize=8)
    ylabel = metric if hib else f"{metric}\n(distance: lower = more similar)"
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel, fontsize=8)
    handles = [plt.Line2D([], [], marker="o", markersize=6, color="k", markerfacecolor="w",
                          linestyle="none",
                          label=f"trained model: map vs itself ({perfect:g})"),
               plt.Line2D([], [], color="0.3", marker="o", markersize=3.5,
                          label="method (colour), 95% CI shaded")]
    if not null.empty:
        handles.append(plt.matplotlib.patches.Patch(
            color="0.82", label="null band (mean, 95% CI): two independently randomized models"))
    handles += [plt.Line2D([], [], markersize=3, linewidth=1.0,
                           label=f"{c} (control)", **CONTROL_STYLES[j % len(CONTROL_STYLES)])
                for j, c in enumerate(controls)]
    what = ("similarity to the trained model's maps per stage (mean, 95% CI)" if hib else
            "distance to the trained model's maps per stage (lower = more similar; mean, "
            "95% CI)")
    fig.suptitle(f"{metric}: {what}", fontsize=9.5)
    ncol_legend = min(3, len(handles))
    rows = -(-len(handles) // ncol_legend)
    height = fig.get_figheight()
    fig.legend(handles=handles, loc="lower center", ncol=ncol_legend, fontsize=7.5,
               frameon=False, bbox_to_anchor=(0.5, 0.0))
    fig.tight_layout(rect=(0, (0.08 + 0.2 * rows) / height, 1, 1))
    if path is not None:
        _savefig(fig, path)
    return fig


def side_by_side(result: CheckResult, path: str | os.PathLike | None = None,
                 samples: Sequence[int] | None = None):
    """Data randomization figure: per method (rows), the input and the maps of the true-label and
    random-label models for a few samples (columns)."""
    plt = _plt()
    ex = result.examples
    if not ex or not ex.get("maps"):
        raise ValueError("this result kept no example maps (n_examples=0); rerun with n_examples>0")
    n_kept = len(ex["inputs"])
    samples = list(samples) if samples is not None else list(range(min(3, n_kept)))
    names = list(ex["maps"])
    ncol = 3 * len(samples)
    fig, axes = plt.subplots(len(names), ncol, figsize=(1.1 * ncol + 1.2, 1.15 * len(names) + 0.8),
                             squeeze=False)
    for j, s in enumerate(samples):
        img, cmap = _display_input(ex["inputs"][s])
        axes[0, 3 * j].set_title(f"input {int(ex['samples'][s])}", fontsize=7)
        axes[0, 3 * j + 1].set_title("true labels", fontsize=7)
        axes[0, 3 * j + 2].set_title("random labels", fontsize=7)
        for r, name in enumerate(names):
            axes[r, 3 * j].imshow(img, cmap=cmap)
            for c, k in ((1, 0), (2, 1)):
                axes[r, 3 * j + c].imshow(display_map(ex["maps"][name][k][s]), cmap="gray",
                                          vmin=0, vmax=1)
    for r, name in enumerate(names):
        axes[r, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    title = "data randomization: maps of the true-label and random-label models"
    if result.settings.get("valid") is False:
        title += "  [INVALID: random-label model did not memorize]"
    fig.suptitle(title, fontsize=9, y=1.0)
    fig.tight_layout()
    if path is not None:
        _savefig(fig, path)
    return fig


def score_bars(result: CheckResult, metric: str, path: str | os.PathLike | None = None):
    """Bar chart of one score per method (mean and 95% interval), controls in grey."""
    plt = _plt()
    summ = result.summary()
    summ = summ[summ["metric"] == metric]
    if summ.empty:
        raise ValueError(f"no rows for metric {metric!r}")
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(summ) + 1.5), 3.2))
    xs = np.arange(len(summ))
    colors = ["0.6" if _is_control(result, m) else f"C{i % 10}"
              for i, m in enumerate(summ["method"])]
    err = np.vstack([summ["mean"] - summ["lo"], summ["hi"] - summ["mean"]])
    ax.bar(xs, summ["mean"], color=colors, yerr=np.nan_to_num(err), capsize=3)
    ax.set_xticks(xs)
    ax.set_xticklabels(summ["method"], rotation=45, ha="right", fontsize=7)
    ax.axhline(0.0, color="0.3", linewidth=0.8)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric}: true-label vs random-label maps (mean, 95% CI)", fontsize=9)
    fig.tight_layout()
    if path is not None:
        _savefig(fig, path)
    return fig


def data_randomization_figures(result: CheckResult, directory: str | os.PathLike) -> list[Path]:
    """Write the figures of a data randomization run into ``directory``: the side-by-side maps
    and one bar chart per metric."""
    plt = _plt()
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    if result.examples and result.examples.get("maps"):
        plt.close(side_by_side(result, d / "maps_true_vs_random.png"))
        paths.append(d / "maps_true_vs_random.png")
    for metric in sorted(result.table["metric"].unique()):
        p = d / f"bars_{metric}.png"
        plt.close(score_bars(result, metric, p))
        paths.append(p)
    return paths


def model_randomization_figures(result: CheckResult, directory: str | os.PathLike) -> list[Path]:
    """Write the figures of a model randomization run (and of its stage-wise extras) into
    ``directory``: the cascading grid and one similarity curve per metric."""
    plt = _plt()
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    if result.examples and result.examples.get("maps"):
        fig = cascading_grid(result, 0, d / "cascading_grid.png")
        plt.close(fig)
        paths.append(d / "cascading_grid.png")
    for metric in sorted(result.table["metric"].unique()):
        p = d / f"similarity_{metric}.png"
        fig = similarity_curves(result, metric, p)
        plt.close(fig)
        paths.append(p)
    return paths


def save_figures(result: CheckResult, directory: str | os.PathLike) -> list[Path]:
    """Write the figures of ``result``'s check into ``directory``: those of the ``figures`` part
    its :class:`~saliency_sanity.results.spec.CheckSpec` declares (a check that is not
    registered gets :func:`model_randomization_figures`; one that declares none, none)."""
    spec = find_check(result.check)
    if spec is None:
        return model_randomization_figures(result, directory)
    return [] if spec.figures is None else spec.part("figures")(result, directory)


def _savefig(fig, path: str | os.PathLike) -> None:
    path = Path(path)
    atomic_write(path, lambda p: fig.savefig(p, dpi=130, bbox_inches="tight",
                                             format=path.suffix.lstrip(".") or "png"))
