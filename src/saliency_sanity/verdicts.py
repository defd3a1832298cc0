"""Pass / fail / inconclusive verdicts for each method and score, calibrated per run.

The rule (:data:`RULE` states it in words; the report prints it):

Values are first *oriented* so that higher means more similar (``-value`` for a score whose
``higher_is_better`` is False, e.g. ``mse``). ``P`` is the score's perfect similarity (the top of
its range for correlations and SSIM, 0 for ``mse``): the value a map gets against itself, i.e. the
value at stage 0, the trained model. At the judged stage ``K`` (the last stage, full randomization,
for the cascading and bottom-up orders; every block for the independent order; the random-label
model for data randomization), per sample ``i``:

* ``d_i = s_K,i - null_K,i``: the method's similarity minus the null reference on the same
  sample. The null is the similarity between the maps of two independently randomized models at
  the same stage (``result.null``); for data randomization, which has no null, it is the mean
  similarity of the run's random-map controls on that sample.
* ``e_i = P - s_K,i``: how far the maps moved away from the trained model's maps.
* the margin ``delta = margin * (P - chance)`` (default ``margin = 0.1``), where ``chance`` is
  the mean similarity of the run's random-map controls (``random_gaussian``, ``random_uniform``)
  on that score at that stage: a tenth of the distance between noise and perfect similarity, so
  the rule scales with the score and the run (``chance`` falls back to the method's null mean
  when the run has no random-map control).

With 95% t-intervals ``CI(d)`` and ``CI(e)`` of the means over the samples:

* **null-like** when ``hi CI(d) <= delta`` (indistinguishable from, or below, the null);
  **above null** when ``lo CI(d) > delta``; otherwise ambiguous.
* **changed** when ``lo CI(e) > delta`` (clearly below the trained model's value);
  **unchanged** when ``hi CI(e) <= delta``; otherwise ambiguous.
* verdict: **pass** = null-like and changed; **fail** = above null or unchanged;
  **inconclusive** otherwise, or with fewer than ``min_samples`` (5) paired non-NaN samples, or
  without a null reference. An invalid data randomization run gives **invalid** everywhere.

Per method, :func:`method_summary` combines the paper's main scores (``spearman_abs`` and
``ssim``, or every score when neither was computed): **pass** if every main-score verdict is pass,
**fail** if any is fail, otherwise inconclusive.

Random-map controls pass this rule trivially (their maps never resembled anything: Binder et al.
2023); the edge detector fails (its maps do not depend on the model at all). A method's pass means
it behaves as parameter-dependent as noise at full randomization, not that it is a good
explanation.

Example:
    >>> import pandas as pd
    >>> from saliency_sanity.checks import CheckResult
    >>> rows = [("m", k, str(k), i, "spearman_abs", v)
    ...         for k, base in ((1, 0.5), (2, 0.0)) for i, v in enumerate([base + 0.01 * j
    ...         for j in (-2, -1, 0, 1, 2, 0)])]
    >>> cols = ["method", "stage", "layer", "sample", "metric", "value"]
    >>> table = pd.DataFrame(rows, columns=cols)
    >>> null = table.assign(value=table["value"] * 0)
    >>> r = CheckResult(check="model_randomization", table=table, null=null, settings={
    ...     "order": "cascading", "scores": {"spearman_abs": {"range": [-1, 1],
    ...     "higher_is_better": True}}})
    >>> verdicts(r)[["method", "metric", "verdict"]].values.tolist()
    [['m', 'spearman_abs', 'pass']]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .results import CheckResult

__all__ = [
    "RULE", "MAIN_SCORES", "verdicts", "method_summary", "VERDICT_COLUMNS", "STAGE_RULE",
    "STAGE_COLUMNS", "HEADLINE_COLUMNS", "stage_verdicts", "stage_headlines",
    "format_stage_summary",
]

MAIN_SCORES = ("spearman_abs", "ssim")
RANDOM_CONTROLS = ("random_gaussian", "random_uniform")

RULE = (
    "Similarities are oriented so that higher = more similar (mse is negated). P is the score's "
    "perfect similarity (a map compared with itself: the trained model, stage 0). At the judged "
    "stage K (the last stage for cascading and bottom-up randomization, each block for "
    "independent randomization, the random-label model for data randomization), for each sample: "
    "d = similarity - null, where the null is the similarity between the maps of two "
    "independently randomized models at the same stage (data randomization has no null: the mean "
    "similarity of the run's random-map controls is used), and e = P - similarity. The margin is "
    "delta = {margin:g} x (P - chance), chance = the mean similarity of the run's random-map "
    "controls on that score and stage (the null mean when the run has none). With 95% "
    "t-intervals of the means over samples: "
    "null-like if upper(d) <= delta, above the null if lower(d) > delta; changed if lower(e) > "
    "delta, unchanged if upper(e) <= delta. PASS = null-like and changed; FAIL = above the null "
    "or unchanged; INCONCLUSIVE otherwise, with fewer than {min_samples} paired samples, or "
    "without a null. Per method: PASS if every main score ({main}) passes, FAIL if any fails, "
    "else INCONCLUSIVE. Random-map controls pass trivially (noise resembles nothing: Binder et "
    "al. 2023), so a pass says a method is as parameter-dependent as noise at full "
    "randomization, not that it explains well; the edge detector fails (it ignores the model)."
)

VERDICT_COLUMNS = [
    "method", "control", "metric", "stage", "layer", "verdict", "reason", "n",
    "first_stage_mean", "last_stage_mean", "null_mean", "chance", "perfect", "delta",
    "diff_mean", "diff_lo", "diff_hi", "p_value", "change_mean", "change_lo", "change_hi",
]


def rule_text(margin: float = 0.1, min_samples: int = 5,
              main: Sequence[str] = MAIN_SCORES) -> str:
    """The verdict rule in words, with the run's parameters filled in.

    Example:
        >>> "null-like" in rule_text()
        True
    """
    return RULE.format(margin=margin, min_samples=min_samples, main=" and ".join(main))


def _t_interval(v: np.ndarray, ci: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided ``ci`` t-interval of the mean (a point interval when all values are
    equal)."""
    from scipy import stats

    n = v.size
    mean = float(v.mean())
    sd = float(v.std(ddof=1)) if n > 1 else math.nan
    if n < 2 or not math.isfinite(sd):
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + ci / 2, n - 1) * sd / math.sqrt(n))
    return mean, mean - half, mean + half


def _paired_p(d: np.ndarray) -> float:
    """Two-sided p-value of the paired t-test of mean(d) = 0 (NaN when d is constant)."""
    from scipy import stats

    if d.size < 2 or float(np.ptp(d)) == 0.0:
        return math.nan
    return float(stats.ttest_1samp(d, 0.0).pvalue)


def _score_meta(result: CheckResult, metric: str) -> tuple[bool, float]:
    """(higher_is_better, perfect similarity P in raw units) for ``metric``."""
    meta = (result.settings.get("scores") or {}).get(metric)
    if meta is None:
        try:
            from . import scores as _scores

            meta = _scores.get(metric).settings()
        except Exception:
            meta = {}
    hib = bool(meta.get("higher_is_better", True))
    rng = meta.get("range") or ([-1.0, 1.0] if hib else [0.0, math.inf])
    perfect = float(rng[1] if hib else rng[0])
    if not math.isfinite(perfect):
        perfect = 1.0 if hib else 0.0
    return hib, perfect


def _values(table: pd.DataFrame, method: str, metric: str, stage: int) -> pd.Series:
    g = table[(table["method"] == method) & (table["metric"] == metric)
              & (table["stage"] == stage)]
    return g.groupby("sample")["value"].mean()


def _judge(s: pd.Series, null: pd.Series | None, sign: float, perfect: float,
           margin: float, min_samples: int, ci: float, chance: float | None) -> dict[str, Any]:
    out: dict[str, Any] = {"n": 0}
    if null is None or null.empty:
        out["verdict"] = "inconclusive"
        out["reason"] = "no null reference in this run (rerun with null_reference=True)"
        ok = s.dropna()
        out["last_stage_mean"] = float(ok.mean()) if len(ok) else math.nan
        out["n"] = int(len(ok))
        return out
    both = pd.concat([s.rename("s"), null.rename("null")], axis=1, join="inner").dropna()
    n = len(both)
    out["n"] = n
    out["last_stage_mean"] = float(both["s"].mean()) if n else math.nan
    out["null_mean"] = float(both["null"].mean()) if n else math.nan
    if n < min_samples:
        out["verdict"] = "inconclusive"
        out["reason"] = (f"only {n} paired non-NaN samples (need {min_samples}); "
                         "use more samples")
        return out
    so = sign * both["s"].to_numpy(float)
    no = sign * both["null"].to_numpy(float)
    po = sign * perfect
    base = sign * chance if chance is not None and math.isfinite(chance) else float(no.mean())
    delta = margin * max(po - base, 0.0)
    d = so - no
    e = po - so
    dm, dlo, dhi = _t_interval(d, ci)
    em, elo, ehi = _t_interval(e, ci)
    if not math.isfinite(dlo):  # constant values: point intervals
        dlo = dhi = dm
    if not math.isfinite(elo):
        elo = ehi = em
    out.update(delta=delta, diff_mean=dm, diff_lo=dlo, diff_hi=dhi, p_value=_paired_p(d),
               change_mean=em, change_lo=elo, change_hi=ehi)
    null_like, above = dhi <= delta, dlo > delta
    changed, unchanged = elo > delta, ehi <= delta
    if above or unchanged:
        out["verdict"] = "fail"
        why = []
        if above:
            why.append(f"more similar than the null: CI of the difference [{dlo:.3g}, {dhi:.3g}]"
                       f" lies above the margin {delta:.3g}")
        if unchanged:
            why.append(f"maps did not change: CI of P - similarity [{elo:.3g}, {ehi:.3g}] "
                       f"within the margin {delta:.3g}")
        out["reason"] = "; ".join(why)
    elif null_like and changed:
        out["verdict"] = "pass"
        out["reason"] = (f"null-like (CI of the difference [{dlo:.3g}, {dhi:.3g}] <= {delta:.3g})"
                         f" and changed (CI of P - similarity [{elo:.3g}, {ehi:.3g}] > "
                         f"{delta:.3g})")
    else:
        out["verdict"] = "inconclusive"
        parts = []
        if not null_like:
            parts.append(f"CI of the difference to the null [{dlo:.3g}, {dhi:.3g}] straddles "
                         f"the margin {delta:.3g}")
        if not changed:
            parts.append(f"CI of P - similarity [{elo:.3g}, {ehi:.3g}] straddles the margin "
                         f"{delta:.3g}")
        out["reason"] = "; ".join(parts) + "; more samples may decide"
    return out


def verdicts(result: CheckResult, margin: float = 0.1, min_samples: int = 5,
             ci: float = 0.95) -> pd.DataFrame:
    """One verdict per method (controls included), score and judged stage.

    Columns (:data:`VERDICT_COLUMNS`): ``method, control, metric, stage, layer, verdict, reason,
    n`` (paired non-NaN samples), ``first_stage_mean`` (mean similarity at the first randomized
    stage), ``last_stage_mean`` (at the judged stage), ``null_mean``, ``chance`` (the random
    controls' mean), ``perfect`` (P), ``delta`` (the margin, oriented units),
    ``diff_mean/lo/hi`` (mean and CI of similarity - null, oriented), ``p_value`` (two-sided
    paired t-test of that difference = 0), ``change_mean/lo/hi`` (mean and CI of
    P - similarity, oriented). See the module docstring for the rule.

    Example:
        >>> # verdicts(CheckResult.load("runs/demo"))
    """
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    if min_samples < 2:
        raise ValueError(f"min_samples must be >= 2, got {min_samples}")
    table = result.table
    if table is None or table.empty:
        return pd.DataFrame(columns=VERDICT_COLUMNS)
    controls = set(result.settings.get("controls", []))
    order = result.settings.get("order", "cascading")
    data_check = result.check == "data_randomization"
    invalid = data_check and result.settings.get("valid") is False
    stages = sorted(int(s) for s in table["stage"].unique())
    first = stages[0]
    if data_check or order != "independent":
        judged = [stages[-1]]
    else:
        judged = stages
    layer_of = (table.drop_duplicates("stage").set_index("stage")["layer"].astype(str)
                .to_dict())
    rows: list[dict[str, Any]] = []
    for metric in list(dict.fromkeys(table["metric"])):
        hib, perfect = _score_meta(result, metric)
        sign = 1.0 if hib else -1.0
        for method in list(dict.fromkeys(table["method"])):
            for k in judged:
                s = _values(table, method, metric, k)
                if s.empty:
                    continue
                f = _values(table, method, metric, first).dropna()
                row: dict[str, Any] = {
                    "method": method, "control": method in controls, "metric": metric,
                    "stage": k, "layer": layer_of.get(k, ""), "perfect": perfect,
                    "first_stage_mean": float(f.mean()) if len(f) else math.nan,
                }
                if invalid:
                    ok = s.dropna()
                    row.update(verdict="invalid", n=int(len(ok)),
                               last_stage_mean=float(ok.mean()) if len(ok) else math.nan,
                               reason="invalid run: " + str(result.settings.get(
                                   "invalid_reason", "the random-label model did not memorize")))
                else:
                    null = _null_values(result, method, metric, k, data_check)
                    chance = _chance(result, metric, k)
                    row.update(_judge(s, null, sign, perfect, margin, min_samples, ci, chance))
                    row["chance"] = chance if chance is not None else math.nan
                rows.append(row)
    out = pd.DataFrame(rows)
    for c in VERDICT_COLUMNS:
        if c not in out:
            out[c] = math.nan
    return out[VERDICT_COLUMNS].reset_index(drop=True)


def _chance(result: CheckResult, metric: str, stage: int) -> float | None:
    """Mean similarity of the run's random-map controls on ``metric`` at ``stage`` (raw units)."""
    t = result.table
    rand = [c for c in result.settings.get("controls", []) if c in RANDOM_CONTROLS]
    v = t[t["method"].isin(rand) & (t["metric"] == metric) & (t["stage"] == stage)]["value"]
    v = v.dropna()
    return float(v.mean()) if len(v) else None


def _null_values(result: CheckResult, method: str, metric: str, stage: int,
                 data_check: bool) -> pd.Series | None:
    if not data_check:
        if result.null is None or result.null.empty:
            return None
        return _values(result.null, method, metric, stage)
    t = result.table
    rand = [c for c in result.settings.get("controls", []) if c in RANDOM_CONTROLS]
    g = t[t["method"].isin(rand) & (t["metric"] == metric) & (t["stage"] == stage)]
    if g.empty:
        return None
    return g.groupby("sample")["value"].mean()


def method_summary(v: pd.DataFrame, main: Sequence[str] = MAIN_SCORES) -> pd.DataFrame:
    """One verdict per method from :func:`verdicts`' table: over the main scores present (all
    scores when none of ``main`` was computed) and every judged stage, **pass** if all pass,
    **fail** if any fails, **invalid** if the run is invalid, otherwise inconclusive.

    Columns: ``method, control, verdict, scores`` (e.g. ``"spearman_abs: pass; ssim: fail"``).

    Example:
        >>> v = pd.DataFrame({"method": ["g", "g"], "control": [False, False],
        ...                   "metric": ["spearman_abs", "ssim"], "verdict": ["pass", "fail"]})
        >>> method_summary(v)["verdict"].tolist()
        ['fail']
    """
    cols = ["method", "control", "verdict", "scores"]
    if v.empty:
        return pd.DataFrame(columns=cols)
    used = [m for m in main if m in set(v["metric"])] or list(dict.fromkeys(v["metric"]))
    rows = []
    for method, g in v.groupby("method", sort=False):
        g = g[g["metric"].isin(used)]
        vs = list(g["verdict"])
        if any(x == "invalid" for x in vs):
            verdict = "invalid"
        elif any(x == "fail" for x in vs):
            verdict = "fail"
        elif vs and all(x == "pass" for x in vs):
            verdict = "pass"
        else:
            verdict = "inconclusive"
        detail = "; ".join(
            f"{m}: {'/'.join(g[g['metric'] == m]['verdict'])}" for m in used
            if (g["metric"] == m).any()
        )
        rows.append([method, bool(g["control"].any()) if len(g) else False, verdict, detail])
    return pd.DataFrame(rows, columns=cols)


def format_summary(result: CheckResult, margin: float = 0.1, min_samples: int = 5) -> str:
    """A short plain-text table of the per-method verdicts (printed at the end of a run).

    Example:
        >>> # print(format_summary(result))
    """
    s = method_summary(verdicts(result, margin=margin, min_samples=min_samples))
    if s.empty:
        return "verdicts: none (empty result)"
    width = max(len(str(m)) for m in s["method"]) + 2
    lines = ["verdicts (main scores: " + ", ".join(
        m for m in MAIN_SCORES if m in set(result.table["metric"])) + "):"]
    for _, r in s.iterrows():
        tag = " (control)" if r["control"] else ""
        lines.append(f"  {str(r['method'] + tag):<{width + 10}} {r['verdict'].upper():<13} "
                     f"{r['scores']}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# per-stage verdicts: how much the maps changed at each stage, against how much the model did
# ---------------------------------------------------------------------------------------------
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
    layer_of = (table.drop_duplicates("stage").set_index("stage")["layer"].astype(str)
                .to_dict())
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
