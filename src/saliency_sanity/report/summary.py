"""The top of ``report.html``: what was explained (model, data, the model's accuracy on the
explained inputs), one row per method with its verdict (:func:`saliency_sanity.verdicts.verdict`)
and the numbers behind it, and the rule in one sentence (the formulas in a fold-out).

Everything is read from the saved result (``settings``, ``stages`` and the tables through
:mod:`saliency_sanity.verdicts`); nothing is recomputed. All text from the run is escaped.

Example:
    >>> import pandas as pd
    >>> from saliency_sanity.checks import CheckResult
    >>> r = CheckResult(check="model_randomization", table=pd.DataFrame(), settings={
    ...     "model": {"spec": "net.py:make"}, "data": "<x>.npz", "n_samples": 4,
    ...     "accuracy": {"correct": 3, "n": 4, "accuracy": 0.75}})
    >>> html = run_header(r)
    >>> "net.py:make" in html and "&lt;x&gt;.npz" in html and "3 of 4 (75.0%)" in html
    True
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from ..results import CheckResult
from ..verdicts import MAIN_SCORES, VERDICTS, has_verdict, rule_text
from ._util import _ci, _num, _table, e
from .hooks import per_score_verdicts, verdict_hook

#: Below this accuracy on the explained inputs the header warns about the preprocessing.
LOW_ACCURACY = 0.5

CSS = """
.head{display:flex;flex-wrap:wrap;align-items:baseline;gap:0 16px}.head .sub{margin:0}
.run{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;background:#f3f6fb;
 border:1px solid #dde3ee;border-radius:4px;padding:8px 14px;margin:6px 0 4px;font-size:13.5px}
.run dt{font-weight:600;color:#34405a}.run dd{margin:0}
.warn{color:#9b1c1c;font-weight:600}.nw{white-space:nowrap}
.flag{display:inline-block;padding:0 6px;border-radius:8px;font-size:11.5px;font-weight:700;
 text-transform:uppercase;letter-spacing:.03em;background:#fbdada;color:#9b1c1c;margin-right:4px}
table.headlines{margin-top:4px}table.headlines td:first-child{white-space:nowrap}
table.headlines td{font-size:12.5px;line-height:1.28;
 padding:3px 7px}table.headlines td:last-child{min-width:380px}
table.headlines .badge{min-width:0;padding:1px 7px}
h2.top{margin-top:14px}table.headlines th:nth-child(3){white-space:nowrap}
"""


def _model_text(st: dict[str, Any]) -> str:
    model = st.get("model")
    if isinstance(model, dict):
        name = model.get("name") or model.get("spec") or "model"
        bits = [f"<b>{e(name)}</b>"]
        if model.get("weights"):
            bits.append(f"weights {e(model['weights'])}")
        if model.get("normalize"):
            bits.append(f"inputs normalized with {e(model['normalize'])}")
        accs = [f"{k.replace('_acc', '')} acc {_num(model[k])}" for k in ("train_acc", "test_acc")
                if isinstance(model.get(k), (int, float))]
        if accs:
            bits.append("trained to " + ", ".join(accs))
        text = "; ".join(bits)
    elif model:
        text = f"<b>{e(model)}</b>"
    else:
        text = '<span class="note">not recorded (a run from the Python API)</span>'
    blocks = [b.get("name") for b in st.get("blocks") or [] if isinstance(b, dict)]
    if blocks:
        text += (f' <span class="note">&middot; {len(blocks)} blocks: '
                 f"{e(', '.join(str(b) for b in blocks))}</span>")
    return text


def _data_text(st: dict[str, Any]) -> str:
    data = st.get("data")
    text = e(data) if data else '<span class="note">not recorded</span>'
    shape = st.get("input_shape")
    n = st.get("n_samples")
    if n is not None:
        dims = "&times;".join(str(int(s)) for s in shape) if shape else "?"
        text += f' <span class="note">&middot; {int(n)} inputs of shape {dims}</span>'
    return text


def _accuracy_text(st: dict[str, Any]) -> str:
    acc = st.get("accuracy")
    if not isinstance(acc, dict) or not acc.get("n"):
        return ('<span class="note">not measured: no labels were given with the inputs</span>')
    a = float(acc.get("accuracy", acc["correct"] / acc["n"]))
    text = f"<b>{int(acc['correct'])} of {int(acc['n'])} ({100 * a:.1f}%)</b> correct"
    if a < LOW_ACCURACY:
        text += (' <span class="warn">low: check that the inputs are preprocessed as in '
                 "training (normalization, channel order, size) and that the labels match the "
                 "model's classes</span>")
    return text


def run_header(result: CheckResult) -> str:
    """The box at the top of the page: model, data and the trained model's accuracy on the
    explained inputs (``settings["accuracy"]``, when labels were known).

    Example:
        >>> import pandas as pd
        >>> from saliency_sanity.checks import CheckResult
        >>> r = CheckResult(check="model_randomization", table=pd.DataFrame(),
        ...                 settings={"accuracy": {"correct": 1, "n": 4, "accuracy": 0.25}})
        >>> "low: check that the inputs" in run_header(r)
        True
    """
    st = result.settings
    rows = [("Model", _model_text(st)), ("Data", _data_text(st))]
    if "accuracies" in st:  # two models (data randomization): the accuracy of each
        accs = st.get("accuracies") or {}
        for kind in ("true", "random"):
            a = accs.get(kind) or {}
            if a:
                rows.append((f"{kind.capitalize()}-label model",
                             f"train acc {_num(a.get('train_acc'))}, test acc "
                             f"{_num(a.get('test_acc'))}"))
    else:
        rows.append(("Accuracy on these inputs", _accuracy_text(st)))
    body = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
    return f'<dl class="run" id="run">{body}</dl>'


def _main_scores(result: CheckResult) -> list[str]:
    present = list(dict.fromkeys(result.table["metric"])) if not result.table.empty else []
    return [m for m in MAIN_SCORES if m in present] or present


def _stage_frame(result: CheckResult, min_samples: int) -> pd.DataFrame:
    """The per-stage table of a run whose check reads stages (its verdict hook's ``stages``:
    model randomization); empty otherwise."""
    hook = verdict_hook(result)
    if hook is None or hook.stages is None or result.table.empty:
        return pd.DataFrame()
    return hook.stages(result, min_samples=min_samples)


def _text(x: Any) -> str:
    return e(x) if isinstance(x, str) else ""


def _pct(x: Any) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "&ndash;"
    return "&ndash;" if math.isnan(v) else f"{100 * v:.0f}"


def _kept_line(sv: pd.DataFrame, method: str, main: list[str]) -> str:
    """Share of similarity kept per stage, one number per main score: "fc2 89/96% &middot; ..."."""
    g = sv[(sv["method"] == method) & sv["metric"].isin(main)]
    if g.empty:
        return ""
    if g["retained_mean"].isna().all():
        return ""
    parts = []
    for _, gs in g.groupby("stage", sort=True):
        by = {r["metric"]: r["retained_mean"] for _, r in gs.iterrows()}
        parts.append(f"{e(gs['layer'].iloc[0])} {'/'.join(_pct(by.get(m)) for m in main)}%")
    return f'<br><span class="note">kept: {" &middot; ".join(parts)}</span>'


def headlines_section(result: CheckResult, v: pd.DataFrame, margin: float = 0.1,
                      min_samples: int = 5) -> str:
    """One row per method (controls after) of ``v``, the table of
    :func:`saliency_sanity.verdicts.verdict`: its verdict and headline, with the numbers behind
    them (model randomization: the share of similarity the maps kept at each stage; data
    randomization: the similarity against random maps per main score); then the rule.

    Example:
        >>> import pandas as pd
        >>> from saliency_sanity.checks import CheckResult
        >>> from saliency_sanity.verdicts import verdict
        >>> rows = [("g", k, f"L{k}", i, "ssim", 1.0 / k + 0.01 * i)
        ...         for k in (1, 2) for i in range(6)]
        >>> r = CheckResult(check="model_randomization", table=pd.DataFrame(
        ...     rows, columns=["method", "stage", "layer", "sample", "metric", "value"]))
        >>> page = headlines_section(r, verdict(r))
        >>> 'id="headlines"' in page and "<details>" in page
        True
    """
    parts = ['<span id="verdicts"></span><h2 class="top">Verdicts</h2>']
    if result.settings.get("valid") is False:  # data randomization: not memorized
        parts.append(f'<p class="rule"><b>INVALID run:</b> '
                     f'{e(result.settings.get("invalid_reason", ""))}</p>')
    if not has_verdict(result.check):
        return "\n".join(parts + [f"<p>No verdict rule for a {e(result.check)} run: read the "
                                   "figures and tables.</p>"])
    if v.empty:
        return "\n".join(parts + ["<p>No results.</p>", rule_section(result, margin,
                                                                       min_samples)])
    main = _main_scores(result)
    sv = _stage_frame(result, min_samples)
    dv = per_score_verdicts(result, margin=margin, min_samples=min_samples)
    order = list(v[~v["control"]]["method"]) + list(v[v["control"]]["method"])
    v = v.set_index("method").loc[order].reset_index()
    rows, classes = [], []
    straddle = False
    for _, r in v.iterrows():
        kind = ' <span class="note">control</span>' if r["control"] else ""
        text = str(r["headline"])
        if _STRADDLE in text:
            text, straddle = text.replace(_STRADDLE, ""), True
        mark = "<sup>*</sup>" if "ambiguous" in text else ""
        cells = [f"{e(r['method'])}{kind}", _badge(r["verdict"])]
        if dv is not None:
            cells.append(_vs_random(dv, r["method"], main))
        kept = "" if r["control"] or sv.empty else _kept_line(sv, r["method"], main)
        cells.append(f"{e(text)}{mark}{kept}")
        rows.append(cells)
        classes.append("control" if r["control"] else "")
    head = ["method", "verdict"]
    if dv is not None:
        head.append("similarity vs random maps<br>"
                    f"<span class=\"note\">({e(', '.join(main))})</span>")
        head.append("headline")
    else:
        head.append("which randomized blocks it ignores<br><span class=\"note\">kept: the "
                    "share of similarity to the trained maps kept at each stage "
                    f"({e(' / '.join(main))})</span>")
    table = _table(head, rows, classes).replace("<table>", '<table class="headlines" '
                                                           'id="headlines">', 1)
    parts.append(table)
    notes = []
    if straddle:
        notes.append("<sup>*</sup> Ambiguous: there the intervals straddle 1/2 or the scores "
                     "disagree; more samples may decide.")
    agree = _agreement_line(result)
    if agree and dv is None:
        notes.append(agree)
    if notes:
        parts.append(f'<p class="note">{" ".join(notes)}</p>')
    parts.append(rule_section(result, margin, min_samples))
    return "\n".join(parts)


def _vs_random(dv: pd.DataFrame, method: str, main: list[str]) -> str:
    """Data randomization: similarity of the random-label maps vs the random maps' (per score)."""
    out = []
    for m in main:
        for _, x in dv[(dv["method"] == method) & (dv["metric"] == m)].iterrows():
            out.append("n/a (NaN)" if pd.isna(x["last_stage_mean"]) else
                       f"{_num(x['last_stage_mean'])} vs {_num(x['null_mean'])}")
    return '<span class="note nw">' + "<br>".join(out) + "</span>" if out else "&ndash;"


_STRADDLE = (" (there the intervals straddle 1/2 or the scores disagree; more samples may "
             "decide)")


def _badge(verdict: str) -> str:
    v = str(verdict)
    cls = v if v in VERDICTS else "invalid"
    return f'<span class="badge {cls}">{e(v)}</span>'


def _agreement_line(result: CheckResult) -> str:
    """The model's prediction agreement with the trained model at each stage."""
    parts = []
    for st in result.stages:
        k = int(st.get("index", 0) or 0)
        agree = (st.get("output_change") or {}).get("prediction_agreement")
        if k >= 1 and agree is not None:
            parts.append(f"{e(st.get('block'))} {_pct(agree)}%")
    if not parts:
        return ""
    return ("Prediction agreement with the trained model at each stage: "
            + " &middot; ".join(parts) + ".")


_STAGE_FORMULA = """\
s_k,i   similarity of sample i's map at stage k to the trained model's map (oriented:
        higher = more similar, mse negated); P = the score's perfect value (stage 0)
F       floor: the similarity between the maps of two fully and independently randomized
        models (the null at full randomization; else the random-map controls' mean)

stage reading: retained_k,i = (s_k,i - F) / (P - F)
  insensitive = lo CI(retained) > 1/2  on every main score, prediction agreement < 1/2
  changed     = hi CI(retained) < 1/2  on every main score;  otherwise ambiguous
verdict:  flagged       = some stage insensitive (it ignores the blocks randomized there),
                          or F = P (the maps do not depend on the model)
          pass          = every stage changed or not judged (agreement >= 1/2), one changed
          inconclusive  otherwise, or n < {min_samples}
"""

_DATA_FORMULA = """\
s_i     similarity of sample i's map for the random-label model to the true-label model's
        map (oriented: higher = more similar, mse negated); P = the score's perfect value
c_i     the same for the random-map controls (the null);  chance = mean of c

d_i = s_i - c_i     e_i = P - s_i     delta = margin * (P - chance)
  pass          = hi CI(d) <= delta  and  lo CI(e) > delta
  flagged       = lo CI(d) >  delta  or   hi CI(e) <= delta
  inconclusive  otherwise, or n < {min_samples}, or no random-map control   (margin = {margin:g})
"""


def rule_section(result: CheckResult, margin: float = 0.1, min_samples: int = 5) -> str:
    """The rule in one plain sentence; the formulas and the full wording in a fold-out.

    Example:
        >>> import pandas as pd
        >>> from saliency_sanity.checks import CheckResult
        >>> html = rule_section(CheckResult(check="model_randomization", table=pd.DataFrame()))
        >>> html.count("<details>"), "retained_k,i" in html
        (1, True)
    """
    hook = verdict_hook(result)
    if hook is None:
        return ""
    plain = hook.rule
    formula = (_STAGE_FORMULA if hook.stages is not None else _DATA_FORMULA).format(
        margin=margin, min_samples=min_samples)
    words = e(rule_text(result.check, margin, min_samples))
    return (f'<div class="rule" id="rule"><b>Rule.</b> {e(plain)}'
            "<details><summary>The formula</summary>"
            f"<pre>{e(formula)}</pre><p>{words}</p>"
            "<p>95% t-intervals of the mean over samples. See docs/verdicts.md and "
            "docs/report.md.</p></details></div>")


def stage_readings_section(result: CheckResult, min_samples: int = 5) -> str:
    """Every stage reading behind the headlines (a fold-out): similarity, floor, the share kept
    with its interval, the stage's null band and the prediction agreement.

    Example:
        >>> import pandas as pd
        >>> from saliency_sanity.checks import CheckResult
        >>> stage_readings_section(CheckResult(check="data_randomization", table=pd.DataFrame()))
        ''
    """
    sv = _stage_frame(result, min_samples)
    if sv.empty:
        return ""
    rank = {m: i for i, m in enumerate(MAIN_SCORES)}
    sv = sv.sort_values(["metric"], key=lambda c: c.map(lambda m: rank.get(m, len(rank))),
                        kind="stable")
    rows, classes = [], []
    for _, r in sv.iterrows():
        rows.append([e(r["method"]), e(r["metric"]), e(r["layer"]), e(r["reading"]),
                     _num(r["n"], 0), _num(r["similarity_mean"]),
                     f"{_num(r['floor'])} <span class=\"note\">{_text(r['floor_source'])}</span>",
                     f"{_num(r['retained_mean'])} {_ci(r['retained_lo'], r['retained_hi'])}",
                     f"{_num(r['null_mean'])} {_ci(r['null_lo'], r['null_hi'])}",
                     e(r["vs_null"]), _num(r["prediction_agreement"])])
        classes.append("control" if r["control"] else "")
    head = ["method", "score", "stage", "reading", "n", "similarity", "floor F",
            "retained (95% CI)", "stage null band", "vs null", "prediction agreement"]
    return ('<h2 id="stage-readings">Stage readings</h2>'
            f'<details><summary>Every method, score and stage ({len(rows)} rows): what the '
            "headlines are read from</summary>"
            + _table(head, rows, classes) + "</details>")
