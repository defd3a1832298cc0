"""Figures for the critiques of the randomization checks (from tables only; nothing recomputed).

- :func:`activation_scales_figure`: the activation-scale table of
  :func:`saliency_sanity.checks.activation_scale_analysis` as a stage x block heatmap.
- :func:`ranking_figure`: the method ranks per check and Kendall's tau between checks, from
  :func:`saliency_sanity.checks.method_ranking`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ._io import atomic_write
from .plots import text_color
from .results import CheckResult

__all__ = ["activation_scales_figure", "ranking_figure"]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _savefig(fig, path: str | os.PathLike) -> None:
    path = Path(path)
    atomic_write(path, lambda p: fig.savefig(p, dpi=130, bbox_inches="tight",
                                             format=path.suffix.lstrip(".") or "png"))


def activation_scales_figure(df: pd.DataFrame, value: str = "spearman",
                             path: str | os.PathLike | None = None, title: str | None = None):
    """Heatmap of ``value`` (rows: stages, labelled by the block they randomize; columns: blocks
    in forward order). Randomized cells are outlined; NaN cells are blank.

    Example:
        >>> df = pd.DataFrame({"stage": [1, 1], "randomized_block": ["fc", "fc"],
        ...                    "block": ["conv", "fc"], "position": ["below", "randomized"],
        ...                    "spearman": [1.0, 0.1]})
        >>> fig = activation_scales_figure(df)
        >>> len(fig.axes)
        2
    """
    plt = _plt()
    if df.empty:
        raise ValueError("the activation-scale table is empty")
    blocks = list(dict.fromkeys(df["block"]))
    stages = sorted(df["stage"].unique())
    labels = {s: f"{s}: {df.loc[df['stage'] == s, 'randomized_block'].iloc[0]}" for s in stages}
    grid = np.full((len(stages), len(blocks)), np.nan)
    rand = np.zeros_like(grid, dtype=bool)
    for r in df.itertuples(index=False):
        i, j = stages.index(r.stage), blocks.index(r.block)
        grid[i, j] = getattr(r, value)
        rand[i, j] = r.position == "randomized"
    fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * len(blocks) + 2.0),
                                    max(2.5, 0.45 * len(stages) + 1.5)))
    im = ax.imshow(np.ma.masked_invalid(grid), cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    for i in range(len(stages)):
        for j in range(len(blocks)):
            if not np.isnan(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color=text_color(im.cmap(im.norm(grid[i, j]))))
            if rand[i, j]:
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=1.2,
                                           edgecolor="k"))
    ax.set_xticks(range(len(blocks)))
    ax.set_xticklabels(blocks, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(stages)))
    ax.set_yticklabels([labels[s] for s in stages], fontsize=7)
    ax.set_xlabel("block (forward order)")
    ax.set_ylabel("stage: block randomized")
    ax.set_title(title or f"{value}: trained vs randomized activations (boxed = randomized)",
                 fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    if path is not None:
        _savefig(fig, path)
    return fig


def activation_scales_figures(result: CheckResult, directory: str | os.PathLike) -> list[Path]:
    """Write ``activation_scales.png`` (:func:`activation_scales_figure` of the result's table)
    into ``directory``."""
    path = Path(directory) / "activation_scales.png"
    _plt().close(activation_scales_figure(result.table, path=path))
    return [path]


def ranking_figure(ranks: pd.DataFrame, tau: pd.DataFrame,
                   path: str | os.PathLike | None = None):
    """Two panels: the rank of each method by each check (1 = best), and Kendall's tau between
    the checks' rankings.

    Example:
        >>> ranks = pd.DataFrame({"A": [1.0, 2.0], "B": [2.0, 1.0]}, index=["g", "h"])
        >>> tau = pd.DataFrame([[1.0, -1.0], [-1.0, 1.0]], index=["A", "B"], columns=["A", "B"])
        >>> len(ranking_figure(ranks, tau).axes)
        4
    """
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(4.0 + 0.8 * (ranks.shape[1] + tau.shape[1]),
                                                 max(2.8, 0.35 * len(ranks) + 1.5)))
    r = ranks.to_numpy(dtype=float)
    im1 = a1.imshow(np.ma.masked_invalid(r), cmap="viridis_r", aspect="auto")
    for i in range(r.shape[0]):
        for j in range(r.shape[1]):
            if not np.isnan(r[i, j]):
                a1.text(j, i, f"{r[i, j]:g}", ha="center", va="center", fontsize=7,
                        color=text_color(im1.cmap(im1.norm(r[i, j]))))
    a1.set_xticks(range(r.shape[1]))
    a1.set_xticklabels(ranks.columns, rotation=45, ha="right", fontsize=7)
    a1.set_yticks(range(r.shape[0]))
    a1.set_yticklabels(ranks.index, fontsize=7)
    a1.set_title("rank by check (1 = best)", fontsize=9)
    fig.colorbar(im1, ax=a1, fraction=0.046, pad=0.04)
    t = tau.to_numpy(dtype=float)
    im2 = a2.imshow(np.ma.masked_invalid(t), cmap="RdBu_r", vmin=-1, vmax=1)
    for i in range(t.shape[0]):
        for j in range(t.shape[1]):
            if not np.isnan(t[i, j]):
                a2.text(j, i, f"{t[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color=text_color(im2.cmap(im2.norm(t[i, j]))))
    a2.set_xticks(range(t.shape[1]))
    a2.set_xticklabels(tau.columns, rotation=45, ha="right", fontsize=7)
    a2.set_yticks(range(t.shape[0]))
    a2.set_yticklabels(tau.index, fontsize=7)
    a2.set_title("Kendall's tau between rankings", fontsize=9)
    fig.colorbar(im2, ax=a2, fraction=0.046, pad=0.04)
    fig.tight_layout()
    if path is not None:
        _savefig(fig, path)
    return fig
