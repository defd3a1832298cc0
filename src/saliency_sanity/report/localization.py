"""The report page of a localization run: what DiFull proves, the score table, box plots with
the chance line, AggAtt grids and the settings. Everything is read from the saved result."""

from __future__ import annotations

import pandas as pd

from ..results import CheckResult
from ._util import _num, _png_uri, _table, e

DIFULL_SENTENCE = (
    "In DiFull each head sees only its own cell (the cells go through the network separately), "
    "so any positive attribution outside the head's cell is provably wrong: at the input a "
    "method that scores below 1.0 there has attributed to pixels the head never saw. At a layer "
    "the maps are upsampled bilinearly to the grid (the paper's protocol), which moves a little "
    "mass over the cell border, and Grad-CAM-type methods weight every cell's activations with "
    "the head's channel weights, so they mark the other cells too.")

_CAPTIONS = {
    "boxes": "Localization per method (x) and layer (colour), grids and heads pooled; dashed: "
             "chance (1 / n\u00b2).",
    "aggatt": "AggAtt: the maps sorted by localization and averaged in bins (best first), the "
              "target cell moved to the top left, one colour scale per row.",
}


def summary_table(result: CheckResult) -> pd.DataFrame:
    """Mean, std, median, min and max of each metric per setting, layer and method.

    Example:
        >>> t = pd.DataFrame({"method": "g", "setting": "difull", "layer": "input",
        ...                   "sample": [0, 1], "head": 0, "metric": "localization",
        ...                   "value": [1.0, 0.5]})
        >>> summary_table(CheckResult("localization", t))["mean"].tolist()
        [0.75]
    """
    t = result.table
    keys = ["setting", "layer", "method", "metric"]
    if t.empty:
        return pd.DataFrame(columns=[*keys, "mean", "std", "median", "min", "max", "n"])
    g = t.groupby(keys, sort=False)["value"]
    out = g.agg(["mean", "std", "median", "min", "max", "count"]).reset_index()
    return out.rename(columns={"count": "n"})


def difull_leaks(result: CheckResult) -> list[str]:
    """``method at layer`` for every DiFull input row below 1.0 (provable leaks).

    Example:
        >>> t = pd.DataFrame({"method": ["g", "h"], "setting": "difull", "layer": "input",
        ...                   "sample": 0, "head": 0, "metric": "localization",
        ...                   "value": [1.0, 0.9]})
        >>> difull_leaks(CheckResult("localization", t))
        ['h']
    """
    t = result.table
    t = t[(t["setting"] == "difull") & (t["layer"] == "input") & (t["metric"] == "localization")]
    return sorted(set(t[t["value"] < 1.0]["method"]))


def format_localization_summary(result: CheckResult, margin: float = 0.1) -> str:
    """What the terminal shows after a localization run: :func:`summary_table`, rounded
    (``margin`` is not used: localization has no verdict).

    Example:
        >>> t = pd.DataFrame({"method": "g", "setting": "gridpg", "layer": "input",
        ...                   "sample": [0, 1], "head": 0, "metric": "localization",
        ...                   "value": [0.5, 1.0]})
        >>> "0.75" in format_localization_summary(CheckResult("localization", t))
        True
    """
    return summary_table(result).round(3).to_string(index=False)


def render_localization(result: CheckResult, figures: list[tuple[str, bytes]], css: str,
                        settings_html: str, title: str | None = None) -> str:
    """The page as an HTML string (``css`` and the settings section come from the report)."""
    st = result.settings
    name = title or "Localization in controlled settings (Rao, Boehle, Schiele 2022)"
    n = st.get("n", "?")
    sub = (f"{st.get('n_grids', '?')} grids of {n}x{n} cells, settings "
           f"{', '.join(st.get('settings', []))}, layers "
           f"{', '.join(f'{k} = {v}' for k, v in (st.get('layers') or {}).items())}, "
           f"seed {st.get('seed')}")
    parts = [f'<div class="head"><h1>{e(name)}</h1><p class="sub">saliency-sanity report '
             f"&middot; {e(sub)}</p></div>"]
    chance = st.get("chance")
    parts.append('<h2 id="difull">What DiFull proves</h2>'
                 f'<div class="rule">{e(DIFULL_SENTENCE)}</div>')
    if "difull" in st.get("settings", []):
        leaks = difull_leaks(result)
        if "input" in set(result.table["layer"]):
            msg = ("Every method scored exactly 1.0 at the input in DiFull." if not leaks else
                   f"Below 1.0 at the input in DiFull (mass outside the cell, or no positive "
                   f"mass at all, which scores 0): {', '.join(leaks)}.")
            parts.append(f"<p>{e(msg)}</p>")
    s = summary_table(result)
    rows = [[e(r.setting), e(r.layer), e(r.method), e(r.metric), _num(r.mean), _num(r.std),
             _num(r.median), _num(r.min), _num(r.max), e(r.n)] for r in s.itertuples()]
    parts.append('<h2 id="scores">Localization scores</h2>'
                 f'<p class="note">Chance is {_num(chance)} (1 / n\u00b2). Grids and heads are '
                 "pooled; the table of the run has one row per grid and head.</p>"
                 + _table(["setting", "layer", "method", "metric", "mean", "std", "median",
                           "min", "max", "n"], rows,
                          numeric=[False] * 4 + [True] * 6))
    figs = []
    for stem, data in figures:
        cap = _CAPTIONS.get(stem.split("_")[0], "")
        figs.append(f'<figure><img alt="{e(stem)}" src="{_png_uri(data)}">'
                    f"<figcaption>{e(stem)}: {e(cap)}</figcaption></figure>")
    parts.append('<h2 id="figures">Figures</h2>' + "\n".join(figs))
    parts.append(settings_html)
    body = "\n".join(parts)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{e(name)} &middot; saliency-sanity</title><style>{css}</style></head>"
            f"<body><main>\n{body}\n</main></body></html>\n")
