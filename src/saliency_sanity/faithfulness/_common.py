"""Shared pieces of the perturbation curves: validation, replacement images, the batched scorer.

Nothing here touches torch's global RNG: random draws come from a private ``torch.Generator``
seeded from the caller's ``seed`` (drawn on the CPU, then moved, so a seed gives the same numbers
on every device).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F

from ..methods.base import (
    Target,
    _check_target_shape,
    check_input,
    check_logits,
    check_target_range,
    resolve_target,
)

#: input elements per forward pass when ``batch_size="auto"`` (as the methods' rule), clamped
AUTO_ELEMENTS, AUTO_MIN, AUTO_MAX = 2**22, 64, 256

#: RISE's blur (Petsiuk et al. 2018): an 11 x 11 Gaussian kernel with sigma 5
BLUR_KERNEL, BLUR_SIGMA = 11, 5.0


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------
def check_images(x: Any, maps: Any, who: str) -> torch.Tensor:
    """Check ``x`` (finite float (B, C, H, W)) and ``maps`` (x's shape or (B, 1, H, W)).

    Returns the per-pixel relevance, the maps summed over channels in float64, shape (B, H, W),
    on ``x.device``.

    Example:
        >>> check_images(torch.zeros(2, 3, 4, 4), torch.ones(2, 1, 4, 4), "f").shape
        torch.Size([2, 4, 4])
        >>> check_images(torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4), "f")
        Traceback (most recent call last):
        ...
        ValueError: f: maps must have x's shape (2, 3, 4, 4) or (2, 1, 4, 4); got (2, 3, 4)
    """
    check_input(x, who=who)
    if x.ndim != 4:
        raise ValueError(f"{who}: x must be a batch of images (B, C, H, W); got shape "
                         f"{tuple(x.shape)}")
    if not isinstance(maps, torch.Tensor):
        raise TypeError(f"{who}: maps must be a torch.Tensor, got {type(maps).__name__}")
    b, c, h, w = x.shape
    if tuple(maps.shape) not in ((b, c, h, w), (b, 1, h, w)):
        raise ValueError(f"{who}: maps must have x's shape {(b, c, h, w)} or {(b, 1, h, w)}; "
                         f"got {tuple(maps.shape)}")
    if maps.is_complex() or maps.dtype == torch.bool:
        raise TypeError(f"{who}: maps must be real numbers, got dtype {maps.dtype}")
    return maps.detach().to(device=x.device, dtype=torch.float64).sum(dim=1)


def finite_samples(relevance: torch.Tensor, who: str) -> torch.Tensor:
    """Bool (B,): samples whose map is finite. Warns, naming the others (their curves are NaN).

    Example:
        >>> r = torch.zeros(3, 2, 2); r[1, 0, 0] = float("nan")
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as w:
        ...     warnings.simplefilter("always")
        ...     ok = finite_samples(r, "f")
        >>> ok.tolist(), str(w[0].message)
        ([True, False, True], 'f: the maps of samples [1] contain NaN or inf: their curves are NaN')
    """
    ok = torch.isfinite(relevance).flatten(1).all(dim=1)
    if not bool(ok.all()):
        bad = torch.nonzero(~ok).flatten().tolist()
        warnings.warn(f"{who}: the maps of samples {bad} contain NaN or inf: their curves are NaN",
                      RuntimeWarning, stacklevel=3)
    return ok


def check_order(order: str, who: str) -> str:
    if order not in ORDERS:
        raise ValueError(f"{who}: unknown order {order!r}; known: {sorted(ORDERS)}")
    return order


def resolve(model: Any, x: torch.Tensor, target: Target, who: str) -> torch.Tensor:
    """A LongTensor of targets (B,); a given tensor's range is checked on the forward passes.
    ``"predicted"`` costs one forward pass on the clean ``x``."""
    if not callable(model):
        raise TypeError(f"{who}: model must be an nn.Module (or a callable), got "
                        f"{type(model).__name__}")
    tgt = _check_target_shape(target, x)
    if isinstance(tgt, str):
        return resolve_target(model, x, tgt, who=who)
    return tgt


def check_seed(seed: Any, who: str) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"{who}: seed must be an int, got {type(seed).__name__}")
    return int(seed)


def generator(seed: int, stream: int) -> torch.Generator:
    """A private CPU generator for one stream of draws (noise, random order, ...)."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + stream) % 2**63)


# ---------------------------------------------------------------------------------------------
# orders
# ---------------------------------------------------------------------------------------------
def _morf(rel: torch.Tensor, seed: int) -> torch.Tensor:
    return torch.sort(rel, dim=1, descending=True, stable=True).indices


def _lerf(rel: torch.Tensor, seed: int) -> torch.Tensor:
    return torch.sort(rel, dim=1, stable=True).indices


def _random(rel: torch.Tensor, seed: int) -> torch.Tensor:
    keys = torch.rand(rel.shape, generator=generator(seed, 1), dtype=torch.float64)
    return torch.sort(keys, dim=1, stable=True).indices.to(rel.device)


#: unit orders: (B, U) relevance -> (B, U) unit indices, first removed first. Ties (equal
#: relevance) keep the units' index order (row-major): a stable sort.
ORDERS: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {
    "morf": _morf, "lerf": _lerf, "random": _random,
}


def ranks(relevance: torch.Tensor, order: str, seed: int) -> torch.Tensor:
    """(B, U) relevance per unit -> (B, U) position of each unit in the removal order."""
    idx = ORDERS[order](relevance, seed)
    pos = torch.arange(idx.shape[1], device=idx.device).expand_as(idx)
    return torch.empty_like(idx).scatter_(1, idx, pos)


# ---------------------------------------------------------------------------------------------
# replacement images
# ---------------------------------------------------------------------------------------------
def _uniform(x: torch.Tensor, seed: int) -> torch.Tensor:
    lo = x.flatten(1).amin(dim=1).view(-1, 1, 1, 1)
    hi = x.flatten(1).amax(dim=1).view(-1, 1, 1, 1)
    u = torch.rand(x.shape, generator=generator(seed, 0), dtype=x.dtype).to(x.device)
    return lo + (hi - lo) * u


def _black(x: torch.Tensor, seed: int) -> torch.Tensor:
    return torch.zeros_like(x)


def _min(x: torch.Tensor, seed: int) -> torch.Tensor:
    return x.flatten(1).amin(dim=1).view(-1, 1, 1, 1).expand_as(x).clone()


def _mean(x: torch.Tensor, seed: int) -> torch.Tensor:
    return x.mean(dim=(2, 3), keepdim=True).expand_as(x).clone()


def gaussian_blur(x: torch.Tensor, kernel: int = BLUR_KERNEL, sigma: float = BLUR_SIGMA
                  ) -> torch.Tensor:
    """Each channel blurred by a normalised ``kernel`` x ``kernel`` Gaussian (reflect padding;
    replicate where the image is smaller than the kernel's half width).

    Example:
        >>> gaussian_blur(torch.ones(1, 2, 5, 5)).allclose(torch.ones(1, 2, 5, 5))
        True
    """
    half = kernel // 2
    t = torch.arange(kernel, dtype=torch.float64) - half
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = (g / g.sum()).to(device=x.device, dtype=x.dtype)
    b, c, h, w = x.shape
    mode = "reflect" if min(h, w) > half else "replicate"
    y = F.pad(x.reshape(b * c, 1, h, w), (half, half, half, half), mode=mode)
    y = F.conv2d(y, g.view(1, 1, 1, -1))
    y = F.conv2d(y, g.view(1, 1, -1, 1))
    return y.reshape(b, c, h, w)


def _blur(x: torch.Tensor, seed: int) -> torch.Tensor:
    return gaussian_blur(x)


#: replacement images by name: (x, seed) -> (B, C, H, W)
#: - ``uniform``: independent uniform noise per element in the sample's range [min x, max x];
#: - ``black``: 0; ``min``: the sample's minimum (Quantus' "black");
#: - ``mean``: the sample's per-channel mean (pass a number or a (C, 1, 1) tensor for a data mean);
#: - ``blur``: the input blurred by RISE's 11 x 11 Gaussian, sigma 5.
REPLACEMENTS: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {
    "uniform": _uniform, "black": _black, "min": _min, "mean": _mean, "blur": _blur,
}


def replacement_image(x: torch.Tensor, replacement: str | float | torch.Tensor, seed: int,
                      who: str) -> torch.Tensor:
    """The (B, C, H, W) image that removed pixels take: a name of :data:`REPLACEMENTS`, a number,
    or a tensor broadcastable to ``x`` (a data mean per channel, a baseline image).

    Example:
        >>> replacement_image(torch.ones(1, 1, 2, 2), 0.5, 0, "f").flatten().tolist()
        [0.5, 0.5, 0.5, 0.5]
        >>> replacement_image(torch.ones(1, 1, 2, 2), "gray", 0, "f")
        Traceback (most recent call last):
        ...
        ValueError: f: unknown replacement 'gray'; known: ['black', 'blur', 'mean', 'min', \
'uniform'], a number or a tensor
    """
    if isinstance(replacement, str):
        if replacement not in REPLACEMENTS:
            raise ValueError(f"{who}: unknown replacement {replacement!r}; known: "
                             f"{sorted(REPLACEMENTS)}, a number or a tensor")
        return REPLACEMENTS[replacement](x, seed)
    if isinstance(replacement, bool):
        raise TypeError(f"{who}: replacement must be a name, a number or a tensor, got a bool")
    if isinstance(replacement, (int, float)):
        if not math.isfinite(replacement):
            raise ValueError(f"{who}: replacement must be finite, got {replacement}")
        return torch.full_like(x, float(replacement))
    if isinstance(replacement, torch.Tensor):
        try:
            out = torch.broadcast_to(replacement.to(device=x.device, dtype=x.dtype), x.shape)
        except RuntimeError:
            raise ValueError(f"{who}: a replacement tensor must broadcast to x's shape "
                             f"{tuple(x.shape)}; got {tuple(replacement.shape)}") from None
        if not bool(torch.isfinite(out).all()):
            raise ValueError(f"{who}: the replacement tensor contains NaN or inf")
        return out.clone()
    raise TypeError(f"{who}: replacement must be a name, a number or a tensor, got "
                    f"{type(replacement).__name__}")


# ---------------------------------------------------------------------------------------------
# scores of the explained class
# ---------------------------------------------------------------------------------------------
def _softmax(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return logits.softmax(dim=1).gather(1, target.view(-1, 1)).squeeze(1)


def _logit(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return logits.gather(1, target.view(-1, 1)).squeeze(1)


def _correct(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (logits.argmax(dim=1) == target).to(logits.dtype)


#: what a curve records for the explained class: its softmax probability (default), its logit,
#: or 1.0 / 0.0 whether the model still predicts it (ROAD's accuracy)
SCORES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "softmax": _softmax, "logit": _logit, "correct": _correct,
}


def check_score(score: str, who: str) -> str:
    if score not in SCORES:
        raise ValueError(f"{who}: unknown score {score!r}; known: {sorted(SCORES)}")
    return score


def rows_per_pass(batch_size: int | str | None, x: torch.Tensor, who: str) -> int | None:
    """Rows (perturbed images) per forward pass: an int, None (all at once), or ``"auto"``
    (about 4M input elements, clamped to 64-256 rows, as the methods' rule).

    Example:
        >>> rows_per_pass("auto", torch.zeros(1, 1, 28, 28), "f")
        256
        >>> rows_per_pass("auto", torch.zeros(1, 3, 224, 224), "f")
        64
    """
    if batch_size is None:
        return None
    if batch_size == "auto":
        return min(AUTO_MAX, max(AUTO_MIN, AUTO_ELEMENTS // max(1, x[0].numel())))
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"{who}: batch_size must be a positive int, None or 'auto'; got "
                         f"{batch_size!r}")
    return batch_size


def chunks(n: int, size: int | None) -> Iterator[tuple[int, int]]:
    step = n if not size else size
    for lo in range(0, n, step):
        yield lo, min(n, lo + step)


def score_rows(model: Any, make_rows: Callable[[int, int], tuple[torch.Tensor, torch.Tensor]],
               n: int, rows: int | None, score: str, classes_checked: bool, who: str
               ) -> torch.Tensor:
    """Scores of ``n`` rows, built ``rows`` at a time by ``make_rows(lo, hi)`` -> (inputs,
    targets), in forward passes without gradients. Returns (n,) float64."""
    fn = SCORES[score]
    out = []
    for lo, hi in chunks(n, rows):
        inputs, tgt = make_rows(lo, hi)
        logits = check_logits(model(inputs), hi - lo, who)
        if not classes_checked:
            check_target_range(tgt, logits.shape[1], who)
        out.append(fn(logits, tgt).to(torch.float64))
    return torch.cat(out)
