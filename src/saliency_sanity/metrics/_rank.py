"""Batched correlations: average ranks (ties as scipy), Spearman, Pearson, and MSE."""

from __future__ import annotations

import torch

from ._common import check_pair, warn_degenerate

__all__ = ["rankdata", "spearman", "pearson", "mse", "acc_dtype"]


def acc_dtype(device: torch.device) -> torch.dtype:
    """The dtype scores are accumulated and returned in: float64, except where unsupported."""
    return torch.float32 if device.type == "mps" else torch.float64


def rankdata(x: torch.Tensor) -> torch.Tensor:
    """Average ranks (1-based, ties get the mean of their ordinal ranks) along the last dim.

    Equals ``scipy.stats.rankdata(x, method="average", axis=-1)``; batched, vectorized, on the
    tensor's device (one sort per row, no pairwise matrices).

    Example:
        >>> rankdata(torch.tensor([[3.0, 1.0, 3.0, 2.0]]))
        tensor([[3.5000, 1.0000, 3.5000, 2.0000]], dtype=torch.float64)
    """
    shape = x.shape
    flat = x.reshape(-1, shape[-1]) if x.dim() != 2 else x
    n = flat.shape[1]
    out_dtype = acc_dtype(x.device)
    if n == 0:
        return torch.empty(shape, dtype=out_dtype, device=x.device)
    values, order = torch.sort(flat, dim=1)
    pos = torch.arange(n, device=x.device).expand_as(order)
    starts = torch.ones_like(order, dtype=torch.bool)
    starts[:, 1:] = values[:, 1:] != values[:, :-1]
    if bool(starts.all()):  # no ties anywhere: ranks are the ordinal positions
        avg = (pos + 1).to(out_dtype)
    else:
        first = torch.where(starts, pos, 0).cummax(dim=1).values
        ends = torch.ones_like(starts)
        ends[:, :-1] = starts[:, 1:]
        last = torch.where(ends, pos, n - 1).flip(1).cummin(dim=1).values.flip(1)
        avg = (first + last).to(out_dtype) * 0.5 + 1.0
    ranks = torch.empty_like(avg).scatter_(1, order, avg)
    return ranks.reshape(shape)


def _corr_rows(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of matching rows of two (B, N) tensors in the accumulation dtype."""
    dtype = acc_dtype(x.device)
    x = x.to(dtype)
    y = y.to(dtype)
    xc = x - x.mean(dim=1, keepdim=True)
    yc = y - y.mean(dim=1, keepdim=True)
    num = (xc * yc).sum(dim=1)
    den = torch.sqrt((xc * xc).sum(dim=1) * (yc * yc).sum(dim=1))
    return (num / den).clamp_(-1.0, 1.0)


def _constant_rows(x: torch.Tensor) -> torch.Tensor:
    return x.amax(dim=1) == x.amin(dim=1)


def _flat_pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = check_pair(a, b)
    return a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)


def _nan_where_constant(
    r: torch.Tensor, a: torch.Tensor, b: torch.Tensor, metric: str
) -> torch.Tensor:
    bad = _constant_rows(a) | _constant_rows(b)
    if a.shape[1] < 2:
        bad = torch.ones_like(bad)
    if bool(bad.any()):
        warn_degenerate(metric, bad, "have a constant map (no correlation is defined)")
        r = r.masked_fill(bad, float("nan"))
    return r


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation per sample over all non-batch dims, shape (B,).

    Ties get average ranks, as ``scipy.stats.spearmanr``. A sample where either map is constant
    has no rank correlation: its score is NaN and one ``DegenerateMapWarning`` says how many.

    Example:
        >>> a = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 2.0, 3.0]])
        >>> b = torch.tensor([[2.0, 4.0, 6.0, 9.0], [3.0, 2.0, 1.0, 0.0]])
        >>> spearman(a, b)
        tensor([ 1.0000, -0.9487], dtype=torch.float64)
    """
    a, b = _flat_pair(a, b)
    r = _corr_rows(rankdata(a), rankdata(b))
    return _nan_where_constant(r, a, b, "spearman")


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation per sample over all non-batch dims, shape (B,), as scipy's pearsonr.

    A sample where either map is constant gets NaN, with one ``DegenerateMapWarning``.

    Example:
        >>> pearson(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[2.0, 4.0, 7.0]]))
        tensor([0.9934], dtype=torch.float64)
    """
    a, b = _flat_pair(a, b)
    r = _corr_rows(a, b)
    return _nan_where_constant(r, a, b, "pearson")


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared error per sample over all non-batch dims, shape (B,).

    Example:
        >>> mse(torch.tensor([[0.0, 1.0], [2.0, 2.0]]), torch.tensor([[1.0, 1.0], [0.0, 2.0]]))
        tensor([0.5000, 2.0000], dtype=torch.float64)
    """
    a, b = _flat_pair(a, b)
    d = a.to(acc_dtype(a.device)) - b.to(acc_dtype(b.device))
    return (d * d).mean(dim=1)


for _f, _range, _hib in (
    (spearman, (-1.0, 1.0), True),
    (pearson, (-1.0, 1.0), True),
    (mse, (0.0, float("inf")), False),
):
    _f.range = _range  # type: ignore[attr-defined]
    _f.higher_is_better = _hib  # type: ignore[attr-defined]
    _f.requires_image = False  # type: ignore[attr-defined]
