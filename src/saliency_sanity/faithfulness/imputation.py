"""ROAD (Rong et al. 2022): remove and debias by noisy linear imputation.

A fraction of the pixels (MoRF or LeRF by the map) is removed and each removed pixel is given the
weighted mean of its 8 neighbours (axial weight 1/6, diagonal 1/12, neighbours outside the image
left out), removed neighbours being unknowns too: a sparse linear system per image, solved here
as ONE block-diagonal system for every image and percentage of the batch (SciPy's SuperLU, in
float64, each channel a right-hand side), then ``noise`` x N(0, 1) is added to each imputed value.
The weights and the system are those of Quantus 0.6.0's ``noisy_linear_imputation`` (from
github.com/tleemann/road_evaluation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
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


def linear_imputation(x: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
    """``x`` (N, C, H, W) with the pixels where ``removed`` (N, H, W) is True replaced by the
    solution of ROAD's neighbour-mean system (no noise), all N images in one sparse solve.

    Each removed pixel v_i satisfies ``sum_j w_ij v_i = sum_j w_ij u_j`` over its in-image
    neighbours j, where u_j is the neighbour's value (an unknown if removed).

    Example:
        >>> x = torch.zeros(1, 1, 3, 3); x[0, 0, 0] = 1.0
        >>> removed = torch.zeros(1, 3, 3, dtype=torch.bool); removed[0, 1, 1] = True
        >>> round(float(linear_imputation(x, removed)[0, 0, 1, 1]), 4)  # 1/12 + 1/6 + 1/12
        0.3333
    """
    n, c, h, w = x.shape
    hw = h * w
    flat = torch.nonzero(removed.reshape(-1).cpu()).flatten().numpy()
    out = x.detach().clone()
    if flat.size == 0:
        return out
    nu = flat.size
    var = np.full(n * hw, -1, dtype=np.int64)
    var[flat] = np.arange(nu)
    img, pix = np.divmod(flat, hw)
    r, col = np.divmod(pix, w)
    values = x.detach().permute(0, 2, 3, 1).reshape(n * hw, c).to("cpu", torch.float64).numpy()
    diag = np.zeros(nu)
    rhs = np.zeros((nu, c))
    rows, cols, vals = [np.arange(nu)], [np.arange(nu)], []
    for (dr, dc), wt in NEIGHBOUR_WEIGHTS:
        rr, cc = r + dr, col + dc
        valid = np.flatnonzero((rr >= 0) & (rr < h) & (cc >= 0) & (cc < w))
        nb = img[valid] * hw + rr[valid] * w + cc[valid]
        diag[valid] += wt
        nv = var[nb]
        unknown = nv >= 0
        rows.append(valid[unknown])
        cols.append(nv[unknown])
        vals.append(np.full(int(unknown.sum()), -wt))
        known = ~unknown
        rhs[valid[known]] += wt * values[nb[known]]
    a = csc_matrix((np.concatenate([diag, *vals]), (np.concatenate(rows), np.concatenate(cols))),
                   shape=(nu, nu))
    sol = splu(a, permc_spec="COLAMD").solve(rhs)
    filled = torch.from_numpy(sol).to(device=x.device, dtype=x.dtype)
    idx = torch.from_numpy(flat).to(x.device)
    view = out.permute(0, 2, 3, 1).reshape(n * hw, c)
    view[idx] = filled
    return view.reshape(n, h, w, c).permute(0, 3, 1, 2).contiguous()


def noisy_linear_imputation(x: torch.Tensor, removed: torch.Tensor, noise: float = 0.01,
                            seed: int = 0, eps: torch.Tensor | None = None) -> torch.Tensor:
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
    out = linear_imputation(x, removed)
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
         batch_size: int | str | None = "auto") -> torch.Tensor:
    """ROAD: (B, len(percentages)) scores of the explained class after removing the fraction p
    of the pixels (the most relevant first with ``order="morf"``, the least with ``"lerf"``,
    ``"random"``) by noisy linear imputation. ``score="correct"`` gives ROAD's accuracy (1.0
    where the model still predicts the target), as Quantus' ``ROAD`` returns.

    Relevance per pixel is the map summed over channels; ties keep the pixels' row-major order.
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
        checked = not isinstance(target, torch.Tensor | int)
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
        imputed = noisy_linear_imputation(xs, removed, float(noise), seed, eps)
        tg = tgt[idx].repeat(p)

        def make_rows(lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
            return imputed[lo:hi], tg[lo:hi]

        scores = score_rows(model, make_rows, p * nb, rows, score, checked, who)
        out[idx] = scores.view(p, nb).T
    return out
