"""LRP rules for linear layers (``F.linear``, ``F.conv1d/2d/3d``), in the gradient formulation.

A rule maps the relevance ``R`` at a layer's output to the relevance at its input. Every rule
here is a sum of terms ``x_m * J_m^T (R / d)``: the layer is evaluated with modified inputs
``x_m`` and parameters ``(W_m, b_m)``, ``d`` is a stabilized denominator, and ``J_m^T`` is the
transposed Jacobian, obtained by one ``torch.autograd.grad`` call (zennit's formulation: the
same modified inputs, parameters, denominators and stabilizer, so the maps agree with zennit
0.5.1 to float rounding).

``stabilize(z, eps) = z + eps * (sign(z) + [z == 0])`` (zennit's ``stabilize``).

=============  =================================================================================
rule           relevance at the input (``x+ = max(x, 0)``, ``x- = min(x, 0)``, same for W, b)
=============  =================================================================================
``zero``       LRP-0: ``x * J^T(R / z)`` (0 where z = 0, instead of a division by zero)
``epsilon``    ``x * J^T(R / stabilize(z, epsilon))``
``zplus``      z+ (alpha=1, beta=0 for signed inputs): ``x+ J(W+, b+)^T s + x- J(W-)^T s``,
               ``s = R / stabilize(z(x+, W+, b+) + z(x-, W-))``
``alpha_beta`` ``alpha * (positive part as zplus) - beta * (x+ J(W-, b-)^T t + x- J(W+)^T t)``
``gamma``      generalized gamma (zennit's ``Gamma``): W + gamma W+ for positive outputs,
               W + gamma W- for negative ones
``flat``       weights and inputs set to 1, no bias: ``J(1)^T(R / z(1, 1))``
``w_square``   ``J(W^2, b^2)^T(R / z(1, W^2, b^2))``
``z_box``      ``x J^T s - l J(W+, b+)^T s - h J(W-, b-)^T s``,
               ``s = R / stabilize(z - z(l, W+, b+) - z(h, W-, b-))``
=============  =================================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

LayerFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def stabilize(z: torch.Tensor, epsilon: float) -> torch.Tensor:
    """``z`` moved away from zero by ``epsilon`` in the direction of its sign (+ for 0).

    zennit's ``z + epsilon * (sign(z) + [z == 0])`` in two passes instead of six (the only
    difference: -0.0 moves to -epsilon, where the relevance divided by it is 0 anyway).

    Example:
        >>> stabilize(torch.tensor([-2.0, 0.0, 3.0]), 0.5).tolist()
        [-2.5, 0.5, 3.5]
    """
    return z + torch.copysign(torch.tensor(epsilon, dtype=z.dtype, device=z.device), z)


@dataclass
class LayerCall:
    """One call of a linear layer during the forward pass, kept for its backward rule.

    ``fn(x, weight, bias)`` re-evaluates the layer; ``xi`` (a leaf requiring grad) and ``z``
    (``fn(xi, weight, bias)`` with its graph) come from the forward pass. ``scale``/``shift``
    are set when a batch norm on the output is merged into the layer (canonization).
    """

    fn: LayerFn
    kind: str
    weight: torch.Tensor
    bias: torch.Tensor | None
    xi: torch.Tensor
    z: torch.Tensor
    rule: Rule | None = None
    scale: torch.Tensor | None = None
    shift: torch.Tensor | None = None
    consumers: int = 0
    versions: tuple[int, int] = (0, 0)
    extra: dict[str, Any] = field(default_factory=dict)

    def _view(self, t: torch.Tensor, ndim: int) -> torch.Tensor:
        return t.view(1, -1, *([1] * (ndim - 2)))

    def params(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Weight and bias, with a merged batch norm folded in."""
        if self.scale is None:
            return self.weight, self.bias
        w = self.weight * self.scale.view(-1, *([1] * (self.weight.ndim - 1)))
        b = self.shift if self.bias is None else self.bias * self.scale + self.shift
        return w, b

    def output(self) -> torch.Tensor:
        """The (merged) layer output, connected to ``xi`` by the forward pass's graph."""
        if self.scale is None:
            return self.z
        return torch.addcmul(self._view(self.shift, self.z.ndim), self.z,
                             self._view(self.scale, self.z.ndim))

    def modified(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        return self.fn(x, w, b)


def _leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().requires_grad_(True)


def _clamp(t: torch.Tensor | None, lo: float | None = None, hi: float | None = None
           ) -> torch.Tensor | None:
    return None if t is None else t.clamp(min=lo, max=hi)


class Rule:
    """Base class: ``relevance(call, R)`` returns the relevance at the layer's input."""

    name = "rule"

    def relevance(self, call: LayerCall, R: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        return {"name": self.name}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.settings()})"


class Epsilon(Rule):
    """LRP-epsilon; ``epsilon=0`` is LRP-0 (``Zero``), with 0 where the output is 0."""

    name = "epsilon"

    def __init__(self, epsilon: float = 1e-6) -> None:
        self.epsilon = float(epsilon)

    def settings(self) -> dict[str, Any]:
        return {"name": self.name, "epsilon": self.epsilon}

    def relevance(self, call: LayerCall, R: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            z = call.output()
        zd = z.detach()
        if self.epsilon == 0:
            s = torch.where(zd == 0, torch.zeros_like(R), R / torch.where(zd == 0, 1, zd))
        else:
            s = R / stabilize(zd, self.epsilon)
        (g,) = torch.autograd.grad(z, call.xi, s)
        return call.xi.detach() * g


class Zero(Epsilon):
    """LRP-0: ``x * J^T(R / z)`` (0 where z = 0)."""

    name = "zero"

    def __init__(self) -> None:
        super().__init__(0.0)

    def settings(self) -> dict[str, Any]:
        return {"name": self.name}


class _Terms(Rule):
    """Helpers for rules made of several modified forward passes."""

    def __init__(self, stabilizer: float = 1e-6) -> None:
        self.stabilizer = float(stabilizer)

    def settings(self) -> dict[str, Any]:
        return {"name": self.name, "stabilizer": self.stabilizer}

    @staticmethod
    def _split(call: LayerCall) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x+ as a leaf, and x- as a leaf, or None when x has no negative entry (its terms are
        exactly 0 then, and are skipped)."""
        x = call.xi.detach()
        if not bool((x < 0).any()):
            return _leaf(x), None  # x+ = x (shares x's storage: nothing writes to it)
        return _leaf(x.clamp(min=0)), _leaf(x.clamp(max=0))


class ZPlus(_Terms):
    name = "zplus"

    def relevance(self, call: LayerCall, R: torch.Tensor) -> torch.Tensor:
        w, b = call.params()
        xp, xn = self._split(call)
        with torch.enable_grad():
            zs = [call.modified(xp, w.clamp(min=0), _clamp(b, lo=0))]
            if xn is not None:
                zs.append(call.modified(xn, w.clamp(max=0), None))
        s = R / stabilize(sum(z.detach() for z in zs), self.stabilizer)
        leaves = [xp] if xn is None else [xp, xn]
        grads = torch.autograd.grad(zs, leaves, [s] * len(zs))
        return sum(t.detach() * g for t, g in zip(leaves, grads, strict=True))


class AlphaBeta(_Terms):
    name = "alpha_beta"

    def __init__(self, alpha: float = 2.0, beta: float = 1.0, stabilizer: float = 1e-6) -> None:
        super().__init__(stabilizer)
        if alpha < 0 or beta < 0:
            raise ValueError(f"alpha_beta: alpha and beta must be >= 0, got {alpha}, {beta}")
        if alpha - beta != 1:
            raise ValueError(f"alpha_beta: alpha - beta must be 1 (relevance conservation), got "
                             f"alpha={alpha}, beta={beta}")
        self.alpha, self.beta = float(alpha), float(beta)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "alpha": self.alpha, "beta": self.beta}

    def relevance(self, call: LayerCall, R: torch.Tensor) -> torch.Tensor:
        w, b = call.params()
        wp, wn = w.clamp(min=0), w.clamp(max=0)
        xp, xn = self._split(call)
        out = torch.zeros_like(call.xi)
        for coef, (wa, ba), wb in ((self.alpha, (wp, _clamp(b, lo=0)), wn),
                                   (-self.beta, (wn, _clamp(b, hi=0)), wp)):
            if coef == 0:
                continue
            with torch.enable_grad():
                zs = [call.modified(xp, wa, ba)]
                if xn is not None:
                    zs.append(call.modified(xn, wb, None))
            s = R / stabilize(sum(z.detach() for z in zs), self.stabilizer)
            leaves = [xp] if xn is None else [xp, xn]
            grads = torch.autograd.grad(zs, leaves, [s] * len(zs))
            out = out + coef * sum(t.detach() * g for t, g in zip(leaves, grads, strict=True))
        return out


class Gamma(_Terms):
    name = "gamma"

    def __init__(self, gamma: float = 0.25, stabilizer: float = 1e-6) -> None:
        super().__init__(stabilizer)
        self.gamma = float(gamma)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "gamma": self.gamma}

    def relevance(self, call: LayerCall, R: torch.Tensor) -> torch.Tensor:
        w, b = call.params()
        g = self.gamma
        w_up, w_down = w + g * w.clamp(min=0), w + g * w.clamp(max=0)
        b_up = None if b is None else b + g * b.clamp(min=0)
        b_down = None if b is None else b + g * b.clamp(max=0)
        xp, xn = self._split(call)
        if xn is None:  # x >= 0: both modified layers follow from z and z(x, W+, b+)
            return self._nonnegative(call, R, xp, w, b)
        z_orig = call.output().detach()
        zs, grads_out = [], []
        # positive outputs: W + gamma W+ on x+ (with bias), W + gamma W- on x- (no bias);
        # negative outputs: W + gamma W- on x+ (with bias), W + gamma W+ on x- (no bias)
        for mask, (wa, ba), wb in (((z_orig > 0), (w_up, b_up), w_down),
                                   ((z_orig < 0), (w_down, b_down), w_up)):
            with torch.enable_grad():
                part = [call.modified(xp, wa, ba)]
                if xn is not None:
                    part.append(call.modified(xn, wb, None))
            s = mask.to(R) * R / stabilize(sum(z.detach() for z in part), self.stabilizer)
            zs += part
            grads_out += [s] * len(part)
        uniq = [xp] if xn is None else [xp, xn]
        grads = torch.autograd.grad(zs, uniq, grads_out)
        return sum(t.detach() * gr for t, gr in zip(uniq, grads, strict=True))


    def _nonnegative(self, call: LayerCall, R: torch.Tensor, xp: torch.Tensor,
                     w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        """z_up = z + gamma z+, z_down = z + gamma (z - z+) with z+ = z(x, W+, b+); the
        transposed Jacobians: W^T(s_up + (1 + gamma) s_down) + gamma W+^T(s_up - s_down)."""
        g = self.gamma
        with torch.enable_grad():
            z, zp = call.output(), call.modified(xp, w.clamp(min=0), _clamp(b, lo=0))
        zd, zpd = z.detach(), zp.detach()
        zero = R.new_zeros(())
        s_up = torch.where(zd > 0, R, zero) / stabilize(torch.add(zd, zpd, alpha=g),
                                                        self.stabilizer)
        s_down = torch.where(zd < 0, R, zero) / stabilize(zd * (1 + g) - g * zpd,
                                                          self.stabilizer)
        gz, gp = torch.autograd.grad([z, zp], [call.xi, xp],
                                     [s_up + (1 + g) * s_down, g * (s_up - s_down)])
        return xp.detach() * (gz + gp)


class Flat(_Terms):
    name = "flat"

    def relevance(self, call: LayerCall, R: torch.Tensor) -> torch.Tensor:
        w, _ = call.params()
        ones = _leaf(torch.ones_like(call.xi))
        with torch.enable_grad():
            z = call.modified(ones, torch.ones_like(w), None)
        (g,) = torch.autograd.grad(z, ones, R / stabilize(z.detach(), self.stabilizer))
        return g


class WSquare(_Terms):
    name = "w_square"

    def relevance(self, call: LayerCall, R: torch.Tensor) -> torch.Tensor:
        w, b = call.params()
        ones = _leaf(torch.ones_like(call.xi))
        with torch.enable_grad():
            z = call.modified(ones, w ** 2, None if b is None else b ** 2)
        (g,) = torch.autograd.grad(z, ones, R / stabilize(z.detach(), self.stabilizer))
        return g


def expand_bound(bound: Any, shape: torch.Size, like: torch.Tensor, who: str) -> torch.Tensor:
    """A box bound (number, per-channel list, or tensor) broadcast to ``shape``."""
    t = torch.as_tensor(bound, dtype=like.dtype, device=like.device)
    if t.ndim == 1 and len(shape) > 2 and t.shape[0] == shape[1]:
        t = t.view(1, -1, *([1] * (len(shape) - 2)))  # one value per channel
    try:
        return torch.broadcast_to(t, shape)
    except RuntimeError as err:
        raise ValueError(f"{who}: box bound of shape {tuple(t.shape)} does not broadcast to the "
                         f"first layer's input {tuple(shape)}; give a number, one value per "
                         "channel, or a tensor broadcastable to the input") from err


class ZBox(_Terms):
    name = "z_box"

    def __init__(self, low: Any, high: Any, stabilizer: float = 1e-6) -> None:
        super().__init__(stabilizer)
        self.low, self.high = low, high  # None: the method refuses to run (it names them)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "low": self.low, "high": self.high}

    def relevance(self, call: LayerCall, R: torch.Tensor) -> torch.Tensor:
        w, b = call.params()
        x = call.xi
        lo = _leaf(expand_bound(self.low, x.shape, x, self.name).clone())
        hi = _leaf(expand_bound(self.high, x.shape, x, self.name).clone())
        with torch.enable_grad():
            z = call.output()
            zl = call.modified(lo, w.clamp(min=0), _clamp(b, lo=0))
            zh = call.modified(hi, w.clamp(max=0), _clamp(b, hi=0))
        s = R / stabilize(z.detach() - zl.detach() - zh.detach(), self.stabilizer)
        gx, gl, gh = torch.autograd.grad([z, zl, zh], [x, lo, hi], [s, s, s])
        return x.detach() * gx - lo.detach() * gl - hi.detach() * gh


RULES: dict[str, type[Rule]] = {
    "zero": Zero, "epsilon": Epsilon, "gamma": Gamma, "zplus": ZPlus, "alpha_beta": AlphaBeta,
    "flat": Flat, "w_square": WSquare, "z_box": ZBox,
}


def make_rule(name: str | Rule, *, epsilon: float, gamma: float, stabilizer: float,
              alpha: float, beta: float, low: Any, high: Any) -> Rule:
    """A rule from its name and the method's parameters (a ``Rule`` is returned as is).

    Example:
        >>> make_rule("gamma", epsilon=1e-6, gamma=0.5, stabilizer=1e-6, alpha=2, beta=1,
        ...           low=None, high=None).gamma
        0.5
    """
    if isinstance(name, Rule):
        return name
    if name not in RULES:
        raise ValueError(f"unknown LRP rule {name!r}; known rules: {', '.join(RULES)}")
    if name == "zero":
        return Zero()
    if name == "epsilon":
        return Epsilon(epsilon)
    if name == "gamma":
        return Gamma(gamma, stabilizer)
    if name == "alpha_beta":
        return AlphaBeta(alpha, beta, stabilizer)
    if name == "z_box":
        return ZBox(low, high, stabilizer)
    return RULES[name](stabilizer)
