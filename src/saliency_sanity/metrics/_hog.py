"""Batched HOG features equal to ``skimage.feature.hog``, and a HOG similarity."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from . import _backend
from ._common import check_maps, check_pair
from ._rank import _correlation, acc_dtype

__all__ = ["hog_features", "hog_similarity"]

_NORMS = ("L1", "L1-sqrt", "L2", "L2-Hys")


def _pair(v: int | tuple[int, int], name: str) -> tuple[int, int]:
    if isinstance(v, int):
        v = (v, v)
    v = (int(v[0]), int(v[1]))
    if min(v) < 1:
        raise ValueError(f"{name} must be positive, got {v}")
    return v


@lru_cache(maxsize=16)
def _bin_edges(orientations: int) -> np.ndarray:
    # scikit-image compares the float64 orientations with float32 edges (180/n) * i.
    step = np.float32(180.0 / orientations)
    return np.array([step * np.float32(i) for i in range(orientations + 1)], dtype=np.float64)


def _gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Central differences, zero on the border rows/cols (scikit-image), in x's dtype."""
    g_row = torch.zeros_like(x)
    g_col = torch.zeros_like(x)
    g_row[..., 1:-1, :] = x[..., 2:, :] - x[..., :-2, :]
    g_col[..., :, 1:-1] = x[..., :, 2:] - x[..., :, :-2]
    return g_row, g_col


def _geometry(
    h: int, w: int, pixels_per_cell: tuple[int, int], cells_per_block: tuple[int, int]
) -> tuple[int, int]:
    cr, cc = pixels_per_cell
    br, bc = cells_per_block
    ncr, ncc = h // cr, w // cc
    if ncr - br + 1 <= 0 or ncc - bc + 1 <= 0:
        raise ValueError(
            f"maps of {h}x{w} are too small for HOG with pixels_per_cell={pixels_per_cell} and "
            f"cells_per_block={cells_per_block}: they need at least {br * cr} rows and "
            f"{bc * cc} cols"
        )
    return ncr, ncc


def _hist_torch(
    x: torch.Tensor, orientations: int, pixels_per_cell: tuple[int, int]
) -> torch.Tensor:
    """Cell histograms (B, ncr, ncc, orientations) of (B, [C,] H, W) maps with torch ops."""
    acc = acc_dtype(x.device)
    g_row, g_col = _gradients(x)
    if x.dim() == 4:  # per pixel, the channel with the largest gradient magnitude
        pick = torch.hypot(g_row, g_col).argmax(dim=1, keepdim=True)
        g_row = g_row.gather(1, pick).squeeze(1)
        g_col = g_col.gather(1, pick).squeeze(1)
    bsz, h, w = g_row.shape
    cr, cc = pixels_per_cell
    ncr, ncc = h // cr, w // cc
    # Cell (i, j) covers rows [i*cr, (i+1)*cr) and cols [j*cc, (j+1)*cc); the rest is unused.
    g_row = g_row[:, : ncr * cr, : ncc * cc].to(acc).reshape(bsz, ncr, cr, ncc, cc)
    g_col = g_col[:, : ncr * cr, : ncc * cc].to(acc).reshape(bsz, ncr, cr, ncc, cc)
    mag = torch.hypot(g_col, g_row)
    ori = torch.remainder(torch.atan2(g_row, g_col) * (180 / np.pi), 180)
    edges = torch.from_numpy(_bin_edges(orientations)).to(device=x.device, dtype=acc)
    # edges[i] <= ori < edges[i+1]  ->  bin i; ori == 180.0 (rounding) falls in no bin.
    bins = (torch.bucketize(ori, edges, right=True) - 1).clamp_(0, orientations)
    cell = (
        torch.arange(ncr, device=x.device).view(1, ncr, 1, 1, 1) * ncc
        + torch.arange(ncc, device=x.device).view(1, 1, 1, ncc, 1)
    )
    index = (cell * (orientations + 1) + bins).reshape(bsz, -1)
    hist = torch.zeros(bsz, ncr * ncc * (orientations + 1), dtype=acc, device=x.device)
    hist.scatter_add_(1, index, mag.reshape(bsz, -1))
    return hist.view(bsz, ncr, ncc, orientations + 1)[..., :orientations]


def _hist_np(x: np.ndarray, orientations: int, pixels_per_cell: tuple[int, int]) -> np.ndarray:
    """Same as ``_hist_torch`` for a numpy chunk (CPU path: SIMD atan2, bincount)."""
    g_row = np.zeros_like(x)
    g_col = np.zeros_like(x)
    g_row[..., 1:-1, :] = x[..., 2:, :] - x[..., :-2, :]
    g_col[..., :, 1:-1] = x[..., :, 2:] - x[..., :, :-2]
    if x.ndim == 4:
        pick = np.hypot(g_row, g_col).argmax(axis=1)[:, None]
        g_row = np.take_along_axis(g_row, pick, axis=1)[:, 0]
        g_col = np.take_along_axis(g_col, pick, axis=1)[:, 0]
    n, h, w = g_row.shape
    cr, cc = pixels_per_cell
    ncr, ncc = h // cr, w // cc
    gr = g_row[:, : ncr * cr, : ncc * cc].astype(np.float64)
    gc = g_col[:, : ncr * cr, : ncc * cc].astype(np.float64)
    mag = np.sqrt(gr * gr + gc * gc)  # = hypot up to one ulp; binning does not use it
    ang = np.arctan2(gr, gc)
    ang *= 180 / np.pi
    # numpy's `% 180` (slow, scalar) on (-180, 180]: a + 180 below 0, a - 180 at 180.
    np.add(ang, 180.0, out=ang, where=ang < 0)
    np.subtract(ang, 180.0, out=ang, where=ang >= 180)
    edges = _bin_edges(orientations)
    bins = (ang * (orientations / 180.0)).astype(np.intp)
    np.minimum(bins, orientations - 1, out=bins)
    bins -= ang < np.take(edges, bins)  # exact fix-ups against scikit-image's float32 edges
    bins += ang >= np.take(edges, bins + 1)
    cell = (np.arange(ncr * cr) // cr)[:, None] * ncc + (np.arange(ncc * cc) // cc)[None, :]
    stride = ncr * ncc * (orientations + 1)
    index = (cell * (orientations + 1))[None] + bins
    index += (np.arange(n) * stride)[:, None, None]
    hist = np.bincount(index.ravel(), weights=mag.ravel(), minlength=n * stride)
    return hist.reshape(n, ncr, ncc, orientations + 1)[..., :orientations]


def _normalize_blocks(
    hist: torch.Tensor, pixels_per_cell: tuple[int, int], cells_per_block: tuple[int, int],
    block_norm: str,
) -> torch.Tensor:  # fmt: skip
    """(B, ncr, ncc, n) cell sums -> (B, F) normalized block features, as scikit-image."""
    cr, cc = pixels_per_cell
    br, bc = cells_per_block
    hist = hist / (cr * cc)  # scikit-image averages over the cell
    blocks = hist.unfold(1, br, 1).unfold(2, bc, 1).permute(0, 1, 2, 4, 5, 3)
    eps = 1e-5
    dims = (3, 4, 5)
    if block_norm == "L1":
        out = blocks / (blocks.abs().sum(dim=dims, keepdim=True) + eps)
    elif block_norm == "L1-sqrt":
        out = torch.sqrt(blocks / (blocks.abs().sum(dim=dims, keepdim=True) + eps))
    else:
        out = blocks / torch.sqrt((blocks * blocks).sum(dim=dims, keepdim=True) + eps**2)
        if block_norm == "L2-Hys":
            out = torch.clamp(out, max=0.2)
            out = out / torch.sqrt((out * out).sum(dim=dims, keepdim=True) + eps**2)
    return out.reshape(hist.shape[0], -1)


def _normalize_blocks_np(
    hist: np.ndarray, pixels_per_cell: tuple[int, int], cells_per_block: tuple[int, int],
    block_norm: str,
) -> np.ndarray:  # fmt: skip
    """numpy twin of ``_normalize_blocks`` (CPU path)."""
    cr, cc = pixels_per_cell
    br, bc = cells_per_block
    hist = hist / (cr * cc)
    win = np.lib.stride_tricks.sliding_window_view(hist, (br, bc), axis=(1, 2))
    bsz, nbr, nbc = win.shape[:3]
    blocks = win.transpose(0, 1, 2, 4, 5, 3).copy().reshape(bsz, nbr * nbc, -1)
    eps = 1e-5
    if block_norm in ("L1", "L1-sqrt"):
        blocks /= np.abs(blocks).sum(axis=2, keepdims=True) + eps
        if block_norm == "L1-sqrt":
            np.sqrt(blocks, out=blocks)
    else:
        blocks /= np.sqrt(np.einsum("ijk,ijk->ij", blocks, blocks) + eps**2)[..., None]
        if block_norm == "L2-Hys":
            np.minimum(blocks, 0.2, out=blocks)
            blocks /= np.sqrt(np.einsum("ijk,ijk->ij", blocks, blocks) + eps**2)[..., None]
    return blocks.reshape(bsz, -1)


def _features(
    maps: list[torch.Tensor],
    orientations: int,
    pixels_per_cell: tuple[int, int],
    cells_per_block: tuple[int, int],
    block_norm: str,
    transform_sqrt: bool,
    backend: str = "auto",
) -> torch.Tensor:
    """HOG features of each batch in ``maps`` (same shapes), concatenated: (sum B, F)."""
    if _backend.pick(backend, maps[0].device) == "torch" or len(maps) == 1:
        x = maps[0] if len(maps) == 1 else torch.cat(maps)
        return _hog(
            x, orientations, pixels_per_cell, cells_per_block, block_norm, transform_sqrt, backend
        )
    return torch.cat([
        _hog(m, orientations, pixels_per_cell, cells_per_block, block_norm, transform_sqrt,
             backend)
        for m in maps
    ])  # fmt: skip


def _hog(
    x: torch.Tensor,
    orientations: int,
    pixels_per_cell: tuple[int, int],
    cells_per_block: tuple[int, int],
    block_norm: str,
    transform_sqrt: bool,
    backend: str = "auto",
) -> torch.Tensor:
    """HOG features of (B, H, W) or (B, C, H, W) maps, (B, F) in the accumulation dtype."""
    if block_norm not in _NORMS:
        raise ValueError(f"block_norm must be one of {_NORMS}, got {block_norm!r}")
    if orientations < 1:
        raise ValueError(f"orientations must be positive, got {orientations}")
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    if transform_sqrt:
        x = torch.sqrt(x)
    _geometry(x.shape[-2], x.shape[-1], pixels_per_cell, cells_per_block)
    if _backend.pick(backend, x.device) == "torch":
        hist = _hist_torch(x, orientations, pixels_per_cell)
    else:
        xn = x.detach().numpy()
        per_map = xn[0].size
        parts = _backend.map_chunks(
            lambda s: _hist_np(xn[s], orientations, pixels_per_cell),
            xn.shape[0],
            _backend.chunk_rows(per_map, 1 << 16),
        )
        hist_np = np.concatenate(parts)
        return torch.from_numpy(
            _normalize_blocks_np(hist_np, pixels_per_cell, cells_per_block, block_norm)
        )
    return _normalize_blocks(hist, pixels_per_cell, cells_per_block, block_norm)


def hog_features(
    m: torch.Tensor,
    orientations: int = 9,
    pixels_per_cell: int | tuple[int, int] = (16, 16),
    cells_per_block: int | tuple[int, int] = (3, 3),
    block_norm: str = "L2-Hys",
    transform_sqrt: bool = False,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """HOG feature vectors of a batch of maps, shape (B, F), on the maps' device.

    For (B, H, W) maps each row equals ``skimage.feature.hog(m_i, orientations,
    pixels_per_cell, cells_per_block, block_norm, transform_sqrt=transform_sqrt)``; for
    (B, C, H, W) maps it equals scikit-image with ``channel_axis`` (per pixel, the channel with
    the largest gradient magnitude). Returned in the maps' float dtype. Defaults are the paper's
    (16x16 cells, 3x3 blocks, 9 orientations, L2-Hys).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> hog_features(torch.rand(2, 64, 64, generator=g)).shape
        torch.Size([2, 324])
    """
    m = check_maps(m, "maps")
    if m.dim() not in (3, 4):
        raise ValueError(f"hog needs image maps (B, H, W) or (B, C, H, W), got {tuple(m.shape)}")
    dtype = m.dtype if m.dtype in (torch.float32, torch.float64) else torch.float32
    f = _hog(
        m,
        int(orientations),
        _pair(pixels_per_cell, "pixels_per_cell"),
        _pair(cells_per_block, "cells_per_block"),
        block_norm,
        transform_sqrt,
        backend,
    )
    return f.to(dtype).to(m.device)


def hog_similarity(
    a: torch.Tensor,
    b: torch.Tensor,
    orientations: int = 9,
    pixels_per_cell: int | tuple[int, int] = (16, 16),
    cells_per_block: int | tuple[int, int] = (3, 3),
    block_norm: str = "L2-Hys",
    correlation: str = "pearson",
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """Correlation of the two maps' HOG feature vectors per sample, shape (B,).

    ``correlation``: 'pearson' (the paper's text, default) or 'spearman' (the authors' code).
    A sample whose HOG vector is constant (e.g. a constant map: all zeros) gets NaN, with one
    ``DegenerateMapWarning``. ``backend`` as for :func:`hog_features`.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.rand(3, 64, 64, generator=g)
        >>> hog_similarity(x, x)
        tensor([1., 1., 1.], dtype=torch.float64)
    """
    if correlation not in ("pearson", "spearman"):
        raise ValueError(f"correlation must be 'pearson' or 'spearman', got {correlation!r}")
    a, b = check_pair(a, b)
    if a.dim() not in (3, 4):
        raise ValueError(
            f"hog needs image maps (B, H, W) or (B, C, H, W), got shape {tuple(a.shape)}"
        )
    bsz = a.shape[0]
    settings = (
        int(orientations),
        _pair(pixels_per_cell, "pixels_per_cell"),
        _pair(cells_per_block, "cells_per_block"),
        block_norm,
        False,
        backend,
    )
    f = _features([a, b], *settings)
    return _correlation(
        f[:bsz], f[bsz:], correlation == "spearman", backend, f"hog_similarity ({correlation})"
    ).to(a.device)


hog_similarity.range = (-1.0, 1.0)  # type: ignore[attr-defined]
hog_similarity.higher_is_better = True  # type: ignore[attr-defined]
hog_similarity.requires_image = True  # type: ignore[attr-defined]
