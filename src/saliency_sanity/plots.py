"""Figures from result objects only (nothing is recomputed here)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ._io import atomic_write
from .results import CheckResult

CONTROL_STYLE = {"color": "0.45", "linestyle": "--", "linewidth": 1.2}


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
        >>> len(fig.axes)  # 3 methods (gradient + 2 controls) x (input + 3 stages)
        12
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


def similarity_curves(result: CheckResult, metric: str, path: str | os.PathLike | None = None):
    """Mean similarity to the trained model's maps per stage, with 95% intervals over samples.

    Controls are drawn as dashed grey reference lines.
    """
    plt = _plt()
    summ = result.summary()
    summ = summ[summ["metric"] == metric]
    if summ.empty:
        raise ValueError(
            f"no rows for metric {metric!r}; this result has: "
            f"{', '.join(sorted(result.table['metric'].unique()))}"
        )
    labels = _stage_labels(result)
    stages = sorted(summ["stage"].unique())
    null = result.summary(null=True)
    null = null[null["metric"] == metric] if not null.empty else null
    fig, ax = plt.subplots(figsize=(max(5.0, 0.55 * len(stages) + 2.5), 3.6))
    for method, g in summ.groupby("method", sort=False):
        g = g.sort_values("stage")
        xs = [stages.index(s) for s in g["stage"]]
        if _is_control(result, method):
            ax.plot(xs, g["mean"], label=f"{method} (control)", **CONTROL_STYLE)
            continue
        (line,) = ax.plot(xs, g["mean"], marker="o", markersize=3, label=method)
        ax.fill_between(xs, g["lo"], g["hi"], color=line.get_color(), alpha=0.15)
        n = null[null["method"] == method].sort_values("stage") if not null.empty else null
        if len(n):
            ax.plot([stages.index(s) for s in n["stage"]], n["mean"], color=line.get_color(),
                    linestyle=":", linewidth=1.0)
    if not null.empty:
        ax.plot([], [], color="0.3", linestyle=":", label="null: two random models")
    ax.set_xticks(range(len(stages)))
    ax.set_xticklabels([labels.get(s, str(s)) for s in stages], rotation=45, ha="right",
                       fontsize=7)
    ax.set_xlabel("randomized up to block" if result.settings.get("order") != "independent"
                  else "randomized block")
    ax.set_ylabel(metric)
    ax.axhline(0.0, color="0.8", linewidth=0.8, zorder=0)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.set_title(f"{metric}: similarity to the trained model's maps (mean, 95% CI)", fontsize=9)
    fig.tight_layout()
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


def save_figures(result: CheckResult, directory: str | os.PathLike) -> list[Path]:
    """Write the check's figures into ``directory``: for model randomization the cascading grid
    and one similarity curve per metric; for data randomization the side-by-side maps and one bar
    chart per metric."""
    plt = _plt()
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    if result.check == "data_randomization":
        if result.examples and result.examples.get("maps"):
            plt.close(side_by_side(result, d / "maps_true_vs_random.png"))
            paths.append(d / "maps_true_vs_random.png")
        for metric in sorted(result.table["metric"].unique()):
            p = d / f"bars_{metric}.png"
            plt.close(score_bars(result, metric, p))
            paths.append(p)
        return paths
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


def _savefig(fig, path: str | os.PathLike) -> None:
    path = Path(path)
    atomic_write(path, lambda p: fig.savefig(p, dpi=130, bbox_inches="tight",
                                             format=path.suffix.lstrip(".") or "png"))
