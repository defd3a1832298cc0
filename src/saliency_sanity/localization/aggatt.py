"""AggAtt (Rao et al. 2022): the maps of a method, sorted by localization and averaged in bins.

The maps (positive parts of the upsampled channel sums) are sorted by localization score,
descending (ties: more positive mass inside the target cell first), split at the fractions
``BINS`` of their count, and each bin is the plain mean of its maps (no per-map normalization).
The figure shows every bin with one colour scale (the 99.5th percentile of all bins), instead of
hand-picked examples. To average maps of different heads, each map is first moved so that its
target cell is the top-left one (cells are rolled, not flipped), as the paper's figures show
head 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: bin edges as fractions of the maps, best localized first
BINS = (0.0, 0.02, 0.05, 0.5, 0.95, 0.98, 1.0)


def to_top_left(maps: np.ndarray, heads: np.ndarray, n: int) -> np.ndarray:
    """Roll each (H, W) map so that its head's cell is the top-left cell.

    Example:
        >>> m = np.zeros((1, 4, 4)); m[0, 2:, 2:] = 1
        >>> float(to_top_left(m, np.array([3]), 2)[0, :2, :2].sum())
        4.0
    """
    out = np.empty_like(maps)
    h, w = maps.shape[1] // n, maps.shape[2] // n
    for i, k in enumerate(heads):
        r, q = divmod(int(k), n)
        out[i] = np.roll(maps[i], (-r * h, -q * w), axis=(0, 1))
    return out


def aggatt_bins(maps: np.ndarray, scores: np.ndarray, inside: np.ndarray,
                bins: Sequence[float] = BINS) -> tuple[np.ndarray, np.ndarray]:
    """The mean map of each bin (len(bins) - 1, H, W) and the bins' sizes.

    Example:
        >>> maps = np.arange(4.0).reshape(4, 1, 1)
        >>> means, sizes = aggatt_bins(maps, np.array([0.1, 0.9, 0.5, 0.9]),
        ...                            np.array([1.0, 1.0, 1.0, 2.0]), bins=(0, 0.5, 1))
        >>> means[:, 0, 0].tolist(), sizes.tolist()
        ([2.0, 1.0], [2, 2])
    """
    if len(maps) == 0:
        return np.zeros((len(bins) - 1, *maps.shape[1:])), np.zeros(len(bins) - 1, dtype=int)
    order = np.lexsort((-inside, -scores))  # last key sorts first: score desc, then inside
    edges = np.round(np.asarray(bins) * len(maps)).astype(int)
    means = np.zeros((len(bins) - 1, *maps.shape[1:]), dtype=np.float64)
    sizes = np.zeros(len(bins) - 1, dtype=int)
    for b in range(len(bins) - 1):
        idx = order[edges[b]:edges[b + 1]]
        sizes[b] = len(idx)
        if len(idx):
            means[b] = maps[idx].astype(np.float64).mean(axis=0)
    return means, sizes
