"""Perturbation curves: region perturbation, pixel flipping, insertion and deletion.

One engine for all four. The input's units (k x k regions, or single pixels) are ordered by the
map's relevance (summed over channels and over the unit); at step ``s`` the first ``m_s`` units
of the order take the values of an ``end`` image and the others keep those of a ``start`` image:
removal (region perturbation, pixel flipping, deletion) goes from ``x`` to a replacement image,
insertion from a blurred (or zero) image to ``x``. The curve is the explained class's score at
steps 0 .. L, so ``curve[:, 0]`` is the score of the start image.

All ``B * (L + 1)`` step images are built lazily, a chunk of rows at a time, and go through the
model in large batched forward passes without gradients; the model runs in eval mode under
:func:`saliency_sanity.methods.base.model_guard` and is left exactly as it was.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from .._guard import model_guard
from ..methods.base import Target
from ._common import (
    check_images,
    check_order,
    check_score,
    check_seed,
    finite_samples,
    ranks,
    replacement_image,
    resolve,
    rows_per_pass,
    score_rows,
)


def region_grid(h: int, w: int, k: int) -> tuple[torch.Tensor, int]:
    """(H * W,) region index of each pixel and the number of regions of a k x k grid.

    The grid covers the image padded to a multiple of ``k`` as Quantus pads it: ``p = k - H % k``
    rows, ``floor(p / 2)`` above and ``ceil(p / 2)`` below (columns alike). Regions are numbered
    row-major; padded pixels belong to no image pixel, so border regions are smaller.

    Example:
        >>> ids, n = region_grid(3, 3, 2)   # padded to 4 x 4: 0 rows above, 1 below
        >>> n, ids.view(3, 3).tolist()
        (4, [[0, 0, 1], [0, 0, 1], [2, 2, 3]])
    """
    ph, pw = (-h) % k, (-w) % k
    rows = (torch.arange(h) + ph // 2) // k
    cols = (torch.arange(w) + pw // 2) // k
    n_w = (w + pw) // k
    ids = rows.view(-1, 1) * n_w + cols.view(1, -1)
    return ids.flatten(), ((h + ph) // k) * n_w


def _unit_ranks(relevance: torch.Tensor, k: int, order: str, seed: int,
                overlapping: bool = False) -> tuple[torch.Tensor, int]:
    """(B, 1, H, W) first step at which each pixel is replaced (its unit's position in the
    order), and the unit count.

    Grid: units are the regions of :func:`region_grid`. Overlapping (Samek et al.): a unit is
    the k x k window centred on a pixel (clipped at the border), ordered by the relevance summed
    over the window; a pixel goes at the first step whose window covers it (a min-pool of the
    windows' positions).
    """
    b, h, w = relevance.shape
    if overlapping:
        pad = k // 2
        win = F.avg_pool2d(relevance.unsqueeze(1), k, 1, pad, count_include_pad=True) * (k * k)
        rank = ranks(win.reshape(b, h * w), order, seed).view(b, 1, h, w).to(torch.float64)
        first = -F.max_pool2d(-rank, k, 1, pad)
        return first.to(torch.long), h * w
    ids, n = region_grid(h, w, k)
    ids = ids.to(relevance.device)
    per_unit = torch.zeros(b, n, dtype=relevance.dtype, device=relevance.device)
    per_unit.index_add_(1, ids, relevance.reshape(b, h * w))
    rank = ranks(per_unit, order, seed)
    return rank[:, ids].view(b, 1, h, w), n


def _steps_check(steps: Any, most: int, what: str, who: str) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int):
        raise TypeError(f"{who}: steps must be an int, got {type(steps).__name__}")
    if steps <= 0:
        raise ValueError(f"{who}: steps must be positive, got {steps}")
    if steps > most:
        raise ValueError(f"{who}: steps={steps} is more than the {most} steps that replace all "
                         f"{what}")
    return steps


def perturbation_curve(model: Any, x: torch.Tensor, maps: torch.Tensor, target: Target, *,
                       region: int, per_step: int, steps: int | None, replacement: Any,
                       order: str, seed: int, score: str, batch_size: int | str | None,
                       insert: bool, who: str, overlapping: bool = False) -> torch.Tensor:
    """The shared engine: (B, steps + 1) scores (see the module docstring).

    ``region``: the unit's side k; ``per_step``: units per step; ``steps`` None: until every
    unit is replaced; ``insert``: start from the replacement image and put ``x``'s units back;
    ``overlapping``: windows centred on every pixel instead of a grid (odd ``region``).
    """
    relevance = check_images(x, maps, who)
    check_order(order, who)
    check_score(score, who)
    seed = check_seed(seed, who)
    b, _, h, w = x.shape
    if isinstance(region, bool) or not isinstance(region, int) or region < 1:
        raise ValueError(f"{who}: region must be a positive int, got {region!r}")
    if region > min(h, w):
        raise ValueError(f"{who}: region {region} x {region} is larger than the image "
                         f"({h} x {w})")
    if overlapping and region % 2 == 0:
        raise ValueError(f"{who}: overlapping regions need an odd size (centred on a pixel), "
                         f"got {region}")
    n_units = h * w if overlapping else math.ceil(h / region) * math.ceil(w / region)
    most = math.ceil(n_units / per_step)
    what = (f"{n_units} pixels" if region == 1 else f"{n_units} windows of {region} x {region}"
            if overlapping else f"{n_units} regions of {region} x {region}")
    steps = most if steps is None else _steps_check(steps, most, what, who)
    rows = rows_per_pass(batch_size, x, who)
    x = x.detach()
    base = replacement_image(x, replacement, seed, who)
    start, end = (base, x) if insert else (x, base)
    ok = finite_samples(relevance, who)
    out = torch.full((b, steps + 1), math.nan, dtype=torch.float64, device=x.device)
    with model_guard(model), torch.no_grad():
        tgt = resolve(model, x, target, who)
        if not bool(ok.any()):
            return out
        checked = isinstance(target, str)  # "predicted": classes already checked
        idx = torch.nonzero(ok).flatten()
        # the order is drawn for the whole batch: a sample's curve does not depend on which
        # other samples have finite maps
        rel = torch.where(ok.view(-1, 1, 1), relevance, 0.0)
        rank = _unit_ranks(rel, region, order, seed, overlapping)[0][idx]
        xs, ends, tg = start[idx], end[idx], tgt[idx]
        thresholds = (torch.arange(steps + 1, device=x.device) * per_step).view(-1, 1, 1, 1)
        nb = len(idx)

        def make_rows(lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
            r = torch.arange(lo, hi, device=x.device)
            step, sample = r // nb, r % nb
            mask = rank[sample] < thresholds[step]
            return torch.where(mask, ends[sample], xs[sample]), tg[sample]

        scores = score_rows(model, make_rows, nb * (steps + 1), rows, score, checked, who)
        out[idx] = scores.view(steps + 1, nb).T
    return out


def region_perturbation(model: Any, x: torch.Tensor, maps: torch.Tensor,
                        target: Target = "predicted", region: int = 9, steps: int = 100,
                        replacement: Any = "uniform", order: str = "morf", seed: int = 0,
                        score: str = "softmax", batch_size: int | str | None = "auto",
                        regions: str = "grid") -> torch.Tensor:
    """Samek et al.'s region perturbation: (B, steps + 1) scores of the explained class.

    Step 0 is the clean input; at step s the s most relevant (``order="morf"``; least: ``"lerf"``;
    ``"random"``: a seeded random order) ``region`` x ``region`` regions of a non-overlapping
    grid (padded as Quantus pads, see :func:`region_grid`) hold the ``replacement`` image
    (``"uniform"`` noise in the sample's range, ``"black"`` 0, ``"min"``, ``"mean"``,
    ``"blur"``, a number or a tensor). Relevance is summed per region over channels. Samples
    whose map has NaN or inf get NaN curves and a warning. ``batch_size``: perturbed images per
    forward pass. ``regions="overlapping"``: Samek et al.'s windows centred on each pixel (odd
    ``region``), ordered by the relevance summed over the window; step s replaces the windows of
    the first s centres (they overlap: a step may replace few new pixels).

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> x = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
        >>> curves = region_perturbation(model, x, x, region=2, steps=4)
        >>> curves.shape
        torch.Size([2, 5])
    """
    if regions not in ("grid", "overlapping"):
        raise ValueError(f"region_perturbation: unknown regions {regions!r}; known: ['grid', "
                         f"'overlapping']")
    return perturbation_curve(model, x, maps, target, region=region, per_step=1, steps=steps,
                              replacement=replacement, order=order, seed=seed, score=score,
                              batch_size=batch_size, insert=False, who="region_perturbation",
                              overlapping=regions == "overlapping")


def pixels_count(pixels_per_step: int | float, hw: int, who: str) -> int:
    """Pixels per step from an int (a count) or a float in (0, 1] (a fraction of H * W,
    rounded up).

    Example:
        >>> pixels_count(0.01, 784, "f"), pixels_count(3, 784, "f")
        (8, 3)
    """
    if isinstance(pixels_per_step, bool):
        raise TypeError(f"{who}: pixels_per_step must be an int or a float, got a bool")
    if isinstance(pixels_per_step, int):
        if pixels_per_step < 1:
            raise ValueError(f"{who}: pixels_per_step must be >= 1, got {pixels_per_step}")
        return min(pixels_per_step, hw)
    if isinstance(pixels_per_step, float):
        if not 0.0 < pixels_per_step <= 1.0:
            raise ValueError(f"{who}: a fraction pixels_per_step must lie in (0, 1], got "
                             f"{pixels_per_step}")
        return max(1, math.ceil(hw * pixels_per_step - 1e-9))
    raise TypeError(f"{who}: pixels_per_step must be an int or a float, got "
                    f"{type(pixels_per_step).__name__}")


def _pixel_curve(model: Any, x: torch.Tensor, maps: torch.Tensor, target: Target,
                 pixels_per_step: int | float, steps: int | None, replacement: Any, order: str,
                 seed: int, score: str, batch_size: int | str | None, insert: bool, who: str
                 ) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        check_images(x, maps, who)
    per_step = pixels_count(pixels_per_step, x.shape[2] * x.shape[3], who)
    return perturbation_curve(model, x, maps, target, region=1, per_step=per_step, steps=steps,
                              replacement=replacement, order=order, seed=seed, score=score,
                              batch_size=batch_size, insert=insert, who=who)


def pixel_flipping(model: Any, x: torch.Tensor, maps: torch.Tensor, target: Target = "predicted",
                   pixels_per_step: int | float = 0.01, steps: int | None = None,
                   replacement: Any = "black", order: str = "morf", seed: int = 0,
                   score: str = "softmax", batch_size: int | str | None = "auto"
                   ) -> torch.Tensor:
    """Pixel flipping (Bach et al. 2015): region perturbation with single pixels (all channels
    of a pixel together), ``pixels_per_step`` at a time (an int, or a fraction of H * W).

    Returns (B, steps + 1); ``steps=None`` goes on until every pixel is replaced.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> x = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
        >>> pixel_flipping(model, x, x, pixels_per_step=4).shape
        torch.Size([2, 5])
    """
    return _pixel_curve(model, x, maps, target, pixels_per_step, steps, replacement, order, seed,
                        score, batch_size, False, "pixel_flipping")


def deletion(model: Any, x: torch.Tensor, maps: torch.Tensor, target: Target = "predicted",
             pixels_per_step: int | float = 0.01, steps: int | None = None,
             baseline: Any = "black", order: str = "morf", seed: int = 0,
             score: str = "softmax", batch_size: int | str | None = "auto") -> torch.Tensor:
    """RISE's deletion (Petsiuk et al. 2018): the most relevant pixels first go to ``baseline``
    (0 by default) until none is left; (B, steps + 1), its :func:`~.scores.auc` the score
    (lower is better).

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> x = torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(0))
        >>> deletion(model, x, x, pixels_per_step=8).shape
        torch.Size([1, 3])
    """
    return _pixel_curve(model, x, maps, target, pixels_per_step, steps, baseline, order, seed,
                        score, batch_size, False, "deletion")


def insertion(model: Any, x: torch.Tensor, maps: torch.Tensor, target: Target = "predicted",
              pixels_per_step: int | float = 0.01, steps: int | None = None,
              baseline: Any = "blur", order: str = "morf", seed: int = 0,
              score: str = "softmax", batch_size: int | str | None = "auto") -> torch.Tensor:
    """RISE's insertion: from ``baseline`` (RISE's blurred image by default; ``"black"`` for a
    zero image) the most relevant pixels of ``x`` first are put back until all are; (B, steps +
    1), step 0 is the baseline's score; its :func:`~.scores.auc` the score (higher is better).

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> x = torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(0))
        >>> c = insertion(model, x, x, target=0, pixels_per_step=8, score="logit")
        >>> bool(torch.isclose(c[0, -1], model(x)[0, 0].double()))
        True
    """
    return _pixel_curve(model, x, maps, target, pixels_per_step, steps, baseline, order, seed,
                        score, batch_size, True, "insertion")
