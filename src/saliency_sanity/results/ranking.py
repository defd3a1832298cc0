"""The saved ranking tables (``ranking.csv``, ``ranking_tau.csv``): their columns and a wide view.

Computed by :func:`saliency_sanity.checks.ranking.compute_ranking`; read by the report.
"""

from __future__ import annotations

import pandas as pd

RANKING_COLUMNS = ["check", "method", "metric", "higher_is_better", "mean", "rank"]
TAU_COLUMNS = ["check_a", "check_b", "tau", "pvalue", "n"]


def wide_ranking(long_ranks: pd.DataFrame, long_tau: pd.DataFrame
                 ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """``(ranks, means, tau, n)`` as method x check and check x check tables, in file order.

    Example:
        >>> lr = pd.DataFrame([["A", "g", "m", False, 0.1, 1.0]], columns=RANKING_COLUMNS)
        >>> lt = pd.DataFrame([["A", "A", 1.0, 0.0, 1]], columns=TAU_COLUMNS)
        >>> float(wide_ranking(lr, lt)[0].loc["g", "A"])
        1.0
    """
    checks = list(dict.fromkeys(long_ranks["check"]))
    methods = list(dict.fromkeys(long_ranks["method"]))
    ranks = long_ranks.pivot(index="method", columns="check", values="rank").reindex(
        index=methods, columns=checks)
    means = long_ranks.pivot(index="method", columns="check", values="mean").reindex(
        index=methods, columns=checks)
    tchecks = list(dict.fromkeys(list(long_tau["check_a"]) + list(long_tau["check_b"])))
    tau = long_tau.pivot(index="check_a", columns="check_b", values="tau").reindex(
        index=tchecks, columns=tchecks)
    n = long_tau.pivot(index="check_a", columns="check_b", values="n").reindex(
        index=tchecks, columns=tchecks)
    return ranks, means, tau, n
