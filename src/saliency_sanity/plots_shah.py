"""Figures of the Shah et al. 2021 experiments (DiffROAR curves, BlockMNIST maps and shares),
drawn from finished tables and tensors only (nothing is recomputed here)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .plots import _plt, _savefig

_STYLES = {"standard": {"color": "C0", "marker": "o"}, "robust": {"color": "C3", "marker": "s"},
           "random": {"color": "0.45", "marker": "^", "linestyle": "--"}}


def plot_diffroar(summaries: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """DiffROAR(k) per model (mean with a band of mean +- std over the pooled repeat pairs).

    ``summaries``: label -> a summary table (``checks.diffroar(...).summary``: columns ``k``,
    ``diffroar``, ``diffroar_lo``, ``diffroar_hi``).

    Example:
        >>> import pandas as pd, tempfile
        >>> s = pd.DataFrame({"k": [1.0, 0.5], "diffroar": [0.0, 0.1], "diffroar_lo": [-0.01, 0.05],
        ...                   "diffroar_hi": [0.01, 0.15]})
        >>> plot_diffroar({"standard": s}, tempfile.mkdtemp() + "/d.png").name
        'd.png'
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    try:
        for label, s in summaries.items():
            s = s.sort_values("k")
            st = _STYLES.get(label, {})
            ax.plot(s["k"], s["diffroar"], label=label, **st)
            ax.fill_between(s["k"], s["diffroar_lo"], s["diffroar_hi"],
                            color=st.get("color"), alpha=0.18, linewidth=0)
        ax.axhline(0.0, color="black", linewidth=0.7)
        ax.set_xlabel("k (fraction of coordinates kept)")
        ax.set_ylabel("DiffROAR = acc(top-k) - acc(bottom-k)")
        ax.set_title("DiffROAR (band: mean +- std over repeat pairs)", fontsize=9)
        ax.legend(fontsize=8)
        _savefig(fig, path)
    finally:
        plt.close(fig)
    return Path(path)


def plot_roar_kar(summaries: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """KAR (accuracy keeping the top-k) and ROAR (accuracy after removing the top r) per model.

    Example:
        >>> import pandas as pd, tempfile
        >>> s = pd.DataFrame({"k": [1.0, 0.5], "kar": [0.9, 0.8], "roar": [0.9, 0.5],
        ...                   "roar_removed": [0.0, 0.5]})
        >>> plot_roar_kar({"standard": s}, tempfile.mkdtemp() + "/r.png").name
        'r.png'
    """
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(8.4, 3.4))
    try:
        for label, s in summaries.items():
            st = _STYLES.get(label, {})
            s1 = s.sort_values("k")
            a1.plot(s1["k"], s1["kar"], label=label, **st)
            s2 = s.sort_values("roar_removed")
            a2.plot(s2["roar_removed"], s2["roar"], label=label, **st)
        a1.set_xlabel("k kept (top attributed)")
        a1.set_ylabel("test accuracy after retraining")
        a1.set_title("KAR: keep the top-k", fontsize=9)
        a2.set_xlabel("fraction removed (top attributed)")
        a2.set_title("ROAR: remove the top r", fontsize=9)
        a1.legend(fontsize=8)
        _savefig(fig, path)
    finally:
        plt.close(fig)
    return Path(path)


def plot_block_maps(x: Any, maps: Mapping[str, Any], mask: Any, path: str | os.PathLike,
                    n: int = 8) -> Path:
    """BlockMNIST images (signal block outlined) and each model's map, side by side.

    Example:
        >>> import torch, tempfile
        >>> x = torch.rand(2, 1, 56, 28); m = torch.zeros(2, 1, 56, 28, dtype=torch.bool)
        >>> m[:, :, :28] = True
        >>> plot_block_maps(x, {"standard": x, "robust": x}, m, tempfile.mkdtemp() + "/b.png").name
        'b.png'
    """
    plt = _plt()
    n = min(n, len(x))
    cols = 1 + len(maps)
    fig, axes = plt.subplots(n, cols, figsize=(1.3 * cols, 2.3 * n), squeeze=False)
    try:
        for i in range(n):
            img = np.asarray(x[i, 0], dtype=float)
            top = bool(np.asarray(mask[i, 0, 0, 0]))
            axes[i, 0].imshow(img, cmap="gray", vmin=0, vmax=1)
            y0 = -0.5 if top else 27.5
            axes[i, 0].add_patch(plt.Rectangle((-0.5, y0), 28, 28, fill=False, edgecolor="lime",
                                               linewidth=1.2))
            for j, (label, m) in enumerate(maps.items(), start=1):
                a = np.abs(np.asarray(m[i], dtype=float)).sum(0)
                axes[i, j].imshow(a / max(a.max(), 1e-12), cmap="hot", vmin=0, vmax=1)
                if i == 0:
                    axes[i, j].set_title(label, fontsize=8)
            if i == 0:
                axes[i, 0].set_title("input", fontsize=8)
        for ax in axes.ravel():
            ax.set_xticks([])
            ax.set_yticks([])
        _savefig(fig, path)
    finally:
        plt.close(fig)
    return Path(path)


def plot_signal_share_hist(table: Any, path: str | os.PathLike,
                           column: str = "mass_share") -> Path:
    """Histogram of the per-image share of attribution mass on the signal block, per model.

    Example:
        >>> import pandas as pd, tempfile
        >>> t = pd.DataFrame({"model": ["standard", "robust"], "mass_share": [0.5, 0.9]})
        >>> plot_signal_share_hist(t, tempfile.mkdtemp() + "/h.png").name
        'h.png'
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    try:
        bins = np.linspace(0, 1, 26)
        for label, g in table.groupby("model", sort=False):
            st = _STYLES.get(str(label), {})
            vals = g[column].dropna().to_numpy(float)
            ax.hist(vals, bins=bins, alpha=0.55, color=st.get("color"),
                    label=f"{label} (mean {vals.mean():.2f})" if len(vals) else str(label))
        ax.axvline(0.5, color="black", linewidth=0.7, linestyle=":")
        ax.set_xlabel(f"{column.replace('_', ' ')} on the signal block (0.5 = chance)")
        ax.set_ylabel("images")
        ax.legend(fontsize=8)
        _savefig(fig, path)
    finally:
        plt.close(fig)
    return Path(path)
