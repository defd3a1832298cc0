"""Scores of perturbation curves (each per sample, so any score can be recomputed later)."""

from __future__ import annotations

import torch


def _curves(curves: torch.Tensor, who: str) -> torch.Tensor:
    if not isinstance(curves, torch.Tensor) or curves.ndim != 2 or curves.shape[1] < 2:
        shape = tuple(curves.shape) if isinstance(curves, torch.Tensor) else type(curves).__name__
        raise ValueError(f"{who}: curves must be a tensor (B, L + 1) with L >= 1; got {shape}")
    return curves


def aopc(curves: torch.Tensor) -> torch.Tensor:
    """Area over the perturbation curve (Samek et al.): 1/(L+1) sum_k [f(x_0) - f(x_k)], (B,).

    MoRF curves give the AOPC (higher: a more faithful map), LeRF curves the LeRF AOPC (lower).

    Example:
        >>> aopc(torch.tensor([[1.0, 0.5, 0.0]])).tolist()
        [0.5]
    """
    c = _curves(curves, "aopc")
    return (c[:, :1] - c).mean(dim=1)


def abpc(morf: torch.Tensor, lerf: torch.Tensor) -> torch.Tensor:
    """Area between the LeRF and MoRF curves: 1/(L+1) sum_k [f(x_k^LeRF) - f(x_k^MoRF)], (B,)
    (= AOPC(MoRF) - AOPC(LeRF) when both start from the same clean score).

    Example:
        >>> abpc(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]])).tolist()
        [0.5]
    """
    m, l_ = _curves(morf, "abpc"), _curves(lerf, "abpc")
    if m.shape != l_.shape:
        raise ValueError(f"abpc: morf and lerf curves differ in shape: {tuple(m.shape)} vs "
                         f"{tuple(l_.shape)}")
    return (l_ - m).mean(dim=1)


def auc(curves: torch.Tensor) -> torch.Tensor:
    """Area under each curve by the trapezoidal rule on [0, 1] (the fraction of steps taken):
    RISE's insertion / deletion score, (B,). Quantus' ``calculate_auc`` uses dx = 1 (L times
    this).

    Example:
        >>> auc(torch.tensor([[1.0, 0.5, 0.0]])).tolist()
        [0.5]
    """
    c = _curves(curves, "auc")
    return torch.trapezoid(c, dx=1.0 / (c.shape[1] - 1), dim=1)
