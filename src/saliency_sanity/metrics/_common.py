"""Shared input checks and the degenerate-sample warning for the metrics."""

from __future__ import annotations

import warnings

import numpy as np
import torch

__all__ = ["DegenerateMapWarning", "check_pair", "check_maps", "warn_degenerate"]


class DegenerateMapWarning(UserWarning):
    """A sample's score is undefined (e.g. a constant map has no rank correlation); it is NaN."""


def _sum_is_nan(m: torch.Tensor) -> bool:
    if m.device.type == "cpu":
        return bool(np.isnan(np.sum(m.detach().numpy())))
    return bool(torch.isnan(m.sum()))


def check_maps(
    m: torch.Tensor, name: str = "maps", min_dim: int = 2, check_nan: bool = True
) -> torch.Tensor:
    """Checks one batch of maps: a floating (or integer) tensor with a batch dim and no NaN."""
    if not isinstance(m, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(m).__name__}")
    if m.dim() < min_dim:
        raise ValueError(
            f"{name} must be batched, shape (B, ...) with at least {min_dim} dims; "
            f"got shape {tuple(m.shape)}"
        )
    if m.is_complex():
        raise TypeError(f"{name} must be real, got dtype {m.dtype}")
    if not m.is_floating_point():
        m = m.to(torch.get_default_dtype())
    if m.shape[0] == 0:
        raise ValueError(f"{name} has an empty batch")
    # One fast reduction; the elementwise scan only when it is NaN (a NaN, or inf - inf).
    if check_nan and _sum_is_nan(m) and bool(torch.isnan(m).any()):
        bad = torch.isnan(m.reshape(m.shape[0], -1)).any(dim=1).nonzero().flatten().tolist()
        raise ValueError(f"{name} contain NaN (samples {bad[:10]}{'...' if len(bad) > 10 else ''})")
    return m


def check_pair(
    a: torch.Tensor, b: torch.Tensor, min_dim: int = 2, check_nan: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Checks two batches of maps to be compared sample by sample: same shape, no NaN.

    ``check_nan=False`` defers the NaN scan: for metrics where a NaN in a map always makes
    that sample's score NaN, callers run ``check_pair`` again only when a score is NaN.
    """
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        raise TypeError("maps must be torch.Tensors")
    if a.shape != b.shape:
        raise ValueError(
            f"maps to compare must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.device != b.device:
        raise ValueError(f"maps are on different devices: {a.device} and {b.device}")
    a = check_maps(a, "first maps", min_dim, check_nan)
    b = check_maps(b, "second maps", min_dim, check_nan)
    if a.dtype != b.dtype:
        dtype = torch.promote_types(a.dtype, b.dtype)
        a, b = a.to(dtype), b.to(dtype)
    return a, b


def warn_degenerate(metric: str, bad: torch.Tensor, reason: str) -> None:
    """Warns once for a batch, naming how many samples got NaN and why."""
    n = int(bad.sum())
    if n:
        warnings.warn(
            f"{metric}: {n} of {bad.numel()} samples {reason}; their score is NaN",
            DegenerateMapWarning,
            stacklevel=3,
        )
