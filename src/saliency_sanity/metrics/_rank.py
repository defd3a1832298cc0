"""Batched correlations: average ranks (ties as scipy), Spearman, Pearson, and MSE."""

from __future__ import annotations

import numpy as np
import torch

from . import _backend
from ._common import check_pair, warn_degenerate

__all__ = ["rankdata", "spearman", "pearson", "mse", "acc_dtype"]


def acc_dtype(device: torch.device) -> torch.dtype:
    """The dtype scores are accumulated and returned in: float64, except where unsupported."""
    return torch.float32 if device.type == "mps" else torch.float64


# ----------------------------------------------------------------------------- torch path
def _ranks_torch(flat: torch.Tensor) -> torch.Tensor:
    n = flat.shape[1]
    out_dtype = acc_dtype(flat.device)
    values, order = torch.sort(flat, dim=1)
    pos = torch.arange(n, device=flat.device).expand_as(order)
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
    return torch.empty_like(avg).scatter_(1, order, avg)


def _corr_torch(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    dtype = acc_dtype(x.device)
    xc = x.to(dtype)
    yc = y.to(dtype)
    xc = xc - xc.mean(dim=1, keepdim=True)
    yc = yc - yc.mean(dim=1, keepdim=True)
    num = (xc * yc).sum(dim=1)
    den = torch.sqrt((xc * xc).sum(dim=1) * (yc * yc).sum(dim=1))
    return (num / den).clamp_(-1.0, 1.0)


def _constant_torch(x: torch.Tensor) -> torch.Tensor:
    return x.amax(dim=1) == x.amin(dim=1)


# ----------------------------------------------------------------------------- numpy path
def _ranks_np(x: np.ndarray) -> np.ndarray:
    b, n = x.shape
    order = np.argsort(x, axis=1)
    s = np.take_along_axis(x, order, axis=1)
    starts = np.empty((b, n), dtype=bool)
    starts[:, 0] = True
    np.not_equal(s[:, 1:], s[:, :-1], out=starts[:, 1:])
    if starts.all():
        avg = np.broadcast_to(np.arange(1, n + 1, dtype=np.float64), (b, n))
    else:
        pos = np.arange(n)
        first = np.maximum.accumulate(np.where(starts, pos, 0), axis=1)
        ends = np.empty_like(starts)
        ends[:, -1] = True
        ends[:, :-1] = starts[:, 1:]
        last = np.minimum.accumulate(np.where(ends, pos, n - 1)[:, ::-1], axis=1)[:, ::-1]
        avg = (first + last) * 0.5 + 1.0
    ranks = np.empty((b, n), dtype=np.float64)
    np.put_along_axis(ranks, order, avg, axis=1)
    return ranks


def _corr_np(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    xc = x.astype(np.float64)  # a copy: centred in place below
    yc = y.astype(np.float64)
    xc -= xc.mean(axis=1, keepdims=True)
    yc -= yc.mean(axis=1, keepdims=True)
    return _corr_centred_np(xc, yc)


def _corr_centred_np(xc: np.ndarray, yc: np.ndarray) -> np.ndarray:
    """Pearson correlation per row of two already centred float64 arrays."""
    num = np.einsum("ij,ij->i", xc, yc)
    den = np.sqrt(np.einsum("ij,ij->i", xc, xc) * np.einsum("ij,ij->i", yc, yc))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.clip(num / den, -1.0, 1.0)


_LOW32 = np.uint64(0xFFFFFFFF)


def _sorted_keys(x: np.ndarray) -> np.ndarray:
    """Each row of float32 ``x`` sorted as packed uint64 keys: (order-preserving bits of the
    value) << 32 | column. One plain sort of 64-bit integers (SIMD on x86) replaces an argsort
    and a gather: the high half holds the sorted values, the low half the permutation."""
    u = (x + np.float32(0.0)).view(np.uint32)  # + 0.0 maps -0.0 to 0.0: they tie, as in scipy
    # IEEE bits to an unsigned order: flip every bit of negatives, the sign bit of the rest.
    key = (u >> np.uint32(31)) * np.uint32(0x7FFFFFFF)
    key |= np.uint32(0x80000000)
    key ^= u
    k = key.astype(np.uint64)
    k <<= np.uint64(32)
    k |= np.arange(x.shape[1], dtype=np.uint64)
    k.sort(axis=1)
    return k


def _centred_ranks_packed(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Average ranks minus their mean (n + 1) / 2, exact half-integers in float64, for float32
    rows; and which rows are constant. Tied groups are found from the sorted keys and fixed
    group by group, so the cost of ties grows with the number of tied values only."""
    b, n = x.shape
    k = _sorted_keys(x)
    hi = (k >> np.uint64(32)).astype(np.uint32)
    order = (k & _LOW32).astype(np.intp)
    del k
    constant = hi[:, 0] == hi[:, -1]
    centred = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
    vals = np.broadcast_to(centred, (b, n))
    tied = np.zeros((b, n + 1), dtype=np.int8)  # tied[:, j]: element j ties with element j-1
    np.equal(hi[:, 1:], hi[:, :-1], out=tied[:, 1:n].view(bool))
    del hi
    edge = np.diff(tied, axis=1)  # +1: a group starts at j; -1: a group ends at j
    rows, starts = np.nonzero(edge == 1)
    if rows.size:
        _, ends = np.nonzero(edge == -1)
        vals = vals.copy()
        lengths = ends - starts + 1
        mids = np.repeat((starts + ends) / 2.0 - (n - 1) / 2.0, lengths)
        offs = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        vals[np.repeat(rows, lengths), np.repeat(starts, lengths) + offs] = mids
    ranks = np.empty((b, n), dtype=np.float64)
    np.put_along_axis(ranks, order, vals, axis=1)
    return ranks, constant


def _spearman_packed(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Spearman, constant) per row of two float32 arrays: Pearson of the centred ranks."""
    rx, cx = _centred_ranks_packed(x)
    ry, cy = _centred_ranks_packed(y)
    return _corr_centred_np(rx, ry), cx | cy


def _packable(dtype: np.dtype) -> bool:
    """Whether rows of this dtype are ranked by the packed-key sort (exactly as float32)."""
    return dtype in (np.float32, np.float16)


def _constant_np(x: np.ndarray) -> np.ndarray:
    return x.max(axis=1) == x.min(axis=1)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy()


# ----------------------------------------------------------------------------- public
def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1) if x.dim() != 2 else x


def rankdata(x: torch.Tensor, *, backend: str = "auto") -> torch.Tensor:
    """Average ranks (1-based, ties get the mean of their ordinal ranks) along the last dim.

    Equals ``scipy.stats.rankdata(x, method="average", axis=-1)``; batched and vectorized (one
    sort per row, no pairwise matrices), returned in float64 on x's device.

    Example:
        >>> rankdata(torch.tensor([[3.0, 1.0, 3.0, 2.0]]))
        tensor([[3.5000, 1.0000, 3.5000, 2.0000]], dtype=torch.float64)
    """
    shape = x.shape
    flat = x.reshape(-1, shape[-1]) if x.dim() != 2 else x
    if flat.shape[1] == 0:
        return torch.empty(shape, dtype=acc_dtype(x.device), device=x.device)
    if _backend.pick(backend, x.device) == "torch":
        return _ranks_torch(flat).reshape(shape)
    xn = _np(flat)
    n = xn.shape[1]

    def work(s: slice) -> np.ndarray:
        if _packable(xn.dtype):
            ranks = _centred_ranks_packed(xn[s].astype(np.float32, copy=False))[0]
            ranks += (n + 1) / 2.0
            return ranks
        return _ranks_np(xn[s])

    parts = _backend.map_chunks(work, xn.shape[0], _backend.chunk_rows(n))
    return torch.from_numpy(np.concatenate(parts)).reshape(shape)


def _nan_inside(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Cheap pre-check (one reduction per map) for a NaN anywhere."""
    if a.device.type == "cpu":
        return bool(np.isnan(np.sum(_np(a))) or np.isnan(np.sum(_np(b))))
    return bool(torch.isnan(a.sum() + b.sum()))


def _finish(
    r: torch.Tensor, bad: torch.Tensor, n: int, metric: str
) -> torch.Tensor:
    if n < 2:
        bad = torch.ones_like(bad)
    if bool(bad.any()):
        warn_degenerate(metric, bad, "have a constant map (no correlation is defined)")
        r = r.masked_fill(bad, float("nan"))
    return r


def _correlation(
    a: torch.Tensor, b: torch.Tensor, ranked: bool, backend: str, metric: str | None = None
) -> torch.Tensor:
    """(B,) Pearson correlation of rows (of their ranks if ``ranked``), NaN where constant."""
    metric = metric or ("spearman" if ranked else "pearson")
    if _backend.pick(backend, a.device) == "torch":
        x, y = (_ranks_torch(a), _ranks_torch(b)) if ranked else (a, b)
        r = _corr_torch(x, y)
        bad = _constant_torch(a) | _constant_torch(b)
        return _finish(r, bad, a.shape[1], metric)
    an, bn = _np(a), _np(b)

    packed = ranked and an.dtype == bn.dtype and _packable(an.dtype)

    def work(s: slice) -> tuple[np.ndarray, np.ndarray]:
        x, y = an[s], bn[s]
        if packed:
            f32 = np.float32
            return _spearman_packed(x.astype(f32, copy=False), y.astype(f32, copy=False))
        bad = _constant_np(x) | _constant_np(y)
        if ranked:
            x, y = _ranks_np(x), _ranks_np(y)
        return _corr_np(x, y), bad

    # Spearman's chunk holds ranks (float64) and sort buffers: keep it cache-sized.
    rows = _backend.chunk_rows(an.shape[1], 1 << 17 if ranked else 1 << 18)
    parts = _backend.map_chunks(work, an.shape[0], rows)
    r = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    bad = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    return _finish(r, bad, an.shape[1], metric)


def spearman(a: torch.Tensor, b: torch.Tensor, *, backend: str = "auto") -> torch.Tensor:
    """Spearman rank correlation per sample over all non-batch dims, shape (B,), float64.

    Ties get average ranks, as ``scipy.stats.spearmanr``. A sample where either map is constant
    has no rank correlation: its score is NaN and one ``DegenerateMapWarning`` says how many.
    ``backend``: 'numpy' (CPU), 'torch' (any device) or 'auto' (numpy on CPU, else torch).

    Example:
        >>> a = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 2.0, 3.0]])
        >>> b = torch.tensor([[2.0, 4.0, 6.0, 9.0], [3.0, 2.0, 1.0, 0.0]])
        >>> spearman(a, b)
        tensor([ 1.0000, -0.9487], dtype=torch.float64)
    """
    a, b = check_pair(a, b)
    return _correlation(_flat(a), _flat(b), True, backend).to(a.device)


def pearson(a: torch.Tensor, b: torch.Tensor, *, backend: str = "auto") -> torch.Tensor:
    """Pearson correlation per sample over all non-batch dims, shape (B,), as scipy's pearsonr.

    A sample where either map is constant gets NaN, with one ``DegenerateMapWarning``.

    Example:
        >>> pearson(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[2.0, 4.0, 7.0]]))
        tensor([0.9934], dtype=torch.float64)
    """
    a, b = check_pair(a, b, check_nan=False)
    fa, fb = _flat(a), _flat(b)
    if _nan_inside(fa, fb):
        check_pair(a, b)  # raises, naming the samples
    return _correlation(fa, fb, False, backend).to(a.device)


def mse(a: torch.Tensor, b: torch.Tensor, *, backend: str = "auto") -> torch.Tensor:
    """Mean squared error per sample over all non-batch dims, shape (B,), float64.

    As ``skimage.metrics.mean_squared_error``: squared differences in the maps' dtype, mean
    accumulated in float64.

    Example:
        >>> mse(torch.tensor([[0.0, 1.0], [2.0, 2.0]]), torch.tensor([[1.0, 1.0], [0.0, 2.0]]))
        tensor([0.5000, 2.0000], dtype=torch.float64)
    """
    a0, b0 = check_pair(a, b, check_nan=False)
    a, b = _flat(a0), _flat(b0)
    if _backend.pick(backend, a.device) == "torch":
        acc = acc_dtype(a.device)
        d = a.to(acc) - b.to(acc)
        out = (d * d).mean(dim=1)
    else:
        an, bn = _np(a), _np(b)

        def work(s: slice) -> np.ndarray:
            d = np.subtract(an[s], bn[s])  # in the maps' dtype, as skimage's mean_squared_error
            d *= d
            return d.mean(axis=1, dtype=np.float64)

        rows = _backend.chunk_rows(an.shape[1], 1 << 20)
        out = torch.from_numpy(np.concatenate(_backend.map_chunks(work, an.shape[0], rows)))
    if bool(torch.isnan(out).any()):
        check_pair(a0, b0)  # a NaN score comes from a NaN in a map: raise, naming the samples
    return out


for _f, _range, _hib in (
    (spearman, (-1.0, 1.0), True),
    (pearson, (-1.0, 1.0), True),
    (mse, (0.0, float("inf")), False),
):
    _f.range = _range  # type: ignore[attr-defined]
    _f.higher_is_better = _hib  # type: ignore[attr-defined]
    _f.requires_image = False  # type: ignore[attr-defined]
