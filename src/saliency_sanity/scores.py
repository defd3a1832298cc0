"""Named similarity scores used by the checks: post-processing + metric, as the paper pairs them.

A :class:`Score` applies its post-processing to both raw maps, then its metric, and returns one
value per sample, shape (B,), float64, on the maps' device. Metadata are attributes: ``name``,
``range``, ``higher_is_better`` (a higher value means more similar maps), ``postprocess`` (the
post-processing's registry name), ``requires_image`` (needs (B, [C,] H, W) maps, not flat (B, D)),
and ``settings()``.

=============  ===============  ======================================================
name           post-processing  metric
=============  ===============  ======================================================
spearman_abs   absolute         Spearman rank correlation of the absolute maps
spearman       diverging        Spearman rank correlation of the signed maps (clip [-1, 1])
pearson        none             Pearson correlation of the raw maps
ssim           minmax           SSIM, Gaussian 11x11 window, sigma 1.5, data_range 1
hog            minmax           Pearson** correlation of HOG features (16x16 cells*)
mse            none             mean squared error of the raw maps (lower = similar)
=============  ===============  ======================================================

\\* ``hog``: pixels_per_cell is capped so one 3x3-cell block fits: ppc = min(16, min(H, W) // 3)
(9 on 28x28 MNIST maps, 16 from 48x48 up); ``settings(shape)`` gives the effective value.
\\*\\* ``hog``: Pearson as in the paper's text; ``scores.get("hog", correlation="spearman")``
is the authors' notebook. ``spearman`` and ``spearman_abs`` take ``postprocess=<name>``.

Example:
    >>> import torch
    >>> from saliency_sanity import scores
    >>> g = torch.Generator().manual_seed(0)
    >>> a = torch.randn(4, 3, 32, 32, generator=g)
    >>> s = scores.get("spearman_abs")
    >>> s(a, a).tolist()
    [1.0, 1.0, 1.0, 1.0]
    >>> s.postprocess, s.higher_is_better, s.range
    ('absolute', True, (-1.0, 1.0))
    >>> scores.list()
    ['hog', 'mse', 'pearson', 'spearman', 'spearman_abs', 'ssim']
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from . import metrics
from . import postprocess as _pp
from ._registry import Registry
from .metrics._common import check_pair

__all__ = ["Score", "get", "list", "hog_pixels_per_cell", "ranking_preference"]


@dataclass(frozen=True)
class Score:
    """A named similarity score: ``metric(post(a), post(b), **options)``; no other logic.

    ``options`` may hold values that depend on the post-processed maps' shape: ``resolve``
    (a function of the (H, W) shape returning extra options) fills them in per call.
    """

    name: str
    metric: Callable[..., torch.Tensor]
    postprocess: str
    range: tuple[float, float]
    higher_is_better: bool
    requires_image: bool
    options: dict[str, Any] = field(default_factory=dict)
    resolve: Callable[[tuple[int, ...]], dict[str, Any]] | None = None
    description: str = ""

    def settings(self, shape: tuple[int, ...] | None = None) -> dict[str, Any]:
        """The score's settings as a plain dict (for results metadata).

        With the raw maps' ``shape``, shape-dependent settings are resolved to their
        effective values (e.g. the ``hog`` score's pixels_per_cell).
        """
        out: dict[str, Any] = {
            "name": self.name,
            "metric": self.metric.__name__,
            "postprocess": self.postprocess,
            "range": self.range,
            "higher_is_better": self.higher_is_better,
            "requires_image": self.requires_image,
            **self.options,
        }
        if shape is not None and self.resolve is not None:
            out.update(self.resolve(_post_shape(shape)))
        return out

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a, b = check_pair(a, b)
        if self.requires_image and not (a.dim() == 4 or a.dim() == 3):
            raise ValueError(
                f"score {self.name!r} needs image maps (B, C, H, W) or (B, H, W); got flat maps "
                f"of shape {tuple(a.shape)} (e.g. from an MLP). Use spearman, spearman_abs, "
                "pearson or mse for flat maps."
            )
        post = _pp.get(self.postprocess)
        pa, pb = post(a), post(b)
        options = dict(self.options)
        if self.resolve is not None:
            options.update(self.resolve(tuple(pa.shape[-2:])))
        return self.metric(pa, pb, **options)


def _post_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(shape[-2:])


def hog_pixels_per_cell(
    shape: tuple[int, ...], pixels_per_cell: int = 16, cells_per_block: int = 3
) -> int:
    """The ``hog`` score's effective cell size on maps of spatial ``shape`` (H, W).

    The paper's 16x16 cells, capped so that one block of ``cells_per_block`` cells fits.

    Example:
        >>> hog_pixels_per_cell((28, 28)), hog_pixels_per_cell((224, 224))
        (9, 16)
    """
    h, w = shape[-2:]
    ppc = min(int(pixels_per_cell), min(h, w) // int(cells_per_block))
    if ppc < 1:
        raise ValueError(f"maps of {h}x{w} are too small for HOG with 3x3-cell blocks")
    return ppc


_REGISTRY: Registry[Score] = Registry("score")


@_REGISTRY.register("spearman_abs", ranking=1)
def _spearman_abs(postprocess: str = "absolute") -> Score:
    _pp.get(postprocess)  # unknown names fail here, listing the known ones
    return Score(
        "spearman_abs", metrics.spearman, postprocess, (-1.0, 1.0), True, False,
        description="Spearman rank correlation of absolute maps (|m| summed over channels, "
        "scaled to the 99th percentile, clipped)",
    )  # fmt: skip


@_REGISTRY.register("spearman", ranking=3)
def _spearman(postprocess: str = "diverging") -> Score:
    _pp.get(postprocess)
    return Score(
        "spearman", metrics.spearman, postprocess, (-1.0, 1.0), True, False,
        description="Spearman rank correlation of signed (diverging) maps; "
        "postprocess='diverging_display' gives the [0, 1]-clipped display variant",
    )  # fmt: skip


@_REGISTRY.register("pearson", ranking=5)
def _pearson(postprocess: str = "none") -> Score:
    return Score(
        "pearson", metrics.pearson, postprocess, (-1.0, 1.0), True, False,
        description="Pearson correlation of the maps",
    )  # fmt: skip


@_REGISTRY.register("mse", ranking=6)
def _mse(postprocess: str = "second_moment") -> Score:
    return Score(
        "mse", metrics.mse, postprocess, (0.0, float("inf")), False, False,
        description="mean squared error of second-moment-normalized maps",
    )  # fmt: skip


@_REGISTRY.register("ssim", ranking=2)
def _ssim(window: int = 11, sigma: float = 1.5, data_range: float = 1.0) -> Score:
    return Score(
        "ssim", metrics.ssim, "minmax", (-1.0, 1.0), True, True,
        options={"window": window, "sigma": sigma, "data_range": data_range},
        description="SSIM of min-max maps (Gaussian weights, as scikit-image)",
    )  # fmt: skip


@_REGISTRY.register("hog", ranking=4)
def _hog(
    pixels_per_cell: int = 16,
    orientations: int = 9,
    cells_per_block: int = 3,
    block_norm: str = "L2-Hys",
    correlation: str = "pearson",
) -> Score:
    def resolve(shape: tuple[int, ...]) -> dict[str, Any]:
        ppc = hog_pixels_per_cell(shape, pixels_per_cell, cells_per_block)
        return {"pixels_per_cell": (ppc, ppc)}

    return Score(
        "hog", metrics.hog_similarity, "minmax", (-1.0, 1.0), True, True,
        options={
            "pixels_per_cell": (pixels_per_cell, pixels_per_cell),
            "orientations": orientations,
            "cells_per_block": (cells_per_block, cells_per_block),
            "block_norm": block_norm,
            "correlation": correlation,
        },
        resolve=resolve,
        description="correlation of HOG features of min-max maps; pixels_per_cell capped to "
        "min(pixels_per_cell, min(H, W) // cells_per_block)",
    )  # fmt: skip


def get(name: str, **settings: Any) -> Score:
    """The score registered under ``name``, built with ``settings`` (e.g. ``data_range=2.0``).

    Example:
        >>> get("ssim", data_range=2.0).settings()["data_range"]
        2.0
    """
    return _REGISTRY.get(name, **settings)


def ranking_preference() -> builtins.list[str]:
    """The scores in the order the method ranking prefers them (the paper's main ones first).

    Example:
        >>> ranking_preference()[:2]
        ['spearman_abs', 'ssim']
    """
    ranked = [(_REGISTRY.meta(n).get("ranking"), n) for n in _REGISTRY.list()]
    return [n for r, n in sorted((r, n) for r, n in ranked if r is not None)] + [
        n for r, n in ranked if r is None]


def list() -> builtins.list[str]:  # noqa: A001 - the registry's public name
    """Names of the registered scores.

    Example:
        >>> "spearman_abs" in list()
        True
    """
    return _REGISTRY.list()
