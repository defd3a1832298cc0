"""Pass / fail / inconclusive verdicts for each method and score at the end of a run.

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

from ..results import CheckResult

__all__ = ["RULE", "MAIN_SCORES", "verdicts", "method_summary", "VERDICT_COLUMNS"]

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
            from .. import scores as _scores

            meta = _scores.get(metric).settings()
        except Exception:
            meta = {}
    hib = bool(meta.get("higher_is_better", True))
    rng = meta.get("range") or ([-1.0, 1.0] if hib else [0.0, math.inf])
    perfect = float(rng[1] if hib else rng[0])
    if not math.isfinite(perfect):
        perfect = 1.0 if hib else 0.0
    return hib, perfect


def layers_by_stage(table: pd.DataFrame) -> dict[int, str]:
    """Each stage's layer label in a results table.

    Example:
        >>> layers_by_stage(pd.DataFrame({"stage": [1, 1, 2], "layer": ["fc", "fc", "conv"]}))
        {1: 'fc', 2: 'conv'}
    """
    return table.drop_duplicates("stage").set_index("stage")["layer"].astype(str).to_dict()


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
    layer_of = layers_by_stage(table)
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
