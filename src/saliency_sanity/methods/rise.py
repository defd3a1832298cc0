"""RISE (Petsiuk, Das & Saenko 2018): randomized input sampling for explanation.

Masks, as in the authors' code: ``N`` binary grids of ``s x s`` cells, each cell kept with
probability ``p1``; each grid upsampled bilinearly (as ``skimage.transform.resize(order=1,
mode="reflect")``: half-pixel centres, mirrored borders) to ``(s + 1) * cell`` pixels with
``cell = ceil(H / s)`` (per axis), then cropped to ``H x W`` at a random shift in
``[0, cell)`` per axis. The saliency of each pixel is

    sal = sum_i f(x * M_i) M_i / (N * p1)

with ``f`` the target's softmax probability (``score="logit"``: its logit). All images of a
batch see the same masks.

Grids and shifts are drawn from a private ``torch.Generator`` seeded with ``seed``, on the
CPU: the grids (``torch.rand(N, s, s) < p1``), then the row shifts, then the column shifts.
:func:`rise_grids` and :func:`rise_masks` expose them. The masks are built chunk by chunk as the
masked images are run, ``internal_batch_size`` rows per forward pass, so memory does not grow
with ``N``. The checks reseed RISE per batch with a seed that is the same at every
randomization stage (the masks are held fixed; map changes come from the model).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .base import Method, batches, copies_per_pass
from .cam_family import check_score, target_scores
from .registry import METHODS


def _check(n_masks: Any, s: Any, p1: Any) -> None:
    if not isinstance(n_masks, int) or isinstance(n_masks, bool) or n_masks <= 0:
        raise ValueError(f"rise: n_masks (N) must be a positive integer, got {n_masks!r}")
    if not isinstance(s, int) or isinstance(s, bool) or s < 1:
        raise ValueError(f"rise: s (cells per side of the mask grid) must be a positive integer, "
                         f"got {s!r}")
    if not isinstance(p1, (int, float)) or isinstance(p1, bool) or not 0 < p1 < 1:
        raise ValueError(f"rise: p1 (probability that a cell is kept) must lie in (0, 1), "
                         f"got {p1!r}")


def rise_grids(n_masks: int, s: int, p1: float, size: tuple[int, int], seed: int
               ) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """The random part of RISE's masks: ``(grids, shifts, cell)``.

    ``grids`` (N, s, s) float 0/1, ``shifts`` (N, 2) (row, column) offsets of the crop,
    ``cell`` = (ceil(H / s), ceil(W / s)).

    Example:
        >>> g, sh, cell = rise_grids(4, 3, 0.5, (8, 8), seed=0)
        >>> g.shape, sh.shape, cell
        (torch.Size([4, 3, 3]), torch.Size([4, 2]), (3, 3))
    """
    _check(n_masks, s, p1)
    cell = (math.ceil(size[0] / s), math.ceil(size[1] / s))
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    grids = (torch.rand(n_masks, s, s, generator=gen, dtype=torch.float64) < p1).double()
    dy = torch.randint(0, cell[0], (n_masks,), generator=gen)
    dx = torch.randint(0, cell[1], (n_masks,), generator=gen)
    return grids, torch.stack([dy, dx], dim=1), cell


def upsample_matrix(n_in: int, n_out: int, dtype: torch.dtype = torch.float64,
                    device: Any = "cpu") -> torch.Tensor:
    """(n_out, n_in) weights of linear interpolation from ``n_in`` to ``n_out`` samples:
    half-pixel centres (``c = (o + 0.5) n_in / n_out - 0.5``) and mirrored borders (``-1 -> 1``),
    as ``skimage.transform.resize(order=1, mode="reflect", anti_aliasing=False)``.

    Example:
        >>> upsample_matrix(2, 4).tolist()
        [[0.75, 0.25], [0.75, 0.25], [0.25, 0.75], [0.25, 0.75]]
    """
    c = (torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5
    i0 = torch.floor(c)
    f = c - i0
    i0 = i0.long()

    def mirror(i: torch.Tensor) -> torch.Tensor:
        if n_in == 1:
            return torch.zeros_like(i)
        period = 2 * (n_in - 1)
        i = torch.remainder(i, period)
        return torch.where(i > n_in - 1, period - i, i)

    w = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    w.index_put_((rows, mirror(i0)), 1 - f, accumulate=True)
    w.index_put_((rows, mirror(i0 + 1)), f, accumulate=True)
    return w.to(device=device, dtype=dtype)


def masks_from_grids(grids: torch.Tensor, shifts: torch.Tensor, cell: tuple[int, int],
                     size: tuple[int, int], dtype: torch.dtype = torch.float32,
                     device: Any = "cpu") -> torch.Tensor:
    """Upsample and crop grids into masks (n, 1, H, W) (see the module docstring): mask ``i``
    is ``Wy[dy_i : dy_i + H] @ grid_i @ Wx[dx_i : dx_i + W].T`` with the interpolation
    matrices of :func:`upsample_matrix`."""
    s = grids.shape[1]
    wy = upsample_matrix(s, (s + 1) * cell[0], dtype, device)
    wx = upsample_matrix(s, (s + 1) * cell[1], dtype, device)
    sh = shifts.to(device)
    iy = sh[:, :1] + torch.arange(size[0], device=sh.device)  # (n, H)
    ix = sh[:, 1:] + torch.arange(size[1], device=sh.device)  # (n, W)
    g = grids.to(device=device, dtype=dtype)
    return torch.einsum("nhs,nst,nwt->nhw", wy[iy], g, wx[ix]).unsqueeze(1)


def rise_masks(n_masks: int, s: int, p1: float, size: tuple[int, int], seed: int,
               dtype: torch.dtype = torch.float32, device: Any = "cpu") -> torch.Tensor:
    """All N masks (N, 1, H, W) that :class:`RISE` with these settings uses.

    Example:
        >>> m = rise_masks(5, 2, 0.5, (6, 6), seed=1)
        >>> m.shape, bool(((m >= 0) & (m <= 1)).all())
        (torch.Size([5, 1, 6, 6]), True)
    """
    grids, shifts, cell = rise_grids(n_masks, s, p1, size, seed)
    return masks_from_grids(grids, shifts, cell, size, dtype, device)


@METHODS.register("rise")
class RISE(Method):
    """RISE: the mean of random masks weighted by the target score of the masked image.

    Args:
        n_masks: number of masks N (default 6000, as in Rao et al. 2022; the RISE paper used
            4000-8000).
        s: the mask grid has s x s cells (default 6, Rao et al.; RISE paper: 7).
        p1: probability that a cell is kept (default 0.1, Rao et al.; RISE paper: 0.5).
        seed: seed of the private generator of the masks.
        score: "softmax" (default, as in the paper) or "logit".
        internal_batch_size: masked images per forward pass (rounded down to whole masks for
            the batch); None: all at once; "auto" (default): about 4M input elements per pass.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> RISE(n_masks=8, s=2, p1=0.5)(model, torch.randn(3, 1, 4, 4), "predicted").shape
        torch.Size([3, 1, 4, 4])
    """

    name = "rise"
    needs_image = True
    reuse_safe = True
    seeded = True

    def __init__(self, n_masks: int = 6000, s: int = 6, p1: float = 0.1, seed: int = 0,
                 score: str = "softmax", internal_batch_size: int | str | None = "auto") -> None:
        super().__init__()
        _check(n_masks, s, p1)
        copies_per_pass(internal_batch_size, torch.zeros(1, 1), 1)  # validates
        self.n_masks, self.s, self.p1, self.seed = n_masks, s, float(p1), int(seed)
        self.score = check_score(score)
        self.internal_batch_size = internal_batch_size
        self._settings = {"n_masks": n_masks, "s": s, "p1": float(p1), "seed": int(seed),
                          "score": score, "internal_batch_size": internal_batch_size}

    def attribute(self, model: Any, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"rise needs image inputs (B, C, H, W); got shape {tuple(x.shape)}")
        b, _c, h, w = x.shape
        grids, shifts, cell = rise_grids(self.n_masks, self.s, self.p1, (h, w), self.seed)
        sal = torch.zeros(b, h * w, dtype=x.dtype, device=x.device)
        per = copies_per_pass(self.internal_batch_size, x, self.n_masks)
        with torch.no_grad():
            for sl in batches(self.n_masks, per):
                m = masks_from_grids(grids[sl], shifts[sl], cell, (h, w), x.dtype, x.device)
                k = m.shape[0]
                masked = (m.unsqueeze(1) * x.unsqueeze(0)).reshape(k * b, *x.shape[1:])
                sc = target_scores(model(masked), target.repeat(k), self.score).view(k, b)
                sal += sc.to(x.dtype).T @ m.view(k, h * w)
        return (sal / (self.n_masks * self.p1)).view(b, 1, h, w)
