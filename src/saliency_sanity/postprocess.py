"""Batched map post-processing applied before maps are compared (Adebayo et al. 2018).

Every function takes a batch of maps, (B, C, H, W), (B, H, W) or flat (B, D), and returns
(B, H, W) or (B, D): 4-D maps are first reduced over channels (dim 1); 3-D and 2-D maps are
taken as one channel. Statistics (min, max, percentile) are per sample, over the whole map.
Percentiles use numpy's default (linear interpolation between order statistics).

Degenerate maps (documented conventions, never NaN):
- ``absolute``: if p99 == min the scale falls back to max - min; a constant map gives zeros.
- ``diverging`` and ``diverging_display``: if p99 == 0 the scale falls back to max|m|; an
  all-zero map gives 0.5.
- ``max_abs`` and ``signed_max_abs``: an all-zero map stays zero.
- ``minmax``: a constant map gives zeros (as scikit-learn's ``minmax_scale``).
- ``second_moment``: an all-zero map stays zero.

Example:
    >>> import torch
    >>> from saliency_sanity import postprocess
    >>> m = torch.tensor([[[[-2.0, 1.0], [0.0, 3.0]]]])   # (B=1, C=1, H=2, W=2)
    >>> postprocess.minmax(m)
    tensor([[[0.0000, 0.6000],
             [0.4000, 1.0000]]])
    >>> postprocess.list()[:4]
    ['absolute', 'diverging', 'diverging_display', 'max_abs']
"""

from __future__ import annotations

import builtins
import functools
import math
from collections.abc import Callable
from typing import Any

import torch

from ._registry import Registry

__all__ = [
    "absolute",
    "diverging",
    "diverging_display",
    "max_abs",
    "signed_max_abs",
    "minmax",
    "second_moment",
    "none",
    "percentile",
    "reduce_channels",
    "get",
    "list",
]

PostProcess = Callable[[torch.Tensor], torch.Tensor]
_REGISTRY: Registry[PostProcess] = Registry("post-processing")


def _check(m: torch.Tensor) -> torch.Tensor:
    if not isinstance(m, torch.Tensor):
        raise TypeError(f"maps must be a torch.Tensor, got {type(m).__name__}")
    if m.dim() not in (2, 3, 4):
        raise ValueError(
            "maps must be (B, C, H, W), (B, H, W) or flat (B, D); got shape " f"{tuple(m.shape)}"
        )
    if not m.is_floating_point():
        m = m.to(torch.get_default_dtype())
    if bool(torch.isnan(m).any()):
        raise ValueError("maps contain NaN")
    return m


def reduce_channels(m: torch.Tensor, absolute: bool = False) -> torch.Tensor:
    """Sums a (B, C, H, W) batch over channels (of |m| if ``absolute``); other shapes pass.

    Example:
        >>> reduce_channels(torch.ones(2, 3, 4, 4)).shape
        torch.Size([2, 4, 4])
    """
    m = _check(m)
    if absolute:
        m = m.abs()
    return m.sum(dim=1) if m.dim() == 4 else m


def percentile(m: torch.Tensor, q: float) -> torch.Tensor:
    """Per-sample q-th percentile over all non-batch dims, as ``np.percentile`` (linear).

    Example:
        >>> percentile(torch.arange(101.0).reshape(1, 101), 99.0)
        tensor([99.])
    """
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {q}")
    flat = m.reshape(m.shape[0], -1)
    n = flat.shape[1]
    pos = (q / 100.0) * (n - 1)  # numpy: virtual index, in float64
    lo = min(int(math.floor(pos)), n - 1)
    hi = min(lo + 1, n - 1)
    t = pos - lo
    # The (n - lo) largest values, ascending: their first is order statistic `lo`.
    top = torch.topk(flat, n - lo, dim=1, largest=True, sorted=True).values
    a = top[:, -1]
    b = top[:, -2] if hi > lo else a
    # numpy's _lerp: a + (b - a) * t, or b - (b - a) * (1 - t) where t >= 0.5
    diff = b - a
    return b - diff * (1.0 - t) if t >= 0.5 else a + diff * t


def _safe_scale(num_scale: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    scale = torch.where(num_scale > 0, num_scale, fallback)
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


def absolute(m: torch.Tensor, percentile_: float = 99.0) -> torch.Tensor:
    """Absolute map: sum |m| over channels, scale (m - min) / (p99 - min), clip to [0, 1].

    Example:
        >>> absolute(torch.tensor([[[-4.0, 1.0], [0.0, 2.0]]]))
        tensor([[[1.0000, 0.2538],
                 [0.0000, 0.5076]]])
    """
    m = reduce_channels(m, absolute=True)
    flat = m.reshape(m.shape[0], -1)
    lo = flat.amin(dim=1)
    p = percentile(flat, percentile_)
    scale = _safe_scale(p - lo, flat.amax(dim=1) - lo)
    return ((m - _bcast(lo, m)) / _bcast(scale, m)).clamp_(0.0, 1.0)


def _diverging(m: torch.Tensor, percentile_: float, low: float) -> torch.Tensor:
    m = reduce_channels(m)
    flat = m.reshape(m.shape[0], -1)
    s = _safe_scale(percentile(flat, percentile_).abs(), flat.abs().amax(dim=1))
    s = _bcast(s, m)
    return ((m + s) / (2 * s)).clamp_(low, 1.0)


def diverging(m: torch.Tensor, percentile_: float = 99.0) -> torch.Tensor:
    """Diverging (signed) map, the authors' formula: sum over channels, s = |p99|,
    (m + s) / (2 s), clip to [-1, 1].

    Only values above s saturate (at 1); values below -s keep their order down to -3 s, where
    they reach -1. :func:`diverging_display` is the [0, 1]-clipped display variant.

    Example:
        >>> m = torch.tensor([[-8.0, -2.0, -1.0, 0.0, 1.0, 1.0]])   # p99 = 1, so s = 1
        >>> diverging(m)
        tensor([[-1.0000, -0.5000,  0.0000,  0.5000,  1.0000,  1.0000]])
        >>> diverging_display(m)
        tensor([[0.0000, 0.0000, 0.0000, 0.5000, 1.0000, 1.0000]])
    """
    return _diverging(m, percentile_, -1.0)


def diverging_display(m: torch.Tensor, percentile_: float = 99.0) -> torch.Tensor:
    """Display variant of :func:`diverging`: the same formula clipped to [0, 1], so every
    value below -s ties at 0 (the library's ``diverging`` before it followed the authors' code).

    Example:
        >>> diverging_display(torch.tensor([[[-1.0, 0.0], [1.0, 2.0]]]))
        tensor([[[0.2462, 0.5000],
                 [0.7538, 1.0000]]])
    """
    return _diverging(m, percentile_, 0.0)


def _max_abs_scale(m: torch.Tensor) -> torch.Tensor:
    flat = m.reshape(m.shape[0], -1)
    top = flat.abs().amax(dim=1)
    return _bcast(torch.where(top > 0, top, torch.ones_like(top)), m)


def max_abs(m: torch.Tensor) -> torch.Tensor:
    """|m| / max|m| (the authors' 2-D MNIST scaling): sum |m| over channels, divide by the
    per-sample maximum; values in [0, 1].

    Example:
        >>> max_abs(torch.tensor([[-4.0, 1.0, 2.0, 0.0]]))
        tensor([[1.0000, 0.2500, 0.5000, 0.0000]])
    """
    m = reduce_channels(m, absolute=True)
    return m / _max_abs_scale(m)


def signed_max_abs(m: torch.Tensor) -> torch.Tensor:
    """m / max|m| (the authors' signed 2-D MNIST scaling): signed sum over channels, divide by
    the per-sample maximum absolute value; values in [-1, 1].

    Example:
        >>> signed_max_abs(torch.tensor([[-4.0, 1.0, 2.0, 0.0]]))
        tensor([[-1.0000,  0.2500,  0.5000,  0.0000]])
    """
    m = reduce_channels(m)
    return m / _max_abs_scale(m)


def minmax(m: torch.Tensor) -> torch.Tensor:
    """Signed sum over channels, then (m - min) / (max - min) over the whole map: [0, 1].

    Example:
        >>> minmax(torch.tensor([[1.0, 3.0, 2.0]]))
        tensor([[0.0000, 1.0000, 0.5000]])
    """
    m = reduce_channels(m)
    flat = m.reshape(m.shape[0], -1)
    lo = flat.amin(dim=1)
    scale = _safe_scale(flat.amax(dim=1) - lo, torch.ones_like(lo))
    return (m - _bcast(lo, m)) / _bcast(scale, m)


def second_moment(m: torch.Tensor) -> torch.Tensor:
    """Signed sum over channels, then m / sqrt(mean(m^2)) (second-moment normalization).

    Example:
        >>> second_moment(torch.tensor([[3.0, -3.0, 3.0, -3.0]]))
        tensor([[ 1., -1.,  1., -1.]])
    """
    m = reduce_channels(m)
    flat = m.reshape(m.shape[0], -1)
    rms = torch.sqrt((flat * flat).mean(dim=1))
    rms = torch.where(rms > 0, rms, torch.ones_like(rms))
    return m / _bcast(rms, m)


def none(m: torch.Tensor) -> torch.Tensor:
    """Identity: the raw maps, unchanged (no channel reduction).

    Example:
        >>> none(torch.ones(1, 3, 2, 2)).shape
        torch.Size([1, 3, 2, 2])
    """
    return _check(m)


def _register(name: str, fn: Callable[..., torch.Tensor]) -> None:
    def factory(**settings: Any) -> PostProcess:
        return functools.partial(fn, **settings) if settings else fn

    _REGISTRY.register(name)(factory)


for _name, _fn in (
    ("absolute", absolute),
    ("diverging", diverging),
    ("diverging_display", diverging_display),
    ("max_abs", max_abs),
    ("signed_max_abs", signed_max_abs),
    ("minmax", minmax),
    ("second_moment", second_moment),
    ("none", none),
):
    _register(_name, _fn)


def get(name: str, **settings: Any) -> PostProcess:
    """The post-processing function registered under ``name`` (settings bound, if any).

    Example:
        >>> get("absolute") is absolute
        True
    """
    return _REGISTRY.get(name, **settings)


def list() -> builtins.list[str]:  # noqa: A001 - the registry's public name
    """Names of the registered post-processings.

    Example:
        >>> "minmax" in list()
        True
    """
    return _REGISTRY.list()
