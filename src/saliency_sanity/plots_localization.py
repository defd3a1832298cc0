"""Figures of the localization check: box plots with the chance line, and AggAtt grids.

Both are drawn from a saved :class:`~saliency_sanity.results.CheckResult` alone (its table and
the AggAtt bins in ``examples["maps"]["<method>:<setting>:<layer>"]``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ._io import atomic_write
from .results import CheckResult

AGG_LABELS = ("0-2%", "2-5%", "5-50%", "50-95%", "95-98%", "98-100%")


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | os.PathLike) -> None:
    atomic_write(Path(path), lambda p: fig.savefig(p, dpi=110, bbox_inches="tight",
                                                   format="png"))


def _order(values: Any, first: tuple[str, ...]) -> list[str]:
    seen = list(dict.fromkeys(values))
    return [v for v in first if v in seen] + [v for v in seen if v not in first]


def localization_boxes(result: CheckResult, metric: str = "localization",
                       path: str | os.PathLike | None = None) -> Any:
    """One panel per setting: a box per method and layer (grids and heads pooled), the dashed
    line at chance (1 / n^2).

    Example:
        >>> # localization_boxes(result, path="figures/boxes_localization.png")
    """
    plt = _plt()
    t = result.table[result.table["metric"] == metric]
    if t.empty:
        raise ValueError(f"no rows for metric {metric!r}")
    settings = _order(t["setting"], ("gridpg", "difull", "dipart"))
    layers = _order(t["layer"], ("input", "middle", "final"))
    methods = list(dict.fromkeys(t["method"]))
    chance = float(result.settings.get("chance", 0.25))
    colours = plt.cm.viridis(np.linspace(0.15, 0.85, max(1, len(layers))))
    fig, axes = plt.subplots(len(settings), 1, figsize=(max(6, 1.1 * len(methods) * len(layers)),
                                                         2.8 * len(settings)), squeeze=False)
    width = 0.8 / max(1, len(layers))
    for ax, s in zip(axes[:, 0], settings, strict=True):
        for j, layer in enumerate(layers):
            data, pos = [], []
            for i, m in enumerate(methods):
                v = t[(t["setting"] == s) & (t["layer"] == layer) & (t["method"] == m)]["value"]
                if len(v):
                    data.append(v.to_numpy())
                    pos.append(i + (j - (len(layers) - 1) / 2) * width)
            if data:
                b = ax.boxplot(data, positions=pos, widths=width * 0.9, patch_artist=True,
                               showfliers=False)
                for patch in b["boxes"]:
                    patch.set_facecolor(colours[j])
                ax.plot([], [], color=colours[j], lw=6, label=layer)
        ax.axhline(chance, ls="--", color="k", lw=1, label=f"chance {chance:.3g}")
        ax.set_xticks(range(len(methods)), methods, rotation=20, ha="right", fontsize=8)
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel(f"{s}\n{metric}")
    axes[0, 0].legend(fontsize=7, ncol=len(layers) + 1, loc="upper right")
    fig.tight_layout()
    if path is not None:
        _save(fig, path)
    return fig


def aggatt_figure(result: CheckResult, setting: str, path: str | os.PathLike | None = None
                  ) -> Any:
    """AggAtt: a row per method and layer, a column per bin (best localized first), one colour
    scale per row (the 99.5th percentile of its bins), the target cell at the top left.

    Example:
        >>> # aggatt_figure(result, "gridpg", "figures/aggatt_gridpg.png")
    """
    plt = _plt()
    maps = result.examples.get("maps", {})
    keys = [k for k in maps if k.split(":")[1] == setting]
    if not keys:
        raise ValueError(f"no AggAtt maps for setting {setting!r}")
    n = int(result.settings.get("n", 2))
    fig, axes = plt.subplots(len(keys), len(AGG_LABELS), squeeze=False,
                             figsize=(1.3 * len(AGG_LABELS) + 1.5, 1.3 * len(keys) + 0.4))
    for r, key in enumerate(keys):
        bins = [np.asarray(maps[key][b]) for b in sorted(maps[key])]
        top = float(np.percentile(np.stack(bins), 99.5)) or 1.0
        method, _, layer = key.split(":")
        for c, m in enumerate(bins):
            ax = axes[r, c]
            ax.imshow(m, cmap="inferno", vmin=0, vmax=top)
            h, w = m.shape
            for k in range(1, n):
                ax.axhline(k * h / n - 0.5, color="w", lw=0.5)
                ax.axvline(k * w / n - 0.5, color="w", lw=0.5)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(AGG_LABELS[c] if c < len(AGG_LABELS) else str(c), fontsize=8)
        axes[r, 0].set_ylabel(f"{method}\n{layer}", fontsize=7)
    fig.suptitle(f"AggAtt, {setting}", fontsize=9, y=1.01)
    fig.tight_layout()
    if path is not None:
        _save(fig, path)
    return fig


def save_localization_figures(result: CheckResult, directory: str | os.PathLike) -> list[Path]:
    """``boxes_<metric>.png`` per metric and ``aggatt_<setting>.png`` per setting."""
    plt = _plt()
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    paths = []
    for metric in sorted(result.table["metric"].unique()):
        p = d / f"boxes_{metric}.png"
        plt.close(localization_boxes(result, metric, p))
        paths.append(p)
    settings = sorted({k.split(":")[1] for k in result.examples.get("maps", {})})
    for s in settings:
        p = d / f"aggatt_{s}.png"
        plt.close(aggatt_figure(result, s, p))
        paths.append(p)
    return paths
