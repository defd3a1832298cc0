"""The verdict of the data randomization test: do a method's maps depend on the labels the
model learnt?

The rule (:data:`DATA_RULE` states it in words; the report prints it). Values are first
*oriented* so that higher means more similar (``-value`` for a score whose ``higher_is_better``
is False, e.g. ``mse``). ``P`` is the score's perfect similarity (the top of its range for
correlations and SSIM, 0 for ``mse``). Per sample ``i``, comparing the maps of the model trained
on random labels with those of the model trained on the true labels:

* ``d_i = s_i - chance_i``: the similarity minus the mean similarity of the run's random-map
  controls (``random_gaussian``, ``random_uniform``) on the same sample;
* ``e_i = P - s_i``: how far the maps moved away from the true-label model's maps;
* the margin ``delta = margin * (P - chance)`` (default ``margin = 0.1``), ``chance`` the mean
  of the random-map controls: a tenth of the distance between noise and perfect similarity.

With 95% t-intervals ``CI(d)`` and ``CI(e)`` of the means over the samples: **pass** when
``hi CI(d) <= delta`` (as unrelated as noise) and ``lo CI(e) > delta`` (changed); **flagged**
when ``lo CI(d) > delta`` or ``hi CI(e) <= delta`` (the maps barely depend on the labels);
**inconclusive** otherwise, with fewer than ``min_samples`` (5) paired non-NaN samples, or
without a random-map control; **invalid** everywhere when the random-label model did not
memorize its labels (``settings["valid"] is False``). Per method the main scores combine:
flagged if any is flagged, pass if all pass, else inconclusive.

The model randomization test has its own question and rule (:mod:`.verdict`); this one is not
applied to it.

Example:
    >>> import pandas as pd
    >>> from saliency_sanity.checks import CheckResult
    >>> rows = [(m, 1, "random_labels", i, "ssim", 0.01 * (i % p))
    ...         for m, p in (("g", 2), ("random_gaussian", 3)) for i in range(6)]
    >>> cols = ["method", "stage", "layer", "sample", "metric", "value"]
    >>> r = CheckResult(check="data_randomization", table=pd.DataFrame(rows, columns=cols),
    ...                 settings={"controls": ["random_gaussian"], "valid": True})
    >>> data_verdicts(r)[["method", "verdict"]].values.tolist()
    [['g', 'pass'], ['random_gaussian', 'pass']]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..results import CheckResult
from ._common import (
    MAIN_SCORES,
    RANDOM_CONTROLS,
    _main_used,
    _score_meta,
    _t_interval,
    _values,
    require_declared,
)

__all__ = ["DATA_COLUMNS", "DATA_RULE", "data_method_verdicts", "data_rule_text",
           "data_verdict_line", "data_verdicts"]

DATA_RULE = (
    "Similarities between the maps of the model trained on random labels and those of the "
    "model trained on the true labels are oriented so that higher = more similar (mse is "
    "negated); P is the score's perfect similarity. For each sample: d = similarity - chance, "
    "chance = the mean similarity of the run's random-map controls on that sample, and "
    "e = P - similarity. The margin is delta = {margin:g} x (P - chance). With 95% "
    "t-intervals of the means over samples: PASS = upper(d) <= delta and lower(e) > delta; "
    "FLAGGED = lower(d) > delta or upper(e) <= delta (the maps barely depend on the labels); "
    "INCONCLUSIVE otherwise, with fewer than {min_samples} paired samples, or without a "
    "random-map control; INVALID when the random-label model did not memorize. Per method: "
    "FLAGGED if any main score ({main}) is flagged, PASS if all pass, else INCONCLUSIVE."
)

#: Columns of :func:`data_verdicts` (one row per method and score).
DATA_COLUMNS = [
    "method", "control", "metric", "stage", "layer", "verdict", "reason", "n",
    "last_stage_mean", "null_mean", "chance", "perfect", "delta",
    "diff_mean", "diff_lo", "diff_hi", "p_value", "change_mean", "change_lo", "change_hi",
]


def data_rule_text(margin: float = 0.1, min_samples: int = 5,
                   main: Sequence[str] = MAIN_SCORES) -> str:
    """The data randomization rule in words, with the run's parameters filled in.

    Example:
        >>> "delta = 0.2 x" in data_rule_text(margin=0.2)
        True
    """
    return DATA_RULE.format(margin=margin, min_samples=min_samples, main=" and ".join(main))


def _paired_p(d: np.ndarray) -> float:
    """Two-sided p-value of the paired t-test of mean(d) = 0 (NaN when d is constant)."""
    from scipy import stats

    if d.size < 2 or float(np.ptp(d)) == 0.0:
        return math.nan
    return float(stats.ttest_1samp(d, 0.0).pvalue)



def _judge(s: pd.Series, null: pd.Series | None, sign: float, perfect: float,
           margin: float, min_samples: int, ci: float, chance: float | None) -> dict[str, Any]:
    out: dict[str, Any] = {"n": 0}
    if null is None or null.empty:
        out["verdict"] = "inconclusive"
        out["reason"] = ("no random-map control in this run to compare with (rerun with the "
                         "default controls)")
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
        out["verdict"] = "flagged"
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


def data_verdicts(result: CheckResult, margin: float = 0.1, min_samples: int = 5,
                  ci: float = 0.95) -> pd.DataFrame:
    """One verdict per method (controls included) and score of a data randomization result.

    Columns (:data:`DATA_COLUMNS`): ``method, control, metric, stage, layer, verdict`` (pass /
    flagged / inconclusive / invalid), ``reason, n`` (paired non-NaN samples),
    ``last_stage_mean`` (mean similarity of the random-label model's maps to the true-label
    model's), ``null_mean`` (the random-map controls' mean on the same samples), ``chance``,
    ``perfect`` (P), ``delta`` (the margin, oriented units), ``diff_mean/lo/hi`` (similarity -
    null, oriented), ``p_value`` (two-sided paired t-test of that difference = 0, for
    reference), ``change_mean/lo/hi`` (P - similarity, oriented). The module docstring states
    the rule.

    Example:
        >>> import pandas as pd
        >>> from saliency_sanity.checks import CheckResult
        >>> t = pd.DataFrame({"method": ["g"] * 6, "stage": 1, "layer": "random_labels",
        ...     "sample": range(6), "metric": "ssim", "value": 0.9})
        >>> data_verdicts(CheckResult(check="data_randomization", table=t,
        ...               settings={"valid": True}))["verdict"].tolist()
        ['inconclusive']
    """
    require_declared(result, "judge", data_verdicts)
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    if min_samples < 2:
        raise ValueError(f"min_samples must be >= 2, got {min_samples}")
    table = result.table
    if table is None or table.empty:
        return pd.DataFrame(columns=DATA_COLUMNS)
    controls = set(result.settings.get("controls", []))
    invalid = result.settings.get("valid") is False
    k = max(int(s) for s in table["stage"].unique())
    layer = str(table[table["stage"] == k]["layer"].iloc[0])
    rows: list[dict[str, Any]] = []
    for metric in list(dict.fromkeys(table["metric"])):
        hib, perfect = _score_meta(result, metric)
        sign = 1.0 if hib else -1.0
        for method in list(dict.fromkeys(table["method"])):
            s = _values(table, method, metric, k)
            if s.empty:
                continue
            row: dict[str, Any] = {"method": method, "control": method in controls,
                                   "metric": metric, "stage": k, "layer": layer,
                                   "perfect": perfect}
            if invalid:
                ok = s.dropna()
                row.update(verdict="invalid", n=int(len(ok)),
                           last_stage_mean=float(ok.mean()) if len(ok) else math.nan,
                           reason="invalid run: " + str(result.settings.get(
                               "invalid_reason", "the random-label model did not memorize")))
            else:
                null = _null_values(result, metric, k)
                chance = _chance(result, metric, k)
                row.update(_judge(s, null, sign, perfect, margin, min_samples, ci, chance))
                row["chance"] = chance if chance is not None else math.nan
            rows.append(row)
    out = pd.DataFrame(rows)
    for c in DATA_COLUMNS:
        if c not in out:
            out[c] = math.nan
    return out[DATA_COLUMNS].reset_index(drop=True)


def _chance(result: CheckResult, metric: str, stage: int) -> float | None:
    """Mean similarity of the run's random-map controls on ``metric`` at ``stage`` (raw units)."""
    t = result.table
    rand = [c for c in result.settings.get("controls", []) if c in RANDOM_CONTROLS]
    v = t[t["method"].isin(rand) & (t["metric"] == metric) & (t["stage"] == stage)]["value"]
    v = v.dropna()
    return float(v.mean()) if len(v) else None


def _null_values(result: CheckResult, metric: str, stage: int) -> pd.Series | None:
    """Per sample, the mean similarity of the random-map controls (the null of this test)."""
    t = result.table
    rand = [c for c in result.settings.get("controls", []) if c in RANDOM_CONTROLS]
    g = t[t["method"].isin(rand) & (t["metric"] == metric) & (t["stage"] == stage)]
    if g.empty:
        return None
    return g.groupby("sample")["value"].mean()


def data_method_verdicts(result: CheckResult, margin: float = 0.1, min_samples: int = 5,
                         ci: float = 0.95, main: Sequence[str] = MAIN_SCORES
                         ) -> list[dict[str, Any]]:
    """One row per method for :func:`saliency_sanity.verdicts.verdict`: the main scores'
    verdicts combined (invalid, else flagged if any is flagged, pass if all pass, else
    inconclusive), a headline and the per-score detail.

    Example:
        >>> import pandas as pd
        >>> from saliency_sanity.checks import CheckResult
        >>> t = pd.DataFrame({"method": ["g"] * 6, "stage": 1, "layer": "random_labels",
        ...     "sample": range(6), "metric": "ssim", "value": 0.9})
        >>> r = CheckResult(check="data_randomization", table=t, settings={"valid": False})
        >>> data_method_verdicts(r)[0]["verdict"]
        'invalid'
    """
    v = data_verdicts(result, margin=margin, min_samples=min_samples, ci=ci)
    if v.empty:
        return []
    used = _main_used(list(v["metric"]), tuple(main))
    rows = []
    for method, g in v.groupby("method", sort=False):
        g = g[g["metric"].isin(used)]
        vs = list(g["verdict"])
        detail = "; ".join(f"{m}: {x}" for m, x in zip(g["metric"], vs, strict=True))
        if "invalid" in vs:
            verdict, text = "invalid", str(g["reason"].iloc[0])
        elif "flagged" in vs:
            verdict = "flagged"
            text = ("its maps barely depend on the labels the model learnt: the random-label "
                    "model's maps stay closer to the true-label model's maps than noise")
        elif vs and all(x == "pass" for x in vs):
            verdict = "pass"
            text = ("its maps depend on the labels: the random-label model's maps are as "
                    "unrelated to the true-label model's maps as noise")
        else:
            verdict = "inconclusive"
            text = "inconclusive: " + "; ".join(
                f"{m}: {r}" for m, x, r in zip(g["metric"], vs, g["reason"], strict=True)
                if x == "inconclusive")
        rows.append({"method": method, "control": bool(g["control"].any()) if len(g) else False,
                     "verdict": verdict, "headline": text,
                     "ignores": "the labels" if verdict == "flagged" else "",
                     "stages": detail})
    return rows


def data_verdict_line(row: pd.Series | Mapping[str, Any]) -> str:
    """A method's text in :func:`saliency_sanity.verdicts.format_verdict` (the data
    randomization ``Verdict.line`` hook): its headline, then each main score's verdict.

    Example:
        >>> data_verdict_line({"headline": "its maps depend on the labels",
        ...                    "stages": "ssim: pass; spearman_abs: pass"})
        'its maps depend on the labels (ssim: pass; spearman_abs: pass)'
    """
    return f"{row['headline']} ({row['stages']})"
