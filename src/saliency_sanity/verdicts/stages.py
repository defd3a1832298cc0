"""The per-stage table of the model randomization verdict: at each stage, how much the maps
changed against how much the model did, and a reading per method and score.

:func:`saliency_sanity.verdicts.verdict` reads this table; docs/verdicts.md gives the rule and
its reasons (:data:`saliency_sanity.verdicts.RULE` states it in words).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from ..results import CheckResult
from ._common import (
    RANDOM_CONTROLS,
    _score_meta,
    _t_interval,
    _values,
    layers_by_stage,
    require_declared,
)

STAGE_COLUMNS = [
    "method", "control", "metric", "stage", "layer", "reading", "n",
    "similarity_mean", "map_change_mean", "map_change_lo", "map_change_hi",
    "retained_mean", "retained_lo", "retained_hi", "floor", "floor_source", "perfect",
    "null_mean", "null_lo", "null_hi", "null_diff_mean", "null_diff_lo", "null_diff_hi",
    "vs_null", "logit_correlation", "prediction_agreement", "model_changed",
]

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
    similarity sits against the stage's null band, and a reading (the first half of
    :data:`saliency_sanity.verdicts.RULE`).

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
    require_declared(result, "stages", stage_verdicts)
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
