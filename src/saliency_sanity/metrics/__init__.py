"""Batched similarity metrics between two batches of maps: one score per sample, shape (B,).

Each function compares sample i of ``a`` with sample i of ``b`` over all non-batch dims, on the
maps' device, and carries metadata as attributes: ``range``, ``higher_is_better`` (a higher
value means more similar maps), ``requires_image`` (needs (B, [C,] H, W) maps).

Example:
    >>> import torch
    >>> from saliency_sanity import metrics
    >>> a = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    >>> metrics.spearman(a, a ** 2)
    tensor([1.], dtype=torch.float64)
    >>> metrics.spearman.higher_is_better, metrics.spearman.range
    (True, (-1.0, 1.0))
"""

from __future__ import annotations

from ._common import DegenerateMapWarning
from ._hog import hog_features, hog_similarity
from ._rank import mse, pearson, rankdata, spearman
from ._ssim import ssim

__all__ = [
    "DegenerateMapWarning",
    "hog_features",
    "hog_similarity",
    "mse",
    "pearson",
    "rankdata",
    "spearman",
    "ssim",
]
