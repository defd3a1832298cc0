"""ROAD (Rong et al. 2022): remove and debias by noisy linear imputation.

A fraction of the pixels (MoRF or LeRF by the map) is removed and each removed pixel is given the
weighted mean of its 8 neighbours (axial weight 1/6, diagonal 1/12, neighbours outside the image
left out), removed neighbours being unknowns too: a sparse linear system per image, solved here
as ONE block-diagonal system for every image and percentage of the batch (SciPy's SuperLU on the
unknowns in nested dissection order, in float64, each channel a right-hand side), then
``noise`` x N(0, 1) is added to each imputed value. The weights and the system are those of
Quantus 0.6.0's ``noisy_linear_imputation`` (from github.com/tleemann/road_evaluation).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.sparse import csc_matrix
from scipy.sparse.linalg import splu

from .._guard import model_guard
from ..methods.base import Target
from ._common import (
    check_images,
    check_order,
    check_score,
    check_seed,
    finite_samples,
    generator,
    ranks,
    resolve,
    rows_per_pass,
    score_rows,
)

#: (row offset, column offset) -> weight of the neighbour (ROAD's / Quantus' values)
NEIGHBOUR_WEIGHTS: tuple[tuple[tuple[int, int], float], ...] = (
    ((1, 1), 1 / 12), ((0, 1), 1 / 6), ((-1, 1), 1 / 12), ((1, -1), 1 / 12),
    ((0, -1), 1 / 6), ((-1, -1), 1 / 12), ((1, 0), 1 / 6), ((-1, 0), 1 / 6),
)

DEFAULT_PERCENTAGES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def linear_imputation(x: torch.Tensor, removed: torch.Tensor, solver: str = "auto",
                      tol: float = 1e-10, max_iter: int | None = None) -> torch.Tensor:
    """``x`` (N, C, H, W) with the pixels where ``removed`` (N, H, W) is True replaced by the
    solution of ROAD's neighbour-mean system (no noise), all N images in one solve.

    Each removed pixel v_i satisfies ``sum_j w_ij v_i = sum_j w_ij u_j`` over its in-image
    neighbours j, where u_j is the neighbour's value (an unknown if removed).

    ``solver``: ``"direct"`` (SciPy SuperLU on the block-diagonal system, on the CPU),
    ``"cg"`` (Jacobi-preconditioned conjugate gradient in torch on x's device, every image and
    channel at once, until each residual is below ``tol`` times its right-hand side), or
    ``"auto"`` (direct on the CPU, cg on other devices). Both solve in float64.

    Example:
        >>> x = torch.zeros(1, 1, 3, 3); x[0, 0, 0] = 1.0
        >>> removed = torch.zeros(1, 3, 3, dtype=torch.bool); removed[0, 1, 1] = True
        >>> round(float(linear_imputation(x, removed)[0, 0, 1, 1]), 4)  # 1/12 + 1/6 + 1/12
        0.3333
        >>> round(float(linear_imputation(x, removed, solver="cg")[0, 0, 1, 1]), 4)
        0.3333
    """
    if solver not in ("auto", "direct", "cg"):
        raise ValueError(f"linear_imputation: unknown solver {solver!r}; known: ['auto', 'cg', "
                         f"'direct']")
    if solver == "cg" or (solver == "auto" and x.device.type != "cpu"):
        return _cg_imputation(x, removed, tol, max_iter)
    return _direct_imputation(x, removed)


@functools.lru_cache(maxsize=32)
def dissection_order(h: int, w: int) -> np.ndarray:
    """(H * W,) position of each pixel of an H x W grid in a nested dissection order: the grid
    is split by its middle row (or column, along the longer side) into two halves numbered
    first (recursively) and the separating line numbered last. With ROAD's 8-neighbour stencil a
    one-pixel line separates the halves, so ordering the unknowns this way before an LU
    factorization without pivoting keeps the fill small (about 3x less time than SuperLU's
    COLAMD on 224 x 224 images); restricted to any subset of the pixels it still separates.

    Example:
        >>> dissection_order(3, 3).reshape(3, 3).tolist()   # middle row last
        [[0, 1, 2], [6, 7, 8], [3, 4, 5]]
    """
    key = np.empty((h, w), dtype=np.int64)
    k = 0
    stack: list[tuple[int, int, int, int, int]] = [(0, h, 0, w, 0)]
    while stack:  # post-order: both halves, then the separator
        r0, r1, c0, c1, state = stack.pop()
        hh, ww = r1 - r0, c1 - c0
        if hh <= 0 or ww <= 0:
            continue
        if hh * ww <= 4 or state == 1:
            if state == 1:  # the separator of this box, once its halves are numbered
                r0, r1, c0, c1 = ((r0 + hh // 2, r0 + hh // 2 + 1, c0, c1) if hh >= ww
                                  else (r0, r1, c0 + ww // 2, c0 + ww // 2 + 1))
            size = (r1 - r0) * (c1 - c0)
            key[r0:r1, c0:c1] = np.arange(k, k + size).reshape(r1 - r0, c1 - c0)
            k += size
            continue
        stack.append((r0, r1, c0, c1, 1))
        if hh >= ww:
            m = r0 + hh // 2
            stack += [(m + 1, r1, c0, c1, 0), (r0, m, c0, c1, 0)]
        else:
            m = c0 + ww // 2
            stack += [(r0, r1, m + 1, c1, 0), (r0, r1, c0, m, 0)]
    return key.reshape(-1)


def _kernel() -> torch.Tensor:
    k = torch.zeros(3, 3, dtype=torch.float64)
    for (dr, dc), wt in NEIGHBOUR_WEIGHTS:
        k[1 + dr, 1 + dc] = wt
    return k.view(1, 1, 3, 3)


def _direct_imputation(x: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
    """The block-diagonal system of every image, assembled on whole grids (shifted slices and
    one convolution, no gathers per neighbour), its unknowns in nested dissection order per
    image, factorized by SuperLU without pivoting (the matrix is symmetric, positive definite and
    diagonally dominant) and solved for every channel at once, in float64."""
    n, c, h, w = x.shape
    hw = h * w
    rem = removed.reshape(n, h, w).cpu().numpy()
    out = x.detach().clone()
    flat = np.flatnonzero(rem)
    if flat.size == 0:
        return out
    img, pix = np.divmod(flat, hw)
    flat = flat[np.argsort(img * hw + dissection_order(h, w)[pix], kind="stable")]
    nu = flat.size
    var = np.full(n * hw, -1, dtype=np.int64)
    var[flat] = np.arange(nu)
    var = var.reshape(n, h, w)
    kern = _kernel()
    # right-hand side: sum_j w_ij u_j over the kept in-image neighbours (zero padding = outside)
    kept = torch.from_numpy(~rem).unsqueeze(1).to(torch.float64)
    xd = x.detach().to("cpu", torch.float64)
    rhs = F.conv2d((xd * kept).reshape(n * c, 1, h, w), kern, padding=1)
    rhs = rhs.view(n, c, hw).permute(0, 2, 1).reshape(n * hw, c).numpy()[flat]
    diag = F.conv2d(torch.ones(1, 1, h, w, dtype=torch.float64), kern, padding=1).view(hw)
    rows, cols, vals = [np.arange(nu)], [np.arange(nu)], [diag.numpy()[flat % hw]]
    for (dr, dc), wt in NEIGHBOUR_WEIGHTS:  # removed pixel and removed neighbour: -w_ij
        r0, r1, c0, c1 = max(0, -dr), h - max(0, dr), max(0, -dc), w - max(0, dc)
        here, there = var[:, r0:r1, c0:c1], var[:, r0 + dr:r1 + dr, c0 + dc:c1 + dc]
        both = (here >= 0) & (there >= 0)
        rows.append(here[both])
        cols.append(there[both])
        vals.append(np.full(rows[-1].size, -wt))
    a = csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                   shape=(nu, nu))
    lu = splu(a, permc_spec="NATURAL", diag_pivot_thresh=0.0, options={"SymmetricMode": True})
    filled = torch.from_numpy(lu.solve(rhs)).to(device=x.device, dtype=x.dtype)
    idx = torch.from_numpy(flat).to(x.device)
    view = out.permute(0, 2, 3, 1).reshape(n * hw, c)
    view[idx] = filled
    return view.reshape(n, h, w, c).permute(0, 3, 1, 2).contiguous()


def _cg_imputation(x: torch.Tensor, removed: torch.Tensor, tol: float, max_iter: int | None
                   ) -> torch.Tensor:
    """The same system by preconditioned conjugate gradient (it is symmetric positive definite:
    every group of removed pixels borders a kept one while some pixel is kept)."""
    n, c, h, w = x.shape
    dev, f64 = x.device, torch.float64
    k = _kernel().to(dev)

    def spread(v: torch.Tensor) -> torch.Tensor:  # sum_j w_ij v_j over in-image neighbours
        return F.conv2d(v.reshape(n * c, 1, h, w), k, padding=1).view(n, c, h, w)

    u = removed.to(device=dev).unsqueeze(1).to(f64)
    xd = x.detach().to(f64)
    diag = F.conv2d(torch.ones(1, 1, h, w, dtype=f64, device=dev), k, padding=1)
    b = u * spread((1 - u) * xd)
    inv = u / diag

    def op(v: torch.Tensor) -> torch.Tensor:
        return u * (diag * v - spread(u * v))

    dims = (2, 3)
    v = torch.zeros_like(xd)
    r = b.clone()
    z = inv * r
    p = z.clone()
    rz = (r * z).sum(dims, keepdim=True)
    bound = tol * b.norm(dim=dims, keepdim=True)
    limit = max_iter if max_iter is not None else 50 * (h + w) + 100
    for it in range(limit):
        ap = op(p)
        alpha = rz / (p * ap).sum(dims, keepdim=True).clamp_min(1e-300)
        v = v + alpha * p
        r = r - alpha * ap
        if it % 10 == 9 and bool((r.norm(dim=dims, keepdim=True) <= bound).all()):
            break
        z = inv * r
        rz_new = (r * z).sum(dims, keepdim=True)
        p = z + (rz_new / rz.clamp_min(1e-300)) * p
        rz = rz_new
    else:
        warnings.warn(f"linear_imputation: conjugate gradient stopped after {limit} iterations "
                      f"above tol={tol}", RuntimeWarning, stacklevel=3)
    return torch.where(removed.to(dev).unsqueeze(1), v.to(x.dtype), x.detach())


def noisy_linear_imputation(x: torch.Tensor, removed: torch.Tensor, noise: float = 0.01,
                            seed: int = 0, eps: torch.Tensor | None = None,
                            solver: str = "auto") -> torch.Tensor:
    """:func:`linear_imputation` plus ``noise`` x N(0, 1) on every imputed value: ``eps`` (x's
    shape) if given, else drawn for every element of ``x`` from a private generator seeded from
    ``seed`` (so a sample's noise does not depend on which pixels the others remove).

    Example:
        >>> x = torch.rand(2, 3, 5, 5, generator=torch.Generator().manual_seed(0))
        >>> removed = torch.rand(2, 5, 5, generator=torch.Generator().manual_seed(1)) < 0.5
        >>> y = noisy_linear_imputation(x, removed, noise=0.1)
        >>> kept = ~removed.unsqueeze(1).expand_as(x)
        >>> bool((y[kept] == x[kept]).all()), bool((y[~kept] != x[~kept]).all())
        (True, True)
    """
    out = linear_imputation(x, removed, solver=solver)
    if noise > 0:
        if eps is None:
            eps = torch.randn(x.shape, generator=generator(seed, 2), dtype=x.dtype)
        eps = eps.to(device=x.device, dtype=x.dtype)
        out = torch.where(removed.unsqueeze(1), out + noise * eps, out)
    return out


def removal_counts(percentages: Sequence[float], hw: int, who: str = "road") -> list[int]:
    """Pixels removed at each fraction: floor(H * W * p) (Quantus: ``int(a_size * p / 100)``).

    Example:
        >>> removal_counts((0.1, 0.29), 100)
        [10, 29]
        >>> removal_counts((0.0, 0.5), 100)
        Traceback (most recent call last):
        ...
        ValueError: road: percentages must lie in (0, 1) (fractions, not percents); got [0.0, 0.5]
    """
    ps = list(percentages) if not isinstance(percentages, (str, bytes)) else None
    if not ps or any(isinstance(p, bool) or not isinstance(p, (int, float)) for p in ps):
        raise TypeError(f"{who}: percentages must be a non-empty sequence of numbers; got "
                        f"{percentages!r}")
    if not all(0.0 < p < 1.0 for p in ps):
        raise ValueError(f"{who}: percentages must lie in (0, 1) (fractions, not percents); got "
                         f"{ps}")
    return [int(math.floor(hw * float(p) + 1e-9)) for p in ps]


def road(model: Any, x: torch.Tensor, maps: torch.Tensor, target: Target = "predicted",
         percentages: Sequence[float] = DEFAULT_PERCENTAGES, order: str = "morf",
         noise: float = 0.01, seed: int = 0, score: str = "softmax",
         batch_size: int | str | None = "auto", solver: str = "auto") -> torch.Tensor:
    """ROAD: (B, len(percentages)) scores of the explained class after removing the fraction p
    of the pixels (the most relevant first with ``order="morf"``, the least with ``"lerf"``,
    ``"random"``) by noisy linear imputation. ``score="correct"`` gives ROAD's accuracy (1.0
    where the model still predicts the target), as Quantus' ``ROAD`` returns.

    Relevance per pixel is the map summed over channels; ties keep the pixels' row-major order.
    ``solver``: see :func:`linear_imputation` (SuperLU on the CPU, conjugate gradient on a GPU).
    Samples whose map has NaN or inf get NaN rows and a warning.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> x = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
        >>> road(model, x, x, percentages=(0.25, 0.5)).shape
        torch.Size([2, 2])
    """
    who = "road"
    relevance = check_images(x, maps, who)
    check_order(order, who)
    check_score(score, who)
    seed = check_seed(seed, who)
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not noise >= 0 or \
            not math.isfinite(noise):
        raise ValueError(f"{who}: noise must be a finite number >= 0, got {noise!r}")
    if solver not in ("auto", "direct", "cg"):
        raise ValueError(f"{who}: unknown solver {solver!r}; known: ['auto', 'cg', 'direct']")
    b, _, h, w = x.shape
    counts = removal_counts(percentages, h * w, who)
    rows = rows_per_pass(batch_size, x, who)
    x = x.detach()
    ok = finite_samples(relevance, who)
    out = torch.full((b, len(counts)), math.nan, dtype=torch.float64, device=x.device)
    with model_guard(model), torch.no_grad():
        tgt = resolve(model, x, target, who)
        if not bool(ok.any()):
            return out
        checked = isinstance(target, str)  # "predicted": classes already checked
        idx = torch.nonzero(ok).flatten()
        nb, p = len(idx), len(counts)
        # orders and noise drawn for the whole batch, so a sample's row does not depend on
        # which other samples have finite maps
        rel = torch.where(ok.view(-1, 1, 1), relevance, 0.0).reshape(b, h * w)
        rank = ranks(rel, order, seed)[idx].view(1, nb, h, w)
        thresholds = torch.tensor(counts, device=x.device).view(p, 1, 1, 1)
        removed = (rank < thresholds).reshape(p * nb, h, w)          # percentage-major
        xs = x[idx].repeat(p, 1, 1, 1)
        eps = None
        if noise > 0:
            eps = torch.randn((p, *x.shape), generator=generator(seed, 2), dtype=x.dtype)
            eps = eps[:, idx.cpu()].reshape(p * nb, *x.shape[1:])
        imputed = noisy_linear_imputation(xs, removed, float(noise), seed, eps, solver)
        tg = tgt[idx].repeat(p)

        def make_rows(lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
            return imputed[lo:hi], tg[lo:hi]

        scores = score_rows(model, make_rows, p * nb, rows, score, checked, who)
        out[idx] = scores.view(p, nb).T
    return out
