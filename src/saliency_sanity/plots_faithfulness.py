"""Figures of the faithfulness check (from its result only; nothing is recomputed).

- :func:`curve_summary`: mean and 95% t-interval over samples of every curve at every step;
- :func:`faithfulness_curves`: one figure per metric, one panel per method: the MoRF and LeRF
  curves with their 95% bands and the random-order curve beside them;
- :func:`save_faithfulness_figures`: every metric's figure into a folder
  (``faithfulness_<metric>.png``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd

from .plots import METHOD_COLORS, _plt, _savefig
from .results import CheckResult, mean_interval

#: The random-order baseline's method name in a faithfulness result.
RANDOM = "(random order)"
_TITLES = {"region_perturbation": "Region perturbation", "pixel_flipping": "Pixel flipping",
           "insertion": "Insertion", "deletion": "Deletion", "road": "ROAD"}
_X = {"insertion": "fraction of the pixels inserted"}

__all__ = ["curve_summary", "faithfulness_curves", "save_faithfulness_figures"]


def curve_summary(result: CheckResult, ci: float = 0.95) -> pd.DataFrame:
    """Mean, ``ci`` t-interval and count (NaN samples left out) of each curve per method,
    metric (``<name>_<order>``) and step; ``fraction`` is the share of the input removed
    (inserted) at the step.

    Example:
        >>> t = pd.DataFrame({"method": "g", "stage": [0, 0, 1, 1], "layer": ["0", "0", "0.5",
        ...                   "0.5"], "sample": [0, 1, 0, 1], "metric": "road_morf",
        ...                   "value": [1.0, 0.8, 0.4, 0.2]})
        >>> s = curve_summary(CheckResult(check="faithfulness", table=t))
        >>> s[["stage", "fraction", "mean", "n"]].round(3).values.tolist()
        [[0.0, 0.0, 0.9, 2.0], [1.0, 0.5, 0.3, 2.0]]
    """

    cols = ["method", "metric", "stage", "fraction", "mean", "lo", "hi", "n"]
    t = result.table
    if t.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for (method, metric, stage), g in t.groupby(["method", "metric", "stage"], sort=False):
        n, mean, _, half = mean_interval(g["value"], ci)
        half = half if n > 1 else 0.0
        frac = pd.to_numeric(pd.Series([g["layer"].iloc[0]]), errors="coerce").iloc[0]
        rows.append([method, metric, int(stage), float(frac), mean, mean - half, mean + half, n])
    out = pd.DataFrame(rows, columns=cols)
    first = {m: i for i, m in enumerate(dict.fromkeys(t["method"]))}
    out["_m"] = out["method"].map(first)
    return out.sort_values(["_m", "metric", "stage"], kind="stable").drop(
        columns="_m").reset_index(drop=True)


def _bases(result: CheckResult) -> list[str]:
    names = [m.rsplit("_", 1)[0] for m in dict.fromkeys(result.table["metric"])]
    return list(dict.fromkeys(names))


def faithfulness_curves(result: CheckResult, metric: str, path: str | os.PathLike | None = None,
                        summary: pd.DataFrame | None = None):
    """One panel per method: the MoRF curve (solid) and the LeRF curve (dashed) of ``metric``
    with 95% bands over samples, and the random-order curve (grey, dotted, band) for reference.

    Example:
        >>> t = pd.DataFrame({"method": ["g"] * 4 + [RANDOM] * 4, "stage": [0, 1] * 4,
        ...                   "layer": ["0", "1"] * 4, "sample": 0,
        ...                   "metric": ["road_morf"] * 2 + ["road_lerf"] * 2 + ["road_morf"] * 2
        ...                   + ["road_lerf"] * 2, "value": [1.0, 0.0, 1.0, 1.0] + [1.0, .5] * 2})
        >>> fig = faithfulness_curves(CheckResult(check="faithfulness", table=t), "road")
        >>> len(fig.axes)
        1
    """
    plt = _plt()
    s = curve_summary(result) if summary is None else summary
    s = s[s["metric"].str.rsplit("_", n=1).str[0] == metric]
    if s.empty:
        raise ValueError(f"the result has no {metric!r} curves; it has "
                         f"{', '.join(_bases(result))}")
    controls = set(result.settings.get("controls", []))
    methods = [m for m in dict.fromkeys(s["method"]) if m != RANDOM]
    methods = [m for m in methods if m not in controls] + [m for m in methods if m in controls]
    n = max(1, len(methods))
    ncol = min(4, n)
    nrow = math.ceil(n / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.1 * ncol, 2.5 * nrow + 0.5), squeeze=False,
                             sharex=True, sharey=True)
    rnd = s[s["method"] == RANDOM]
    score = result.settings.get("score", "softmax")
    for i, method in enumerate(methods):
        ax = axes.flat[i]
        color = "0.35" if method in controls else METHOD_COLORS[i % len(METHOD_COLORS)]
        g = s[s["method"] == method]
        for order, style, name in (("morf", "-", "MoRF"), ("lerf", "--", "LeRF")):
            c = g[g["metric"] == f"{metric}_{order}"]
            if c.empty:
                continue
            ax.plot(c["fraction"], c["mean"], style, color=color, linewidth=1.6, label=name)
            ax.fill_between(c["fraction"], c["lo"], c["hi"], color=color, alpha=0.18,
                            linewidth=0)
        c = rnd[rnd["metric"] == f"{metric}_morf"]
        if not c.empty:
            ax.plot(c["fraction"], c["mean"], ":", color="0.45", linewidth=1.4,
                    label="random order")
            ax.fill_between(c["fraction"], c["lo"], c["hi"], color="0.6", alpha=0.15,
                            linewidth=0)
        ax.set_title(method + (" (control)" if method in controls else ""), fontsize=9)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(methods):]:
        ax.set_visible(False)
    for i, ax in enumerate(list(axes.flat)[:len(methods)]):
        if i + ncol >= len(methods):  # nothing drawn below: this panel carries the x axis
            ax.xaxis.set_tick_params(labelbottom=True)
            ax.set_xlabel(_X.get(metric, "fraction of the pixels removed"), fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel(f"{score} of the explained class", fontsize=8)
    axes.flat[0].legend(fontsize=7, loc="best")
    fig.suptitle(f"{_TITLES.get(metric, metric)}: mean and 95% interval over samples",
                 fontsize=10)
    fig.tight_layout()
    if path is not None:
        _savefig(fig, path)
    return fig


def save_faithfulness_figures(result: CheckResult, directory: str | os.PathLike) -> list[Path]:
    """Write ``faithfulness_<metric>.png`` for every metric of ``result`` into ``directory``.

    Example:
        >>> # save_faithfulness_figures(CheckResult.load("runs/f"), "runs/f/figures")
    """
    plt = _plt()
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    summary = curve_summary(result)
    paths = []
    for metric in _bases(result):
        p = d / f"faithfulness_{metric}.png"
        plt.close(faithfulness_curves(result, metric, p, summary=summary))
        paths.append(p)
    return paths
