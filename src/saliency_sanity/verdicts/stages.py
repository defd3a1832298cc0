"""Per-stage verdicts: how much the maps changed at each stage, against how much the model did.

See docs/verdicts.md for the rule and its reasons; :data:`STAGE_RULE` states it in a sentence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..results import CheckResult
from .end import MAIN_SCORES, RANDOM_CONTROLS, _score_meta, _t_interval, _values, layers_by_stage

#: The per-stage rule in one sentence (docs/verdicts.md gives the reasons).
STAGE_RULE = (
    "At a stage where most of the model's predictions changed (agreement with the trained "
    "model's predictions below 1/2), a method is insensitive to the randomized blocks when its "
    "maps kept more than half of their similarity to the trained model's maps, measured from "
    "the similarity that the maps of two fully and independently randomized models share "
    "(retained = (similarity - floor) / (perfect - floor), 95% t-interval over samples above "
    "1/2 on every score), and changed when that interval lies below 1/2 on every score; "
    "otherwise ambiguous."
)

STAGE_COLUMNS = [
    "method", "control", "metric", "stage", "layer", "reading", "n",
    "similarity_mean", "map_change_mean", "map_change_lo", "map_change_hi",
    "retained_mean", "retained_lo", "retained_hi", "floor", "floor_source", "perfect",
    "null_mean", "null_lo", "null_hi", "null_diff_mean", "null_diff_lo", "null_diff_hi",
    "vs_null", "logit_correlation", "prediction_agreement", "model_changed",
]
HEADLINE_COLUMNS = ["method", "control", "flagged", "insensitive_top", "headline", "stages"]

_HALF = 0.5


def _mean_ci(v: np.ndarray, ci: float) -> tuple[float, float, float]:
    m, lo, hi = _t_interval(v, ci)
    if not math.isfinite(lo):  # constant values: a point interval
        lo = hi = m
    return m, lo, hi


def _floor(result: CheckResult, method: str, metric: str, sign: float, last: int,
           order: str, min_samples: int) -> tuple[float, str]:
    """Oriented similarity of unrelated maps: the null at full randomization (two fully and
    independently randomized models), else the random-map controls' mean, else 0."""
    note = ""
    if order in ("cascading", "bottom_up") and result.null is not None and not result.null.empty:
        # constant null maps (NaN on a correlation score) make a degenerate floor: say so
        g = result.null[(result.null["method"] == method) & (result.null["stage"] == last)]
        bad = int(g.groupby("sample")["value"].apply(lambda x: bool(x.isna().any())).sum())
        if bad:
            note = f" (constant null maps at full randomization: {bad} of " \
                   f"{g['sample'].nunique()} samples)"
        v = _values(result.null, method, metric, last).dropna()
        if len(v) >= min_samples:
            return sign * float(v.mean()), "null at full randomization" + note
    t = result.table
    rand = [c for c in result.settings.get("controls", []) if c in RANDOM_CONTROLS]
    v = t[t["method"].isin(rand) & (t["metric"] == metric)]["value"].dropna()
    if len(v) >= min_samples:
        return sign * float(v.mean()), "random-map controls" + note
    return 0.0, "zero (no null, no random control)" + note


def _output_change(result: CheckResult, stage: int) -> dict[str, float]:
    for st in result.stages or []:
        if int(st.get("index", -1)) == stage:
            return dict(st.get("output_change") or {})
    return {}


def _model_changed(change: dict[str, float]) -> bool | None:
    """Most predictions changed (agreement < 1/2); None when the run did not record it."""
    agree = change.get("prediction_agreement")
    if agree is None or not math.isfinite(agree):
        return None
    return bool(agree < _HALF)


def stage_verdicts(result: CheckResult, min_samples: int = 5, ci: float = 0.95
                   ) -> pd.DataFrame:
    """One row per method (controls included), score and randomized stage k >= 1 of a model
    randomization result: how much the maps changed, how much the model changed, where the
    similarity sits against the stage's null band, and a reading (:data:`STAGE_RULE`).

    Columns (:data:`STAGE_COLUMNS`), similarities oriented so that higher = more similar:

    - ``similarity_mean``: mean similarity to the trained model's maps (raw units);
      ``map_change_mean/lo/hi``: ``perfect - similarity`` (1 - similarity for correlations and
      SSIM) with its ``ci`` t-interval over samples;
    - ``retained_mean/lo/hi``: ``(similarity - floor) / (perfect - floor)`` per sample, mean and
      t-interval: the share of the similarity the maps kept, 1 = unchanged, 0 = as related as
      the maps of two unrelated random models; ``floor`` and ``floor_source``: the similarity of
      the maps of two fully and independently randomized models (the null at the last stage
      of a cascading or bottom-up run; ``floor_source`` notes how many samples have constant
      null maps there: a degenerate floor), else the mean of the random-map controls, else 0;
    - ``null_mean/lo/hi``: the stage's null band (similarity between the maps of two
      independently randomized models at that stage), ``null_diff_mean/lo/hi``: the paired
      difference similarity - null, and ``vs_null``: ``above``, ``within`` or ``below`` the
      band (``no null`` without one);
    - ``logit_correlation``, ``prediction_agreement``: the stage's output change
      (``result.stages[k]["output_change"]``), ``model_changed``: agreement < 1/2;
    - ``reading``: ``insensitive`` (retained interval above 1/2 while the model changed),
      ``changed`` (retained interval below 1/2), ``ambiguous``, ``model unchanged`` (most
      predictions kept: insensitivity cannot be judged), ``model-independent`` (the floor is
      perfect similarity: the maps never depend on the model), ``too few samples`` (fewer than
      ``min_samples`` non-NaN samples).

    Example:
        >>> from saliency_sanity.checks import CheckResult
        >>> rows = [("m", k, f"L{k}", i, "ssim", v + 0.01 * (i % 3))
        ...         for k, v in ((1, 0.9), (2, 0.1)) for i in range(6)]
        >>> cols = ["method", "stage", "layer", "sample", "metric", "value"]
        >>> table = pd.DataFrame(rows, columns=cols)
        >>> null = table.assign(value=0.0)
        >>> stages = [{"index": k, "output_change": {"prediction_agreement": 0.1,
        ...            "logit_correlation": 0.0}} for k in (0, 1, 2)]
        >>> r = CheckResult(check="model_randomization", table=table, null=null, stages=stages,
        ...                 settings={"order": "cascading"})
        >>> stage_verdicts(r)["reading"].tolist()
        ['insensitive', 'changed']
    """
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    if min_samples < 2:
        raise ValueError(f"min_samples must be >= 2, got {min_samples}")
    if result.check != "model_randomization":
        raise ValueError(f"stage_verdicts needs a model randomization result, got "
                         f"{result.check!r}")
    table = result.table
    if table is None or table.empty:
        return pd.DataFrame(columns=STAGE_COLUMNS)
    order = result.settings.get("order", "cascading")
    controls = set(result.settings.get("controls", []))
    stages = sorted(int(s) for s in table["stage"].unique() if int(s) >= 1)
    if not stages:
        return pd.DataFrame(columns=STAGE_COLUMNS)
    last = stages[-1]
    layer_of = layers_by_stage(table)
    rows: list[dict[str, Any]] = []
    for metric in list(dict.fromkeys(table["metric"])):
        hib, perfect = _score_meta(result, metric)
        sign = 1.0 if hib else -1.0
        po = sign * perfect
        for method in list(dict.fromkeys(table["method"])):
            if not ((table["method"] == method) & (table["metric"] == metric)).any():
                continue
            floor, source = _floor(result, method, metric, sign, last, order, min_samples)
            for k in stages:
                s = _values(table, method, metric, k)
                if s.empty:
                    continue
                change = _output_change(result, k)
                changed_model = _model_changed(change)
                row: dict[str, Any] = {
                    "method": method, "control": method in controls, "metric": metric,
                    "stage": k, "layer": layer_of.get(k, ""), "perfect": perfect,
                    "floor": sign * floor, "floor_source": source,
                    "logit_correlation": change.get("logit_correlation", math.nan),
                    "prediction_agreement": change.get("prediction_agreement", math.nan),
                    "model_changed": changed_model,
                }
                ok = s.dropna()
                row["n"] = int(len(ok))
                so = sign * ok.to_numpy(float)
                row["similarity_mean"] = float(ok.mean()) if len(ok) else math.nan
                row.update(_null_band(result, method, metric, k, ok, sign, ci))
                if len(ok) < min_samples:
                    row["reading"] = "too few samples"
                    rows.append(row)
                    continue
                row["map_change_mean"], row["map_change_lo"], row["map_change_hi"] = (
                    _mean_ci(po - so, ci))
                span = po - floor
                if span <= 1e-9:
                    row["reading"] = "model-independent"
                    rows.append(row)
                    continue
                rm, rlo, rhi = _mean_ci((so - floor) / span, ci)
                row.update(retained_mean=rm, retained_lo=rlo, retained_hi=rhi)
                if rhi < _HALF:
                    row["reading"] = "changed"
                elif changed_model is False:
                    row["reading"] = "model unchanged"
                elif rlo > _HALF:
                    row["reading"] = "insensitive"
                else:
                    row["reading"] = "ambiguous"
                rows.append(row)
    out = pd.DataFrame(rows)
    for c in STAGE_COLUMNS:
        if c not in out:
            out[c] = math.nan
    return out[STAGE_COLUMNS].reset_index(drop=True)


def _null_band(result: CheckResult, method: str, metric: str, stage: int, s: pd.Series,
               sign: float, ci: float) -> dict[str, Any]:
    """The stage's null band and where the (oriented) similarity sits against it (paired)."""
    if result.null is None or result.null.empty:
        return {"vs_null": "no null"}
    null = _values(result.null, method, metric, stage).dropna()
    if len(null) < 2:
        return {"vs_null": "no null"}
    nm, nlo, nhi = _mean_ci(null.to_numpy(float), ci)
    out: dict[str, Any] = {"null_mean": nm, "null_lo": nlo, "null_hi": nhi}
    both = pd.concat([s.rename("s"), null.rename("null")], axis=1, join="inner").dropna()
    if len(both) < 2:
        out["vs_null"] = "no null"
        return out
    d = sign * (both["s"].to_numpy(float) - both["null"].to_numpy(float))
    dm, dlo, dhi = _mean_ci(d, ci)
    out.update(null_diff_mean=dm, null_diff_lo=dlo, null_diff_hi=dhi,
               vs_null="above" if dlo > 0 else "below" if dhi < 0 else "within")
    return out


def stage_headlines(result: CheckResult | pd.DataFrame, main: Sequence[str] = MAIN_SCORES,
                    min_samples: int = 5, ci: float = 0.95) -> pd.DataFrame:
    """One headline per method from :func:`stage_verdicts` (a result or its table).

    A stage reads **insensitive** for a method when every main score present (``spearman_abs``
    and ``ssim``; all scores when neither was computed) reads insensitive, **changed** when
    every one reads changed. ``insensitive_top`` counts the consecutive insensitive stages from
    the first randomized one (the top blocks in cascading order); ``flagged`` is True when it
    is at least 1 or when the maps do not depend on the model at all.

    Columns (:data:`HEADLINE_COLUMNS`): ``method, control, flagged, insensitive_top, headline,
    stages`` (each stage's combined reading, e.g. ``"fc2: insensitive; fc1: changed"``).

    Example:
        >>> sv = pd.DataFrame({"method": ["g", "g"], "control": [False, False],
        ...     "metric": ["ssim", "ssim"], "stage": [1, 2], "layer": ["fc", "conv"],
        ...     "reading": ["insensitive", "changed"], "n": [8, 8],
        ...     "prediction_agreement": [0.1, 0.1], "retained_mean": [0.9, 0.2]})
        >>> stage_headlines(sv)["headline"].tolist()[0][:60]
        'barely changes while the top 1 block is randomized (fc), alt'
    """
    sv = result if isinstance(result, pd.DataFrame) else stage_verdicts(
        result, min_samples=min_samples, ci=ci)
    order = "cascading" if isinstance(result, pd.DataFrame) else result.settings.get(
        "order", "cascading")
    if sv.empty:
        return pd.DataFrame(columns=HEADLINE_COLUMNS)
    used = [m for m in main if m in set(sv["metric"])] or list(dict.fromkeys(sv["metric"]))
    rows = []
    for method, g in sv[sv["metric"].isin(used)].groupby("method", sort=False):
        per_stage = []
        for k, gs in g.groupby("stage", sort=True):
            per_stage.append((int(k), str(gs["layer"].iloc[0]), _combine(list(gs["reading"])),
                              gs))
        readings = [r for _, _, r, _ in per_stage]
        top = 0
        for r in readings:
            if r != "insensitive":
                break
            top += 1
        detail = "; ".join(f"{lay}: {r}" for _, lay, r, _ in per_stage)
        flagged = top >= 1 or (bool(readings) and all(r == "model-independent"
                                                      for r in readings))
        rows.append([method, bool(g["control"].any()), flagged, top,
                     _headline(per_stage, top, order, min_samples), detail])
    return pd.DataFrame(rows, columns=HEADLINE_COLUMNS)


def _combine(readings: list[str]) -> str:
    """One stage's reading over the scores: unanimous readings stand; else ambiguous."""
    for special in ("too few samples", "model-independent", "model unchanged"):
        if special in readings:
            return special
    if all(r == readings[0] for r in readings):
        return readings[0]
    return "ambiguous"


def _headline(per_stage: list[tuple[int, str, str, pd.DataFrame]], top: int, order: str,
              min_samples: int) -> str:
    readings = [r for _, _, r, _ in per_stage]
    layers = [lay for _, lay, _, _ in per_stage]
    if readings and all(r == "model-independent" for r in readings):
        return ("never changes: its maps do not depend on the model (two unrelated random "
                "models give the same maps)")
    if top >= 1:
        agree = pd.concat([gs["prediction_agreement"] for _, _, _, gs in per_stage[:top]])
        agree = agree.dropna()
        where = "top" if order == "cascading" else "first"
        kept = pd.concat([gs["retained_mean"] for _, _, _, gs in per_stage[:top]]).dropna()
        text = (f"barely changes while the {where} {top} block{'s are' if top > 1 else ' is'} "
                f"randomized ({', '.join(layers[:top])}), although the predictions change "
                "completely")
        if len(agree):
            text += (f" (agreement with the trained model {agree.min():.0%}-{agree.max():.0%}"
                     if agree.min() != agree.max() else
                     f" (agreement with the trained model {agree.min():.0%}")
            text += f"; maps keep {kept.min():.0%}-{kept.max():.0%} of their similarity)"
        notes = {src[src.index("(constant") + 1:-1] for _, _, _, gs in per_stage[:top]
                 for src in gs.get("floor_source", pd.Series(dtype=str)).dropna()
                 if "(constant null maps" in src}
        if notes:
            text += ("; caution, degenerate floor: " + "; ".join(sorted(notes))
                     + ", read the per-stage numbers")
        rest = [lay for lay, r in zip(layers[top:], readings[top:], strict=True)
                if r == "insensitive"]
        if rest:
            text += f"; also insensitive at {', '.join(rest)}"
        return text
    if readings and all(r == "changed" for r in readings):
        return "changes with every randomized block"
    if "too few samples" in readings:
        n = min(int(gs["n"].min()) for _, _, _, gs in per_stage)
        return (f"inconclusive: too few samples (n = {n} non-NaN, need {min_samples}) at "
                + ", ".join(lay for lay, r in zip(layers, readings, strict=True)
                            if r == "too few samples"))
    parts = []
    for label in ("changed", "ambiguous", "model unchanged", "insensitive"):
        at = [lay for lay, r in zip(layers, readings, strict=True) if r == label]
        if at:
            parts.append(f"{label} at {', '.join(at)}")
    return "not flagged: " + "; ".join(parts) + (
        " (there the intervals straddle 1/2 or the scores disagree; more samples may decide)"
        if "ambiguous" in readings else "")


def format_stage_summary(result: CheckResult, min_samples: int = 5) -> str:
    """The per-method stage headlines as plain text.

    Example:
        >>> # print(format_stage_summary(result))
    """
    h = stage_headlines(result, min_samples=min_samples)
    if h.empty:
        return "stage verdicts: none (empty result)"
    width = max(len(str(m)) for m in h["method"]) + 2
    lines = ["stage verdicts: " + STAGE_RULE]
    for _, r in h.iterrows():
        tag = " (control)" if r["control"] else ""
        mark = "FLAGGED " if r["flagged"] else "        "
        lines.append(f"  {str(r['method'] + tag):<{width + 10}} {mark}{r['headline']}")
    return "\n".join(lines)
