"""Rank methods by each check and measure how much the checks agree (Binder et al. 2023, claim 3).

Each check gives every method one number (mean over samples of one metric at one stage):

==================================  =============================  ===========================
check (``CheckResult.check``)       stage, metric                  better
==================================  =============================  ===========================
model_randomization                 last stage, ``metric``         lower similarity
smooth_model_randomization          last stage, ``metric``         lower similarity
efficient_model_randomization       last stage, ``emprt``          higher q
random_logit                        stage 1, ``metric``            lower similarity
data_randomization                  stage 1, ``metric``            lower similarity
==================================  =============================  ===========================

"Lower similarity" uses the score's ``higher_is_better`` (for ``mse``, a dissimilarity, higher
is better). Rank 1 is the best method; ties get the average rank. Kendall's tau
(``scipy.stats.kendalltau``, tau-b) between two checks' rankings is computed over the methods both
rank.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from .. import scores as _scores
from ._result import CheckResult

HIGHER_IS_BETTER_METRICS = {"emprt": True}


def _check_name(key: str, result: Any) -> str:
    if isinstance(result, CheckResult):
        return result.check
    return key


def _controls(result: Any) -> set[str]:
    if isinstance(result, CheckResult):
        return set(result.settings.get("controls", []))
    return set()


def _table(result: Any) -> pd.DataFrame:
    if isinstance(result, CheckResult):
        return result.table
    if isinstance(result, pd.DataFrame):
        return result
    raise TypeError(f"results must be CheckResult objects or tables, got {type(result).__name__}")


def _higher_is_better(metric: str) -> bool:
    """True when a higher value of ``metric`` means a better method."""
    if metric in HIGHER_IS_BETTER_METRICS:
        return HIGHER_IS_BETTER_METRICS[metric]
    try:
        score = _scores.get(metric)
    except KeyError as err:
        raise ValueError(f"cannot tell whether a higher {metric!r} is better; pass "
                         f"directions={{{metric!r}: True or False}}") from err
    return not score.higher_is_better  # a similarity: lower similarity is better


def method_scores(
    results: Mapping[str, CheckResult | pd.DataFrame],
    metric: str = "spearman_abs",
    metrics: Mapping[str, str] | None = None,
    include_controls: bool = False,
) -> pd.DataFrame:
    """One number per method and check: the mean over samples (NaN left out) of the check's
    metric at its last stage (``metrics[key]`` overrides ``metric`` for a check; eMPRT uses
    ``"emprt"``). Rows: methods; columns: the keys of ``results``.

    Example:
        >>> t = pd.DataFrame({"method": ["a", "b"], "stage": [1, 1], "layer": ["x", "x"],
        ...                   "sample": [0, 0], "metric": ["spearman", "spearman"],
        ...                   "value": [0.2, 0.9]})
        >>> method_scores({"random_logit": t}, metric="spearman")["random_logit"].tolist()
        [0.2, 0.9]
    """
    cols = {}
    for key, result in results.items():
        table = _table(result)
        name = _check_name(key, result)
        m = (metrics or {}).get(key) or ("emprt" if "efficient" in name else metric)
        sub = table[table["metric"] == m]
        if sub.empty:
            raise ValueError(f"{key!r} has no rows for metric {m!r}; it has "
                             f"{sorted(table['metric'].unique())}")
        sub = sub[sub["stage"] == sub["stage"].max()]
        if not include_controls:
            sub = sub[~sub["method"].isin(_controls(result))]
        cols[key] = sub.groupby("method", sort=True)["value"].mean()
    out = pd.DataFrame(cols)
    out.index.name = "method"
    return out


def method_ranking(
    results: Mapping[str, CheckResult | pd.DataFrame],
    metric: str = "spearman_abs",
    metrics: Mapping[str, str] | None = None,
    directions: Mapping[str, bool] | None = None,
    include_controls: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rank the methods by each check and compare the rankings with Kendall's tau.

    Args:
        results: ``{name: CheckResult or table}``, e.g. ``{"MPRT": mprt, "sMPRT": smprt,
            "eMPRT": emprt, "random logit": rl, "data randomization": dr}``. A plain table's key
            must be a check name (see the module docs) or its metric's direction is read from the
            scores registry.
        metric: the similarity score used by the similarity checks (default ``spearman_abs``).
        metrics: per-key metric overrides.
        directions: per-metric ``higher_is_better`` overrides (for metrics outside the registry).
        include_controls: rank the controls too (they often rank first: Binder et al.'s claim 1).

    Returns:
        ``(ranks, tau)``: ``ranks`` has one row per method and one column per check (1 = best,
        average ranks for ties, NaN where a check lacks the method); ``ranks.attrs["scores"]``
        holds the underlying means. ``tau`` is the symmetric check x check matrix of Kendall's
        tau-b over the methods both checks rank (NaN with fewer than 2 common methods);
        ``tau.attrs["pvalue"]`` and ``tau.attrs["n"]`` hold the p-values and method counts.

    Example:
        >>> t1 = pd.DataFrame({"method": ["a", "b", "c"], "stage": 1, "layer": "x", "sample": 0,
        ...                    "metric": "spearman", "value": [0.1, 0.5, 0.9]})
        >>> t2 = t1.assign(value=[0.9, 0.5, 0.1])
        >>> ranks, tau = method_ranking({"random_logit": t1, "data_randomization": t2},
        ...                             metric="spearman")
        >>> ranks["random_logit"].tolist(), float(tau.loc["random_logit", "data_randomization"])
        ([1.0, 2.0, 3.0], -1.0)
    """
    if not results:
        raise ValueError("results is empty: pass at least one check result")
    means = method_scores(results, metric, metrics, include_controls)
    ranks = pd.DataFrame(index=means.index)
    for key in means.columns:
        result = results[key]
        name = _check_name(key, result)
        m = (metrics or {}).get(key) or ("emprt" if "efficient" in name else metric)
        hib = (directions or {}).get(m)
        if hib is None:
            hib = _higher_is_better(m)
        ranks[key] = means[key].rank(ascending=not hib, method="average")
    ranks.attrs["scores"] = means
    keys = list(ranks.columns)
    tau = pd.DataFrame(np.nan, index=keys, columns=keys)
    pval = tau.copy()
    count = pd.DataFrame(0, index=keys, columns=keys)
    for i, a in enumerate(keys):
        for b in keys[i:]:
            both = ranks[[a, b]].dropna()
            count.loc[a, b] = count.loc[b, a] = len(both)
            if len(both) < 2:
                continue
            res = stats.kendalltau(both[a], both[b])
            tau.loc[a, b] = tau.loc[b, a] = float(res.statistic)
            pval.loc[a, b] = pval.loc[b, a] = float(res.pvalue)
    tau.attrs["pvalue"] = pval
    tau.attrs["n"] = count
    return ranks, tau
