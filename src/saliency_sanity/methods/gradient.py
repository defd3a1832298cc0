"""Gradient, Gradient x Input and Integrated Gradients."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .base import Method, batches, copies_per_pass, input_gradient
from .registry import METHODS

RULES = ("riemann_right", "riemann_left", "riemann_middle", "riemann_trapezoid", "gausslegendre")


@METHODS.register("gradient", default=1)
class Gradient(Method):
    """The gradient of the target logit with respect to the input (Simonyan et al. 2014).

    Returns the raw signed gradient (no absolute value: post-processing does that).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Linear(3, 2)
        >>> g = Gradient()(model, torch.zeros(1, 3), torch.tensor([1]))
        >>> torch.equal(g[0], model.weight[1].detach())
        True
    """

    name = "gradient"
    reuse_safe = True
    input_gradient_map = True

    def from_input_gradient(self, grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor | None:
        return grad

    def attribute(self, model: Any, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return input_gradient(model, x, target, who=self.name)


@METHODS.register("gradient_x_input", default=2)
class GradientXInput(Method):
    """Gradient times input, elementwise (Shrikumar et al. 2016).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Linear(3, 2)
        >>> x = torch.ones(1, 3) * 2
        >>> m = GradientXInput()(model, x, torch.tensor([0]))
        >>> torch.allclose(m[0], 2 * model.weight[0].detach())
        True
    """

    name = "gradient_x_input"
    reuse_safe = True
    input_gradient_map = True

    def from_input_gradient(self, grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor | None:
        return grad * x

    def attribute(self, model: Any, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return input_gradient(model, x, target, who=self.name) * x


def quadrature(rule: str, steps: int) -> tuple[list[float], list[float]]:
    """Points ``alphas`` in [0, 1] and weights for integrating over the path (sum of weights 1).

    ``riemann_right`` (the IG paper's sum, k/m for k = 1..m), ``riemann_left``,
    ``riemann_middle``, ``riemann_trapezoid`` (points k/(m-1), halved end weights) and
    ``gausslegendre``.

    Example:
        >>> quadrature("riemann_right", 4)
        ([0.25, 0.5, 0.75, 1.0], [0.25, 0.25, 0.25, 0.25])
    """
    if rule not in RULES:
        raise ValueError(f"unknown integration rule {rule!r}; known rules: {', '.join(RULES)}")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    m = steps
    if rule == "gausslegendre":
        pts, wts = np.polynomial.legendre.leggauss(m)
        return (0.5 * (pts + 1)).tolist(), (0.5 * wts).tolist()
    if rule == "riemann_trapezoid":
        if m < 2:
            raise ValueError("the trapezoid rule needs steps >= 2")
        w = [1.0 / (m - 1)] * m
        w[0] /= 2
        w[-1] /= 2
        return [k / (m - 1) for k in range(m)], w
    offset = {"riemann_right": 1.0, "riemann_left": 0.0, "riemann_middle": 0.5}[rule]
    return [(k + offset) / m for k in range(m)], [1.0 / m] * m


def _baseline(baseline: Any, x: torch.Tensor) -> torch.Tensor:
    if baseline is None:
        return torch.zeros_like(x)
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.full_like(x, float(baseline))
    if not isinstance(baseline, torch.Tensor):
        raise TypeError(
            f"baseline must be None, a number or a tensor, got {type(baseline).__name__}")
    b = baseline.detach().to(device=x.device, dtype=x.dtype)
    if b.ndim == x.ndim and 1 < b.shape[0] < x.shape[0] and x.shape[0] % b.shape[0] == 0:
        # one baseline per input, x holding several copies of the batch (e.g. noisy samples)
        b = b.repeat(x.shape[0] // b.shape[0], *([1] * (x.ndim - 1)))
    try:
        b = torch.broadcast_to(b, x.shape).clone()
    except RuntimeError as err:
        raise ValueError(f"baseline of shape {tuple(baseline.shape)} does not broadcast to x's "
                         f"shape {tuple(x.shape)}") from err
    if not bool(torch.isfinite(b).all()):
        raise ValueError("baseline contains NaN or inf values")
    return b


@METHODS.register("integrated_gradients", default=3)
class IntegratedGradients(Method):
    """Integrated Gradients (Sundararajan et al. 2017): (x - x') * mean path gradient.

    Args:
        steps: number of points on the straight path from the baseline to x (paper: 50).
        baseline: None (zeros, the paper's choice), a number, or a tensor broadcastable to x.
        rule: integration rule, one of ``RULES`` (default ``riemann_right``: the paper's sum
            over k/m, k = 1..m). Captum's default is Gauss-Legendre.
        internal_batch_size: rows per forward pass (rounded down to a whole number of copies
            of the batch, at least one); None runs all steps at once; "auto" (default) sizes
            passes by the input (see ``copies_per_pass``).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Linear(3, 2)   # linear: IG is exactly (x - 0) * weight
        >>> x = torch.ones(2, 3)
        >>> ig = IntegratedGradients(steps=5)(model, x, torch.tensor([0, 1]))
        >>> torch.allclose(ig, model.weight.detach()[[0, 1]])
        True
    """

    name = "integrated_gradients"
    reuse_safe = True

    def __init__(self, steps: int = 50, baseline: Any = None, rule: str = "riemann_right",
                 internal_batch_size: int | str | None = "auto") -> None:
        super().__init__()
        quadrature(rule, steps)  # validates
        self.steps, self.baseline, self.rule = steps, baseline, rule
        self.internal_batch_size = internal_batch_size
        self._settings = {"steps": steps, "baseline": baseline, "rule": rule,
                          "internal_batch_size": internal_batch_size}

    def attribute(self, model: Any, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        base = _baseline(self.baseline, x)
        alphas, weights = quadrature(self.rule, self.steps)
        n = len(alphas)
        per_pass = copies_per_pass(self.internal_batch_size, x, n)
        diff = x - base
        total = torch.zeros_like(x)
        view = (-1, 1) + (1,) * (x.ndim - 1)
        for sl in batches(n, per_pass):
            a = torch.tensor(alphas[sl], dtype=x.dtype, device=x.device).view(view)
            w = torch.tensor(weights[sl], dtype=x.dtype, device=x.device).view(view)
            pts = (base.unsqueeze(0) + a * diff.unsqueeze(0)).reshape(-1, *x.shape[1:])
            k = a.shape[0]
            g = input_gradient(model, pts, target.repeat(k), who=self.name)
            total += (g.view(k, *x.shape) * w).sum(0)
        return total * diff
