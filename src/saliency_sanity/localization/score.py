"""The localization score of Rao et al. 2022 (as in the authors' code) and the smoothing step.

Per map: gradient and guided backprop enter as absolute values summed over channels, every
other method as its signed channel sum; the (B, 1, h, w) sum is upsampled bilinearly to the grid
size (``align_corners=False``, as Captum's ``LayerAttribution.interpolate``); THEN negative values
are set to zero; the score is the positive mass inside the target cell over the total positive
mass, and 0 when the total is <= 1e-7. Chance is 1 / n^2.

The total is computed as (mass inside) + (mass outside), which is the sum over the map; written
this way a map with no mass outside the cell scores exactly 1.0, whatever the summation order.

Smoothing (optional, :func:`gaussian_smooth`): a Gaussian blur of the upsampled signed map before
the negatives are zeroed. The authors' code does not publish a kernel; the default sigma is a
tenth of the cell side (2.8 pixels for 28-pixel MNIST cells, 22.4 for 224-pixel ImageNet cells),
the kernel ``2 * ceil(3 sigma) + 1`` wide, zero padding (no mass enters from outside the grid).
A tenth of a cell blurs away pixel-scale sign changes (Gradient x Input, IG alternate in sign
from pixel to pixel) while moving little mass across a cell border.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

#: methods whose maps enter as absolute values (the authors' code: Captum Saliency with abs,
#: guided backprop with abs)
ABS_METHODS = ("gradient", "guided_backprop")
#: below this total positive mass the score is 0 (the authors' code)
EPS = 1e-7


def channel_sum(maps: torch.Tensor, absolute: bool) -> torch.Tensor:
    """(B, C, h, w) -> (B, 1, h, w): the (absolute, if ``absolute``) sum over channels.

    Example:
        >>> channel_sum(torch.tensor([[[[1.0]], [[-3.0]]]]), absolute=True).item()
        4.0
    """
    if maps.ndim != 4:
        raise ValueError(f"localization needs spatial maps (B, C, h, w); got {tuple(maps.shape)}")
    return (maps.abs() if absolute else maps).sum(dim=1, keepdim=True)


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling (``align_corners=False``) of (B, 1, h, w) maps to ``size``.

    Example:
        >>> upsample(torch.ones(1, 1, 2, 2), (4, 4)).shape
        torch.Size([1, 1, 4, 4])
    """
    if tuple(maps.shape[2:]) == tuple(size):
        return maps
    return F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=False)


def smoothing_settings(smoothing: Any, cell: tuple[int, int]) -> dict[str, Any] | None:
    """Resolve ``smoothing`` (None/False: off; True: defaults; a number: sigma in pixels; a dict
    with ``sigma`` and/or ``kernel_size``) for cells of size ``cell``.

    Example:
        >>> smoothing_settings(True, (28, 28))
        {'sigma': 2.8, 'kernel_size': 19}
    """
    if smoothing is None or smoothing is False:
        return None
    if smoothing is True:
        spec: dict[str, Any] = {}
    elif isinstance(smoothing, (int, float)) and not isinstance(smoothing, bool):
        spec = {"sigma": float(smoothing)}
    elif isinstance(smoothing, Mapping):
        unknown = set(smoothing) - {"sigma", "kernel_size"}
        if unknown:
            raise ValueError(f"smoothing: unknown settings {sorted(unknown)}; use sigma and "
                             "kernel_size")
        spec = dict(smoothing)
    else:
        raise TypeError(f"smoothing must be None, True, a sigma in pixels or a dict, got "
                        f"{smoothing!r}")
    sigma = float(spec.get("sigma", round(0.1 * min(cell), 4)))
    if not sigma > 0 or not math.isfinite(sigma):
        raise ValueError(f"smoothing: sigma must be a positive number of pixels, got {sigma}")
    size = spec.get("kernel_size", 2 * math.ceil(3 * sigma) + 1)
    if not isinstance(size, int) or size < 1 or size % 2 == 0:
        raise ValueError(f"smoothing: kernel_size must be a positive odd integer, got {size!r}")
    return {"sigma": sigma, "kernel_size": size}


def gaussian_smooth(maps: torch.Tensor, sigma: float, kernel_size: int) -> torch.Tensor:
    """Separable Gaussian blur of (B, 1, H, W) maps, zero padding, weights summing to 1.

    Example:
        >>> m = torch.zeros(1, 1, 9, 9); m[0, 0, 4, 4] = 1.0
        >>> round(gaussian_smooth(m, 1.0, 7).sum().item(), 6)
        1.0
    """
    r = kernel_size // 2
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    g = (g / g.sum()).to(maps.dtype).to(maps.device)
    out = F.conv2d(maps, g.view(1, 1, 1, -1), padding=(0, r))
    return F.conv2d(out, g.view(1, 1, -1, 1), padding=(r, 0))


def cell_mask(size: tuple[int, int], k: int, n: int, device: Any = None) -> torch.Tensor:
    """Boolean (H, W) mask of cell k (row-major) of an n x n grid.

    Example:
        >>> cell_mask((4, 4), 1, 2).int().tolist()[0]
        [0, 0, 1, 1]
    """
    h, w = size[0] // n, size[1] // n
    r, q = divmod(k, n)
    mask = torch.zeros(size, dtype=torch.bool, device=device)
    mask[r * h:(r + 1) * h, q * w:(q + 1) * w] = True
    return mask


def masses(maps: torch.Tensor, k: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Positive mass inside and outside cell k of upsampled (B, 1, H, W) maps (float64).

    Example:
        >>> m = torch.tensor([[[[1.0, -2.0], [3.0, 0.5]]]])
        >>> [t.item() for t in masses(m, 0, 2)]
        [1.0, 3.5]
    """
    pos = torch.relu(maps[:, 0]).double()
    h, w = pos.shape[1] // n, pos.shape[2] // n
    r, q = divmod(k, n)
    rows, cols = slice(r * h, (r + 1) * h), slice(q * w, (q + 1) * w)
    inside = pos[:, rows, cols].sum(dim=(1, 2))
    rest = pos.clone()
    rest[:, rows, cols] = 0
    return inside, rest.sum(dim=(1, 2))


def localization(maps: torch.Tensor, k: int, n: int) -> torch.Tensor:
    """Positive mass in cell k over the total positive mass; 0 where the total <= 1e-7.

    ``maps``: upsampled (B, 1, H, W) maps of the grid. Returns (B,) float64.

    Example:
        >>> m = torch.zeros(2, 1, 4, 4); m[0, 0, :2, :2] = 1.0; m[0, 0, 3, 3] = -5.0
        >>> m[1, 0, 0, 0], m[1, 0, 3, 3] = 1.0, 3.0
        >>> localization(m, 0, 2).tolist()
        [1.0, 0.25]
    """
    inside, outside = masses(maps, k, n)
    total = inside + outside
    return torch.where(total > EPS, inside / total.clamp_min(EPS), torch.zeros_like(total))
