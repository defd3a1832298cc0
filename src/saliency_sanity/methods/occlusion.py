"""Occlusion (Zeiler & Fergus 2014), as Captum's ``Occlusion`` computes it.

A patch of ``patch`` pixels (all channels) slides over the image with ``stride``; for every
position the patch is filled with ``fill`` (0 by default) and the drop of the target score,
``f(x)_t - f(x with the patch filled)_t``, is credited to every pixel of the patch. A pixel's
attribution is the mean drop over the patches that cover it. Positions along an axis of length
``H`` are ``0, s, 2s, ...``: ``ceil((H - k) / s) + 1`` of them, the last one clipped at the
border when ``s`` does not divide ``H - k`` (Captum's choice), so every pixel is covered.

The occluded images are stacked into passes of ``internal_batch_size`` rows. The map is
``(B, 1, H, W)``: the patch covers all channels, so the attribution is the same for each.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .base import Method, batches, copies_per_pass
from .cam_family import check_score, target_scores
from .registry import METHODS


def _pair(value: Any, what: str) -> tuple[int, int]:
    vals = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(vals) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                                 for v in vals):
        raise ValueError(f"occlusion: {what} must be a positive int or a pair of them, got "
                         f"{value!r}")
    return vals  # type: ignore[return-value]


def patch_starts(length: int, patch: int, stride: int) -> list[int]:
    """Start offsets of the patches along an axis (Captum's: the last one may be clipped).

    Example:
        >>> patch_starts(10, 4, 3)    # ceil(6 / 3) + 1 = 3 positions
        [0, 3, 6]
        >>> patch_starts(10, 4, 4)    # ceil(6 / 4) + 1 = 3: the last covers 8..9 only
        [0, 4, 8]
    """
    return [i * stride for i in range(math.ceil((length - patch) / stride) + 1)]


def _cover(starts: list[int], patch: int, length: int, x: torch.Tensor) -> torch.Tensor:
    """(positions, length) 0/1: which pixels each patch position covers along an axis."""
    s = torch.tensor(starts, device=x.device).view(-1, 1)
    ar = torch.arange(length, device=x.device).view(1, -1)
    return ((ar >= s) & (ar < s + patch)).to(x.dtype)


@METHODS.register("occlusion")
class Occlusion(Method):
    """Occlusion: the mean drop of the target score over the patches covering each pixel.

    Args:
        patch: patch size (an int, or (height, width)); must fit in the image.
        stride: step between patch positions (int or pair), at most the patch size.
        fill: the value a patch is filled with (default 0).
        score: "logit" (default) or "softmax": the target score whose drop is measured.
        internal_batch_size: occluded images per forward pass; None: all at once; "auto"
            (default): about 4M input elements per pass, 64-256 rows.

    Defaults (16, 8) are the larger of the two settings in Rao et al. 2022 (the other: 5, 2).

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> Occlusion(patch=2, stride=1)(model, torch.randn(3, 1, 4, 4), "predicted").shape
        torch.Size([3, 1, 4, 4])
    """

    name = "occlusion"
    needs_image = True
    reuse_safe = True

    def __init__(self, patch: int | tuple[int, int] = 16, stride: int | tuple[int, int] = 8,
                 fill: float = 0.0, score: str = "logit",
                 internal_batch_size: int | str | None = "auto") -> None:
        super().__init__()
        self.patch, self.stride = _pair(patch, "patch"), _pair(stride, "stride")
        if any(s > p for s, p in zip(self.stride, self.patch, strict=True)):
            raise ValueError(f"occlusion: stride {self.stride} must not exceed the patch size "
                             f"{self.patch} (pixels would be left uncovered)")
        if not isinstance(fill, (int, float)) or isinstance(fill, bool) or not math.isfinite(fill):
            raise ValueError(f"occlusion: fill must be a finite number, got {fill!r}")
        copies_per_pass(internal_batch_size, torch.zeros(1, 1), 1)  # validates
        self.fill, self.score = float(fill), check_score(score)
        self.internal_batch_size = internal_batch_size
        self._settings = {"patch": list(self.patch), "stride": list(self.stride),
                          "fill": self.fill, "score": score,
                          "internal_batch_size": internal_batch_size}

    def positions(self, height: int, width: int) -> tuple[list[int], list[int]]:
        """Start rows and columns of the patches on a ``height`` x ``width`` image."""
        (ph, pw), (sh, sw) = self.patch, self.stride
        if ph > height or pw > width:
            raise ValueError(f"occlusion: patch {ph}x{pw} is larger than the image "
                             f"{height}x{width}; pass a patch of at most {height}x{width}")
        return patch_starts(height, ph, sh), patch_starts(width, pw, sw)

    def attribute(self, model: Any, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"occlusion needs image inputs (B, C, H, W); got shape "
                             f"{tuple(x.shape)}")
        b, _c, h, w = x.shape
        ys, xs = self.positions(h, w)
        rows = _cover(ys, self.patch[0], h, x)  # (ny, H)
        cols = _cover(xs, self.patch[1], w, x)  # (nx, W)
        ny, nx = rows.shape[0], cols.shape[0]
        with torch.no_grad():
            base = target_scores(model(x), target, self.score)  # (B,)
            drops = torch.empty(ny * nx, b, dtype=base.dtype, device=x.device)
            per = copies_per_pass(self.internal_batch_size, x, ny * nx)
            for sl in batches(ny * nx, per):
                p = torch.arange(sl.start, sl.stop, device=x.device)
                m = (rows[p // nx].unsqueeze(2) * cols[p % nx].unsqueeze(1))[:, None, None]
                occluded = x.unsqueeze(0) * (1 - m) + self.fill * m  # (k, B, C, H, W)
                k = len(p)
                out = model(occluded.reshape(k * b, *x.shape[1:]))
                drops[sl] = base.unsqueeze(0) - target_scores(out, target.repeat(k),
                                                              self.score).view(k, b)
        d = drops.view(ny, nx, b).permute(2, 0, 1).to(x.dtype)  # (B, ny, nx)
        total = torch.einsum("bij,ih,jw->bhw", d, rows, cols)
        count = torch.outer(rows.sum(0), cols.sum(0))
        return (total / count).unsqueeze(1)
