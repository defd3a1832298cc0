"""The report's faithfulness section: MoRF / LeRF curves per method with 95% bands beside the
random-order curve, and the AOPC / ABPC / AUC / ROAD-gap table with 95% intervals.

It appears in two places: as the page of a faithfulness run (``saliency-sanity faithfulness``),
with the ranking of the methods by each faithfulness score, and as a section of a model
randomization run that computed the faithfulness check beside it (``faithfulness/``), whose
scores then join the method ranking. Everything is read from the saved result; all text from the
run is escaped.

Example:
    >>> import pandas as pd
    >>> t = pd.DataFrame({"method": "<g>", "stage": [0, 1], "layer": ["0", "1"], "sample": 0,
    ...                   "metric": "insertion_morf", "value": [0.0, 1.0]})
    >>> html = faithfulness_section(CheckResult(check="faithfulness", table=t), figures={})
    >>> "&lt;g&gt;" in html and "insertion AUC" in html
    True
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pandas as pd

from ..checks.faithfulness import RANDOM, faithfulness_summary
from ..checks.ranking import compute_ranking, expand_views
from ..results import CheckResult
from ._util import _num, _png_uri, _table, e
from .artifacts import CritiqueArtifacts, _draw

_DEFS = (
    "<b>AOPC</b> (Samek et al. 2016) = 1/(L+1) &sum;<sub>k</sub> [f(x<sub>0</sub>) &minus; "
    "f(x<sub>k</sub>)] on the MoRF curve (most relevant first): higher is better; the "
    "<b>LeRF AOPC</b> on the least-relevant-first curve: lower is better; <b>ABPC</b> = the area "
    "between the LeRF and MoRF curves: higher is better. <b>Insertion AUC</b> (RISE): higher is "
    "better; <b>deletion AUC</b>: lower is better. <b>ROAD gap</b> (Rong et al. 2022): the mean "
    "over the removed fractions of the LeRF minus the MoRF score, the removed pixels filled by "
    "noisy linear imputation: higher is better.")


def figure_names(result: CheckResult) -> list[str]:
    """The figure stems of a faithfulness result (``faithfulness_<metric>``)."""
    names = [m.rsplit("_", 1)[0] for m in dict.fromkeys(result.table["metric"])]
    return [f"faithfulness_{m}" for m in dict.fromkeys(names)]


def _settings_text(res: CheckResult) -> str:
    st = res.settings
    parts = []
    for metric, s in (st.get("metrics") or {}).items():
        parts.append(f"<code>{e(metric)}</code> {e(json.dumps(s, sort_keys=True))}")
    return "; ".join(parts) or "&ndash;"


def scores_table(res: CheckResult) -> str:
    """Mean [95% t-interval] over samples of every faithfulness score, one row per method
    (controls marked, the random order last), one column per score."""
    s = faithfulness_summary(res)
    if s.empty:
        return "<p>No scores: the run has no complete curves.</p>"
    labels = list(dict.fromkeys(s["label"]))
    hib = s.drop_duplicates("label").set_index("label")["higher_is_better"]
    controls = set(res.settings.get("controls", []))
    methods = [m for m in dict.fromkeys(s["method"]) if m != RANDOM]
    methods = ([m for m in methods if m not in controls] + [m for m in methods if m in controls]
               + ([RANDOM] if RANDOM in set(s["method"]) else []))
    rows, classes = [], []
    for method in methods:
        g = s[s["method"] == method].set_index("label")
        cells = [e(method) + (" (control)" if method in controls else "")]
        for lab in labels:
            if lab in g.index:
                r = g.loc[lab]
                nan = f" ({int(r['n_nan'])} NaN)" if int(r["n_nan"]) else ""
                cells.append(f'{_num(r["mean"])}<br><span class="note">[{_num(r["lo"])}, '
                             f'{_num(r["hi"])}]{nan}</span>')
            else:
                cells.append("&ndash;")
        rows.append(cells)
        classes.append("control" if method in controls or method == RANDOM else "")
    head = ["method"] + [f'{e(lab)}<br><span class="note">'
                         f'{"higher" if bool(hib[lab]) else "lower"} is better</span>'
                         for lab in labels]
    return _table(head, rows, classes, [False] + [True] * len(labels))


def faithfulness_section(res: CheckResult, figures: Mapping[str, bytes] | None = None) -> str:
    """The section: what was measured, the score table, one figure per metric (``figures``:
    ``{stem: png}``; missing ones are drawn from the result)."""
    from ..plots_faithfulness import curve_summary, faithfulness_curves

    st = res.settings
    n = res.table["sample"].nunique() if not res.table.empty else 0
    out = ['<h2 id="faithfulness">Faithfulness: perturbation curves</h2>',
           "<p>Does removing what a map calls important change the model's output more than "
           "removing what it calls unimportant? For each method the input's pixels (regions) are "
           "removed in the order of the trained model's map &mdash; most relevant first (MoRF) "
           "and least relevant first (LeRF) &mdash; and the explained class's "
           f"<code>{e(st.get('score', 'softmax'))}</code> score is recorded at every step, on "
           f"{n} inputs. A random removal order is the baseline: a map no better than chance "
           "sits on it (a random-map control should). Settings: "
           f"{_settings_text(res)}.</p>",
           f'<p class="note">{_DEFS}</p>',
           '<p class="sub">Scores: mean [95% t-interval] over samples.</p>', scores_table(res)]
    summary = None
    for stem in figure_names(res):
        data = (figures or {}).get(stem)
        metric = stem[len("faithfulness_"):]
        if data is None:
            summary = curve_summary(res) if summary is None else summary
            data = _draw(lambda p, m=metric, s=summary: faithfulness_curves(res, m, p, summary=s))
        if data is not None:
            curves = ("its curve (most relevant first)" if metric in ("insertion", "deletion")
                      else "its MoRF (solid) and LeRF (dashed) curves")
            out.append(f'<figure><img src="{_png_uri(data)}" alt="{e(stem)}"><figcaption>'
                       f"{e(metric)}: one panel per method (controls in grey), {curves}, mean "
                       "and 95% band over samples; grey dotted: the random order."
                       "</figcaption></figure>")
    return "\n".join(out)


def ranking_artifacts(res: CheckResult) -> CritiqueArtifacts | None:
    """The ranking of the methods by each faithfulness score of ``res`` (with Kendall's tau
    between the scores) as the ranking section reads it; None with fewer than two scores or
    two methods."""
    views = expand_views({"faithfulness": res})
    if len(views) < 2:
        return None
    try:
        long_ranks, long_tau, settings = compute_ranking(views)
    except ValueError:
        return None
    if long_ranks.empty or long_ranks["method"].nunique() < 2:
        return None
    return CritiqueArtifacts(ranking=long_ranks, tau=long_tau, ranking_settings=settings)


def format_faithfulness_summary(res: CheckResult, margin: float = 0.1) -> str:
    """The plain-text table printed after a faithfulness run: mean score per method (``margin``
    is not used: faithfulness ranks methods, it has no verdict).

    Example:
        >>> t = pd.DataFrame({"method": "g", "stage": [0, 1], "layer": ["0", "1"], "sample": 0,
        ...                   "metric": "deletion_morf", "value": [1.0, 0.0]})
        >>> print(format_faithfulness_summary(CheckResult(check="faithfulness", table=t)))
        faithfulness (mean over samples):
          method  deletion AUC (lower is better)
          g                                0.500
    """
    s = faithfulness_summary(res)
    if s.empty:
        return "faithfulness: no scores (empty result)"
    wide = s.pivot_table(index="method", columns="label", values="mean", sort=False)
    hib = s.drop_duplicates("label").set_index("label")["higher_is_better"]
    heads = {lab: f"{lab} ({'higher' if bool(hib[lab]) else 'lower'} is better)"
             for lab in wide.columns}
    width = max(len("method"), *(len(str(m)) for m in wide.index)) + 2
    lines = ["faithfulness (mean over samples):",
             "  " + "method".ljust(width) + "  ".join(heads[c] for c in wide.columns)]
    for method, row in wide.iterrows():
        cells = "  ".join(_plain(row[c]).rjust(len(heads[c])) for c in wide.columns)
        lines.append("  " + str(method).ljust(width) + cells)
    return "\n".join(lines)


def _plain(x: Any) -> str:
    v = float(x)
    return "nan" if pd.isna(v) else f"{v:.3f}"
