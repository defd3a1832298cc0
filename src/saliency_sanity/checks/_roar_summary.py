"""The DiffROAR summary of a table of retrainings: pooled pairs, spread, Welch's test."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats


def welch(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Standard error of mean(a) - mean(b) (sample variances, ddof 1) and the two-sided p-value
    of Welch's t-test (Welch-Satterthwaite degrees of freedom); NaN, NaN with fewer than two
    values on a side, and p NaN when neither side varies. Written out rather than
    ``scipy.stats.ttest_ind``, which warns on sides whose values are (nearly) equal, as
    retrained accuracies often are; equal to it otherwise (tested).

    Example:
        >>> se, p = welch(np.array([0.9, 0.8]), np.array([0.5, 0.6]))
        >>> round(se, 4), round(p, 4)
        (0.0707, 0.0513)
    """
    if len(a) < 2 or len(b) < 2:
        return math.nan, math.nan
    va, vb = float(a.var(ddof=1)) / len(a), float(b.var(ddof=1)) / len(b)
    se = math.sqrt(va + vb)
    if se == 0.0:
        return 0.0, math.nan
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    t = (float(a.mean()) - float(b.mean())) / se
    return se, float(2.0 * stats.t.sf(abs(t), df))


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """DiffROAR(k) per method and k from a tidy table: every top x bottom repeat pair pooled
    (mean, std with ddof 0, interval mean +- std), KAR = mean acc(top-k), ROAR at removed
    fraction 1 - k = mean acc(bottom-k), the repeat-to-repeat spread (the largest range of
    accuracies over repeats within one side), the standard error of the difference of the two
    sides' means (``diffroar_se``, ddof 1 per side) and Welch's two-sided t-test of top against
    bottom (``p_value``; NaN with fewer than two repeats per side or no variance).

    Example:
        >>> t = pd.DataFrame({"method": "g", "k": 0.5, "side": ["top", "top", "bottom", "bottom"],
        ...                   "repeat": [0, 1, 0, 1], "test_acc": [0.9, 0.8, 0.5, 0.6]})
        >>> s = summarize(t).iloc[0]
        >>> [round(float(s[c]), 3) for c in ("diffroar", "diffroar_std", "repeat_spread")]
        [0.3, 0.071, 0.1]
    """
    rows = []
    for (method, k), g in table.groupby(["method", "k"], sort=False):
        top = g.loc[g["side"] == "top", "test_acc"].to_numpy(float)
        bot = g.loc[g["side"] == "bottom", "test_acc"].to_numpy(float)
        diffs = (top[:, None] - bot[None, :]).ravel()
        mean, std = float(diffs.mean()), float(diffs.std())
        spread = max(float(top.max() - top.min()), float(bot.max() - bot.min()))
        se, p = welch(top, bot)
        rows.append({"method": method, "k": float(k), "diffroar": mean, "diffroar_std": std,
                     "diffroar_lo": mean - std, "diffroar_hi": mean + std,
                     "diffroar_se": se, "p_value": p, "n_top": len(top),
                     "n_bottom": len(bot), "n_pairs": len(diffs), "kar": float(top.mean()),
                     "roar_removed": 1.0 - float(k), "roar": float(bot.mean()),
                     "repeat_spread": spread,
                     "within_spread": bool(abs(mean) <= spread)})
    return pd.DataFrame(rows)
