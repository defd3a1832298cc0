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

A metric's direction is read from the result: a score whose settings say ``better_method``
(eMPRT's ``emprt``: "higher") ranks by that; a similarity score ranks lower similarity first (its
``higher_is_better`` says whether a higher value means more similar; for ``mse``, a
dissimilarity, higher is better). A check that ranks by a metric of its own names it in
``settings["ranking_metric"]``. Rank 1 is the best method; ties get the average rank. Kendall's tau
(``scipy.stats.kendalltau``, tau-b) between two checks' rankings is computed over the methods both
rank.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from .. import scores as _scores
from ..results import CheckResult
from ..results.files import EXTRA_DIRS
from ..results.ranking import RANKING_COLUMNS, TAU_COLUMNS, wide_ranking  # noqa: F401
from ..results.spec import find as find_check
from ..results.spec import ranking_label, resolve


def _check_name(key: str, result: Any) -> str:
    if isinstance(result, CheckResult):
        return result.check
    return key


def _controls(result: Any) -> set[str]:
    if isinstance(result, CheckResult):
        return set(result.settings.get("controls", []))
    return set()


def _ranking_part(check: str, part: str) -> Any:
    """A check's ranking ``part`` (``table`` or ``views``) as its spec declares it
    (:class:`~saliency_sanity.results.spec.Ranking`); None for a check without one."""
    spec = find_check(check)
    ranking = spec.ranking if spec is not None else None
    return resolve(getattr(ranking, part)) if ranking is not None else None


def _ranking_group(check: str) -> str:
    spec = find_check(check)
    ranking = spec.ranking if spec is not None else None
    return ranking.group if ranking is not None else "randomization"


def expand_views(checks: Mapping[str, CheckResult]) -> dict[str, CheckResult]:
    """``checks`` with every result of a multi-score check (its spec's ``Ranking.views``, e.g.
    faithfulness) replaced by one entry per score, labelled by the score.

    Example:
        >>> t = pd.DataFrame({"method": "g", "stage": 1, "layer": "", "sample": 0,
        ...                   "metric": "spearman", "value": [0.5]})
        >>> list(expand_views({"MPRT": CheckResult(check="model_randomization", table=t)}))
        ['MPRT']
    """
    out: dict[str, CheckResult] = {}
    for key, res in checks.items():
        views = _ranking_part(res.check, "views") if isinstance(res, CheckResult) else None
        if views is None:
            out[key] = res
        else:
            out.update(views(res))
    return out


def _table(result: Any) -> pd.DataFrame:
    if isinstance(result, CheckResult):
        derive = _ranking_part(result.check, "table")
        return derive(result) if derive is not None else result.table
    if isinstance(result, pd.DataFrame):
        return result
    raise TypeError(f"results must be CheckResult objects or tables, got {type(result).__name__}")


def _ranking_metric(key: str, result: Any, metric: str,
                    metrics: Mapping[str, str] | None) -> str:
    """The metric ``result`` is ranked by: an override, the check's own, or ``metric``."""
    if (metrics or {}).get(key):
        return (metrics or {})[key]
    if isinstance(result, CheckResult) and result.settings.get("ranking_metric"):
        return str(result.settings["ranking_metric"])
    if "efficient" in _check_name(key, result):  # a plain eMPRT table
        return "emprt"
    return metric


def higher_is_better(metric: str, result: Any = None) -> bool:
    """True when a higher value of ``metric`` means a better method (read from the result's
    recorded score settings, else from the scores registry).

    Example:
        >>> higher_is_better("spearman_abs"), higher_is_better("mse")
        (False, True)
    """
    if isinstance(result, CheckResult):
        meta = (result.settings.get("scores") or {}).get(metric) or {}
        if meta.get("better_method") in ("higher", "lower"):
            return meta["better_method"] == "higher"
        if (metric == result.settings.get("ranking_metric")
                and result.settings.get("ranking_better") in ("higher", "lower")):
            return result.settings["ranking_better"] == "higher"
    if metric == "emprt":
        return True
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
        m = _ranking_metric(key, result, metric, metrics)
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
        m = _ranking_metric(key, result, metric, metrics)
        hib = (directions or {}).get(m)
        if hib is None:
            hib = higher_is_better(m, result)
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


# ---------------------------------------------------------------------------------------------
# the ranking of a run directory's checks
# ---------------------------------------------------------------------------------------------
def ranking_inputs(d: str | Path, result: CheckResult,
                   data_randomization: CheckResult | None = None
                   ) -> tuple[dict[str, CheckResult], list[str]]:
    """The checks that rank methods for a model randomization run: the main result (unless its
    order is ``independent``, whose last stage is not full randomization), the critique checks
    saved in ``d`` and a data randomization result. Returns ``({label: result}, notes)``."""
    d = Path(d)
    notes: list[str] = []
    checks: dict[str, CheckResult] = {}
    if result.settings.get("order") == "independent":
        notes.append("MPRT left out: its order is 'independent', so no stage randomizes every "
                     "block")
    else:
        checks[ranking_label(result.check)] = result
    for sub in EXTRA_DIRS.values():
        if (d / sub / "run.json").is_file():
            try:
                res = CheckResult.load(d / sub)
            except (OSError, ValueError) as err:
                notes.append(f"{sub}/ left out: unreadable ({err})")
                continue
            checks[ranking_label(res.check)] = res
    checks = expand_views(checks)
    if data_randomization is not None:
        checks[ranking_label(data_randomization.check)] = data_randomization
        if data_randomization.settings.get("valid") is False:
            notes.append("the data randomization run is INVALID (its random-label model did not "
                         "memorize: "
                         f"{data_randomization.settings.get('invalid_reason', '')}); its ranks "
                         "are shown but should not be trusted")
    return checks, notes


def choose_ranking_metric(checks: Mapping[str, CheckResult]) -> tuple[str | None, list[str]]:
    """The similarity metric shared by the most similarity checks (in the order of
    ``scores.ranking_preference()``), and the similarity checks that lack it."""
    sim = {k: set(r.table["metric"]) for k, r in checks.items()
           if not _ranking_metric(k, r, "", None)}
    if not sim:
        return None, []
    every = sorted(set().union(*sim.values()))
    preferred = _scores.ranking_preference()
    pref = [m for m in preferred if m in every] + [m for m in every if m not in preferred]
    if not pref:
        return None, list(sim)
    best = max(pref, key=lambda m: (sum(m in s for s in sim.values()), -pref.index(m)))
    return best, [k for k, s in sim.items() if best not in s]


def compute_ranking(checks: Mapping[str, CheckResult]
                    ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Long tables of ranks (``RANKING_COLUMNS``) and Kendall's tau (``TAU_COLUMNS``) of the
    checks, and the settings (metric used, checks left out), via :func:`method_ranking`
    (controls excluded).

    Example:
        >>> t = pd.DataFrame({"method": ["a", "b", "c"], "stage": 1, "layer": "x", "sample": 0,
        ...                   "metric": "spearman_abs", "value": [0.1, 0.5, 0.9]})
        >>> r1 = CheckResult(check="random_logit", table=t)
        >>> r2 = CheckResult(check="model_randomization", table=t.assign(value=[.9, .5, .1]))
        >>> ranks, tau, _ = compute_ranking({"random logit": r1, "MPRT": r2})
        >>> float(tau.query("check_a == 'random logit' and check_b == 'MPRT'")["tau"].iloc[0])
        -1.0
    """
    metric, lacking = choose_ranking_metric(checks)
    use = {k: r for k, r in checks.items() if k not in lacking}
    notes = [f"{k} left out: it has no {metric!r} rows" for k in lacking]
    metrics = {k: _ranking_metric(k, r, metric or "spearman_abs", None) for k, r in use.items()}
    ranks, tau = method_ranking(use, metric=metric or "spearman_abs", metrics=metrics)
    means = ranks.attrs["scores"]
    rows = []
    for k in ranks.columns:
        hib = higher_is_better(metrics[k], use[k])
        for method in ranks.index:
            if pd.isna(ranks.loc[method, k]):
                continue
            rows.append([k, method, metrics[k], hib, float(means.loc[method, k]),
                         float(ranks.loc[method, k])])
    long_ranks = pd.DataFrame(rows, columns=RANKING_COLUMNS)
    pval, count = tau.attrs["pvalue"], tau.attrs["n"]
    trows = [[a, b, float(tau.loc[a, b]), float(pval.loc[a, b]), int(count.loc[a, b])]
             for a in tau.index for b in tau.columns]
    long_tau = pd.DataFrame(trows, columns=TAU_COLUMNS)
    groups = {k: _ranking_group(use[k].check) for k in ranks.columns
              if isinstance(use[k], CheckResult)}
    settings = {"metric": metric, "metrics": metrics, "checks": list(ranks.columns),
                "groups": groups, "controls": "excluded", "notes": notes,
                "tau": "Kendall's tau-b (scipy.stats.kendalltau) over the methods both checks rank"}
    return long_ranks, long_tau, settings
