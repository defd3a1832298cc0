"""Batched SSIM equal to scikit-image's ``structural_similarity`` with Gaussian weights."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from . import _backend
from ._common import check_pair, warn_degenerate
from ._rank import acc_dtype

__all__ = ["ssim", "gaussian_kernel1d", "TRUNCATE"]

TRUNCATE = 3.5  # scikit-image's truncation for gaussian_weights=True (11 taps at sigma 1.5)
K1, K2 = 0.01, 0.03


@lru_cache(maxsize=32)
def _kernel_np(sigma: float, radius: int) -> np.ndarray:
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    phi = np.exp(-0.5 / (sigma * sigma) * x**2)
    return phi / phi.sum()


def gaussian_kernel1d(sigma: float, truncate: float = TRUNCATE) -> torch.Tensor:
    """The normalized 1-D Gaussian taps scipy.ndimage.gaussian_filter uses (float64).

    Example:
        >>> gaussian_kernel1d(1.5).shape
        torch.Size([11])
    """
    radius = int(truncate * float(sigma) + 0.5)
    return torch.from_numpy(_kernel_np(float(sigma), radius).copy())


@lru_cache(maxsize=64)
def _reflect_index(n: int, before: int, after: int) -> torch.Tensor:
    """Indices extending 0..n-1 by ``before``/``after`` with scipy's 'reflect' (d c b a|a b c d)."""
    idx = np.arange(-before, n + after)
    period = 2 * n
    idx = np.mod(idx, period)
    idx = np.where(idx >= n, period - 1 - idx, idx)
    return torch.from_numpy(idx)


def _pad_reflect(x: torch.Tensor, pad: int) -> torch.Tensor:
    if pad <= 0:
        return x
    h, w = x.shape[-2:]
    ih = _reflect_index(h, pad, pad).to(x.device)
    iw = _reflect_index(w, pad, pad).to(x.device)
    return x.index_select(-2, ih).index_select(-1, iw)


def _filter_torch(stack: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Valid separable correlation of (N, H, W) with the 1-D kernel along both spatial dims."""
    n, h, w = stack.shape
    kk = k.to(stack.dtype)
    x = stack.unsqueeze(1)
    x = torch.nn.functional.conv2d(x, kk.view(1, 1, -1, 1))
    x = torch.nn.functional.conv2d(x, kk.view(1, 1, 1, -1))
    return x.squeeze(1)


def _ssim_np(
    a: np.ndarray,
    b: np.ndarray,
    k: np.ndarray,
    extra: int,
    trim: int,
    c1: np.ndarray,
    c2: np.ndarray,
) -> np.ndarray:
    """SSIM of a chunk of (n, c, H, W) numpy maps through scipy.ndimage.correlate1d."""
    from scipy import ndimage

    n, c, h, w = a.shape
    r = (k.size - 1) // 2
    if trim:
        a = a[..., trim : h - trim, trim : w - trim]
        b = b[..., trim : h - trim, trim : w - trim]
    if extra:
        ih = _reflect_index(a.shape[-2], extra, extra).numpy()
        iw = _reflect_index(a.shape[-1], extra, extra).numpy()
        a = a[..., ih, :][..., iw]
        b = b[..., ih, :][..., iw]
    stack = np.stack((a, b, a * a + b * b, a * b), axis=1)  # (n, 4, c, H', W')
    hh, ww = stack.shape[-2:]
    stack = stack.reshape(-1, hh, ww)
    # Valid part only: correlate1d's own border mode is cropped away.
    f = ndimage.correlate1d(stack, k, axis=1, mode="reflect")[:, r : hh - r]
    f = ndimage.correlate1d(f, k, axis=2, mode="reflect")[:, :, r : ww - r]
    f = f.reshape(n, 4, c, hh - 2 * r, ww - 2 * r)
    ux, uy, uss, uxy = f[:, 0], f[:, 1], f[:, 2], f[:, 3]
    c1 = c1.reshape(n, 1, 1, 1)
    c2 = c2.reshape(n, 1, 1, 1)
    uxuy = ux * uy
    uxx_uyy = ux * ux + uy * uy
    num = (2 * uxuy + c1) * (2 * (uxy - uxuy) + c2)
    den = (uxx_uyy + c1) * (uss - uxx_uyy + c2)
    return (num / den).reshape(n, -1).mean(axis=1, dtype=np.float64)


def _pick_backend(backend: str, device: torch.device) -> str:
    if backend == "scipy":
        backend = "numpy"
    return _backend.pick(backend, device)


def ssim(
    a: torch.Tensor,
    b: torch.Tensor,
    window: int = 11,
    sigma: float = 1.5,
    data_range: float | torch.Tensor | None = None,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """Mean structural similarity per sample, shape (B,), for (B, H, W) or (B, C, H, W) maps.

    Equals ``skimage.metrics.structural_similarity(a_i, b_i, win_size=window,
    gaussian_weights=True, sigma=sigma, use_sample_covariance=False, data_range=data_range)``
    for each sample (with ``channel_axis`` for C channels: per-channel SSIM averaged over
    channels, as scikit-image). As in scikit-image, the Gaussian filter's support is set by
    ``sigma`` (truncated at 3.5 sigma: 11 taps at sigma 1.5, mode 'reflect') and ``window`` is the
    border of ``(window - 1) // 2`` pixels cropped before averaging (and the smallest image
    side allowed). ``data_range=None`` uses, per sample, the joint range of both maps
    (max - min over a and b); pass 1.0 for maps in [0, 1]. A zero data range (two equal
    constant maps) makes SSIM undefined: NaN, with one ``DegenerateMapWarning``.

    ``backend``: 'numpy' (CPU; scipy.ndimage's separable filter, fastest there; 'scipy' is
    an alias), 'torch' (any device, two 1-D convolutions), or 'auto' (numpy on CPU, torch
    elsewhere). Both give the same values (float32 maps are filtered in float32, as skimage).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.rand(2, 32, 32, generator=g)
        >>> ssim(x, x, data_range=1.0).round(decimals=6).tolist()
        [1.0, 1.0]
    """
    a, b = check_pair(a, b)
    if a.dim() == 3:
        a, b = a.unsqueeze(1), b.unsqueeze(1)
    elif a.dim() != 4:
        raise ValueError(
            f"ssim needs image maps (B, H, W) or (B, C, H, W), got shape {tuple(a.shape)}"
        )
    window = int(window)
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd integer, got {window}")
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    bsz, c, h, w = a.shape
    if min(h, w) < window:
        raise ValueError(
            f"ssim window {window} exceeds the map size {h}x{w}; pass a smaller odd window"
        )
    backend = _pick_backend(backend, a.device)
    if a.dtype not in (torch.float32, torch.float64):
        a, b = a.float(), b.float()
    dtype = a.dtype

    if data_range is None:
        lo = torch.minimum(a.reshape(bsz, -1).amin(1), b.reshape(bsz, -1).amin(1))
        hi = torch.maximum(a.reshape(bsz, -1).amax(1), b.reshape(bsz, -1).amax(1))
        rng = (hi - lo).to(acc_dtype(a.device))
    else:
        rng = torch.as_tensor(data_range, dtype=acc_dtype(a.device), device=a.device)
        rng = rng.expand(bsz) if rng.dim() == 0 else rng.reshape(bsz)
    zero = rng == 0
    if bool(zero.any()):
        warn_degenerate("ssim", zero, "have a zero data range (both maps constant and equal)")
        rng = rng.masked_fill(zero, float("nan"))
    c1 = ((K1 * rng) ** 2).to(dtype).view(bsz, 1, 1, 1)
    c2 = ((K2 * rng) ** 2).to(dtype).view(bsz, 1, 1, 1)

    k = gaussian_kernel1d(sigma)
    r = (k.numel() - 1) // 2
    crop = (window - 1) // 2
    # Only the cropped interior is averaged; it needs `r - crop` reflected pixels at most.
    extra = max(0, r - crop)
    trim = max(0, crop - r)
    if trim:
        a = a[..., trim : h - trim, trim : w - trim]
        b = b[..., trim : h - trim, trim : w - trim]
    if backend == "numpy":
        an, bn = a.detach().numpy(), b.detach().numpy()
        c1n, c2n = c1.numpy().reshape(-1), c2.numpy().reshape(-1)
        kn = k.numpy()

        def work(sl: slice) -> np.ndarray:
            return _ssim_np(an[sl], bn[sl], kn, extra, 0, c1n[sl], c2n[sl])

        rows = _backend.chunk_rows(c * h * w, 1 << 16)
        return torch.from_numpy(np.concatenate(_backend.map_chunks(work, bsz, rows)))
    # x, y, x^2 + y^2, xy: SSIM needs only the sum of the two variances.
    stack = torch.stack((a, b, a * a + b * b, a * b), dim=1)
    stack = _pad_reflect(stack, extra)
    stack = stack.reshape(bsz * 4 * c, *stack.shape[-2:])
    f = _filter_torch(stack, k)
    f = f.reshape(bsz, 4, c, *f.shape[-2:])
    ux, uy, uss, uxy = f.unbind(1)
    uxuy = ux * uy
    s = (2 * uxuy + c1) * (2 * (uxy - uxuy) + c2)
    s = s / ((ux * ux + uy * uy + c1) * (uss - ux * ux - uy * uy + c2))
    return s.to(acc_dtype(a.device)).mean(dim=(1, 2, 3))


ssim.range = (-1.0, 1.0)  # type: ignore[attr-defined]
ssim.higher_is_better = True  # type: ignore[attr-defined]
ssim.requires_image = True  # type: ignore[attr-defined]
