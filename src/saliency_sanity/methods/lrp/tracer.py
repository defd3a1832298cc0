"""The forward pass that builds an LRP graph: functions substituted by a ``TorchFunctionMode``.

Nothing is hooked onto or copied from the model: during the forward pass inside
:class:`LRPMode`, each call of

- ``F.linear`` / ``F.conv1d/2d/3d`` on an input-dependent tensor becomes a :class:`_Layer`
  (forward: the layer; backward: the layer kind's rule, see ``rules.py``);
- ``F.batch_norm`` in eval mode applied to the output of such a layer, and to nothing else, is
  merged into that layer (canonization: weight * gamma / sqrt(var + eps), bias folded in; the
  user's parameters are not touched, the merged ones exist only inside the rule) and passes
  relevance through; any other batch norm passes relevance through (zennit's ``Pass``);
- an elementwise activation (ReLU and its relatives, in-place or not, module or functional,
  tanh, sigmoid) passes relevance through (``Pass``);
- a sum of two input-dependent tensors of one shape (``a + b``, ``a += b``, ``torch.add``)
  and average pooling (``avg_pool``, ``adaptive_avg_pool``) distribute relevance in proportion
  to their inputs (zennit's ``Norm``: ``x_i * J_i^T(R / stabilize(y))``);
- a function with no rule (layer/group/instance norm, transposed convolutions, embeddings,
  attention, bilinear) raises a ValueError naming it.

Everything else (max pooling, reshapes, concatenation, padding, dropout in eval mode) keeps its
ordinary gradient, as in zennit.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from .composites import RuleMap
from .rules import LayerCall, stabilize

_LINEAR = {F.linear: "linear", F.conv1d: "conv", F.conv2d: "conv", F.conv3d: "conv"}
_NORM_POOLS = {F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d,
               F.adaptive_avg_pool2d, F.adaptive_avg_pool3d}
_ADDS = {torch.add, torch.Tensor.add, torch.Tensor.add_, torch.Tensor.__add__,
         torch.Tensor.__iadd__, torch.Tensor.__radd__}


def _funcs(owners: tuple[Any, ...], names: list[str]) -> dict[Any, str]:
    out: dict[Any, str] = {}
    for owner, prefix in owners:
        for n in names:
            fn = getattr(owner, n, None)
            if fn is not None:
                out.setdefault(fn, prefix + n)
    return out


_OWNERS = ((F, "F."), (torch, "torch."), (torch.Tensor, "Tensor."))
_ACTIVATIONS = _funcs(_OWNERS, [
    "relu", "relu_", "prelu", "leaky_relu", "leaky_relu_", "rrelu", "rrelu_", "elu", "elu_",
    "celu", "celu_", "selu", "selu_", "gelu", "silu", "mish", "softplus", "hardtanh",
    "hardtanh_", "relu6", "hardswish", "hardsigmoid", "threshold", "threshold_", "tanh",
    "tanh_", "sigmoid", "sigmoid_", "softsign", "tanhshrink", "hardshrink", "softshrink",
    "logsigmoid",
])
_NO_RULE = _funcs(_OWNERS, [
    "layer_norm", "group_norm", "instance_norm", "local_response_norm", "rms_norm",
    "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "embedding", "embedding_bag",
    "bilinear", "scaled_dot_product_attention", "multi_head_attention_forward",
])


class _Layer(torch.autograd.Function):
    """A linear layer: forward as usual (its graph kept privately), backward = the rule."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, call: LayerCall) -> torch.Tensor:
        with torch.enable_grad():
            call.xi = x.detach().requires_grad_(True)
            call.z = call.fn(call.xi, call.weight, call.bias)
        call.versions = (call.xi._version, call.z._version)
        ctx.call = call
        return call.z.detach()  # shares z's storage and version counter (no copy)

    @staticmethod
    def backward(ctx: Any, R: torch.Tensor) -> tuple[torch.Tensor, None]:
        call: LayerCall = ctx.call
        ctx.call = None
        assert call.rule is not None
        if call.xi._version != call.versions[0]:
            raise RuntimeError(_MODIFIED.format(what=f"the input of a {call.kind} layer"))
        if call.z._version != call.versions[1]:  # modified in place (an in-place activation)
            with torch.enable_grad():
                call.z = call.fn(call.xi, call.weight, call.bias)
        return call.rule.relevance(call, R), None


_MODIFIED = ("LRP: {what} was modified in place after the layer used it, so its relevance "
             "cannot be computed; write that operation out of place")


class _Pass(torch.autograd.Function):
    """``fn(x)`` forward (on a copy of x when the call may be in place), relevance passed
    through unchanged backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, fn: Any, info: dict[str, Any]) -> torch.Tensor:
        c = x.clone() if info.get("maybe_inplace") else x
        out = fn(c)
        info["inplace"] = out.data_ptr() == c.data_ptr()
        return out

    @staticmethod
    def backward(ctx: Any, R: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return R, None, None


class _Norm(torch.autograd.Function):
    """``y = fn(*xs)`` (linear, no parameters); backward ``x_i * J_i^T(R / stabilize(y))``."""

    @staticmethod
    def forward(ctx: Any, fn: Any, stabilizer: float, *xs: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            leaves = [x.detach().requires_grad_(True) for x in xs]
            y = fn(*leaves)
        ctx.leaves, ctx.y, ctx.stabilizer, ctx.fn = leaves, y, stabilizer, fn
        ctx.versions = [t._version for t in (*leaves, y)]
        return y.detach()

    @staticmethod
    def backward(ctx: Any, R: torch.Tensor) -> tuple[Any, ...]:
        leaves, y = ctx.leaves, ctx.y
        ctx.leaves = ctx.y = None
        if [t._version for t in leaves] != ctx.versions[:-1]:
            raise RuntimeError(_MODIFIED.format(what="the input of a sum or average pooling"))
        if y._version != ctx.versions[-1]:
            with torch.enable_grad():
                y = ctx.fn(*leaves)
        s = R / stabilize(y.detach(), ctx.stabilizer)
        grads = torch.autograd.grad(y, leaves, s)
        return (None, None, *(x.detach() * g for x, g in zip(leaves, grads, strict=True)))


def _arg(args: tuple, kwargs: dict, i: int, name: str, default: Any = None) -> Any:
    return args[i] if len(args) > i else kwargs.get(name, default)


def _tensors(args: tuple, kwargs: dict) -> list[torch.Tensor]:
    out = []
    for a in (*args, *kwargs.values()):
        if isinstance(a, torch.Tensor):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            out.extend(t for t in a if isinstance(t, torch.Tensor))
    return out


class LRPMode(TorchFunctionMode):
    """Substitutes LRP rules during a forward pass (see the module docstring).

    ``rules`` says which rule each layer kind gets; ``stabilizer`` is the one of sums and
    average pooling. After the pass, ``calls`` lists the linear layers in execution order.
    """

    def __init__(self, rules: RuleMap, stabilizer: float = 1e-6, who: str = "lrp") -> None:
        super().__init__()
        self.rules, self.stabilizer, self.who = rules, float(stabilizer), who
        self.calls: list[LayerCall] = []
        self._outputs: dict[int, LayerCall] = {}
        self._first_done = False

    def __torch_function__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in _LINEAR:
            return self._linear(func, args, kwargs)
        if func is F.batch_norm:
            return self._batch_norm(args, kwargs)
        if func in _ACTIVATIONS:
            x = _arg(args, kwargs, 0, "input")
            if isinstance(x, torch.Tensor) and x.requires_grad:
                return self._pass(func, x, args[1:], {k: v for k, v in kwargs.items()
                                                      if k != "input"})
        elif func in _NORM_POOLS:
            x = _arg(args, kwargs, 0, "input")
            if isinstance(x, torch.Tensor) and x.requires_grad:
                rest = {k: v for k, v in kwargs.items() if k != "input"}
                fn = functools.partial(_apply_rest, func, args[1:], rest)
                return self._consumed(_Norm.apply(fn, self.stabilizer, x), (x,))
        elif func in _ADDS:
            out = self._add(func, args, kwargs)
            if out is not None:
                return out
        elif func in _NO_RULE:
            raise ValueError(f"{self.who}: no LRP rule covers {_NO_RULE[func]} (used by the "
                             "model); LRP here handles linear and convolutional layers, batch "
                             "norm, activations, pooling and residual sums")
        out = func(*args, **kwargs)
        if self._outputs:
            self._note_consumers(out, args, kwargs)
        return out

    # -- linear layers -----------------------------------------------------------------------
    def _linear(self, func: Any, args: tuple, kwargs: dict) -> Any:
        x = _arg(args, kwargs, 0, "input")
        if not (isinstance(x, torch.Tensor) and x.requires_grad):
            return func(*args, **kwargs)
        kind = _LINEAR[func]
        weight = _arg(args, kwargs, 1, "weight")
        bias = _arg(args, kwargs, 2, "bias")
        rest_args = args[3:]
        rest = {k: v for k, v in kwargs.items() if k not in ("input", "weight", "bias")}
        first = not self._first_done and kind in self.rules.first_kinds
        rule = self.rules.rule(kind, first)
        if rule is None:
            what = "convolutions" if kind == "conv" else "linear layers"
            raise ValueError(f"{self.who}: no LRP rule given for {what} ({_name(func)} is used "
                             f"by the model); pass rules={{'{kind}': ...}} or a composite")
        if first:
            self._first_done = True
        call = LayerCall(fn=functools.partial(_layer_fn, func, rest_args, rest), kind=kind,
                         weight=weight.detach(), bias=None if bias is None else bias.detach(),
                         xi=x, z=x, rule=rule)
        self.calls.append(call)
        self._consumed_by(x)
        out = _Layer.apply(x, call)
        self._outputs[id(out)] = call
        call.extra["out"] = out
        return out

    # -- batch norm: merged into the layer before it, else passed through --------------------
    def _batch_norm(self, args: tuple, kwargs: dict) -> Any:
        x = _arg(args, kwargs, 0, "input")
        mean, var = _arg(args, kwargs, 1, "running_mean"), _arg(args, kwargs, 2, "running_var")
        weight, bias = _arg(args, kwargs, 3, "weight"), _arg(args, kwargs, 4, "bias")
        training, eps = _arg(args, kwargs, 5, "training", False), _arg(args, kwargs, 7, "eps",
                                                                       1e-5)
        if not (isinstance(x, torch.Tensor) and x.requires_grad):
            return F.batch_norm(*args, **kwargs)
        call = self._outputs.get(id(x))
        mergeable = (call is not None and call.consumers == 0 and not training
                     and mean is not None and var is not None
                     and (call.kind == "conv" or call.z.ndim == 2))
        if mergeable:
            assert call is not None
            with torch.no_grad():
                scale = 1.0 / torch.sqrt(var.detach() + eps)
                if weight is not None:
                    scale = scale * weight.detach()
                shift = -mean.detach() * scale
                if bias is not None:
                    shift = shift + bias.detach()
            call.scale, call.shift = scale, shift
            call.consumers += 1
        else:
            self._consumed_by(x)
        rest = {k: v for k, v in kwargs.items() if k != "input"}
        return _Pass.apply(x, functools.partial(_apply_rest, F.batch_norm, args[1:], rest), {})

    # -- activations, sums -------------------------------------------------------------------
    def _pass(self, func: Any, x: torch.Tensor, rest_args: tuple, rest: dict) -> torch.Tensor:
        self._consumed_by(x)
        info: dict[str, Any] = {"maybe_inplace": _maybe_inplace(func, rest_args, rest)}
        out = _Pass.apply(x, functools.partial(_apply_rest, func, rest_args, rest), info)
        if info.get("inplace"):
            x.copy_(out)  # the caller expects x itself to change
            return x
        return out

    def _add(self, func: Any, args: tuple, kwargs: dict) -> Any:
        if len(args) != 2 or kwargs.get("alpha", 1) != 1 or set(kwargs) - {"alpha"}:
            return None
        a, b = args
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
                and a.requires_grad and b.requires_grad and a.shape == b.shape):
            return None
        self._consumed_by(a)
        self._consumed_by(b)
        inplace = func in (torch.Tensor.add_, torch.Tensor.__iadd__)
        out = _Norm.apply(torch.add, self.stabilizer, a.clone() if inplace else a, b)
        if inplace:
            a.copy_(out)
            return a
        return out

    # -- bookkeeping: a layer output used elsewhere cannot take its batch norm ---------------
    def _consumed_by(self, t: torch.Tensor) -> None:
        call = self._outputs.get(id(t))
        if call is None:
            return
        if call.scale is not None:
            raise ValueError(
                f"{self.who}: the output of a {call.kind} layer feeds its batch norm and also "
                "another operation, so the batch norm cannot be merged into the layer "
                "(canonization); LRP cannot explain this model")
        call.consumers += 1

    def _consumed(self, out: torch.Tensor, inputs: tuple) -> torch.Tensor:
        for t in inputs:
            self._consumed_by(t)
        return out

    def _note_consumers(self, out: Any, args: tuple, kwargs: dict) -> None:
        if isinstance(out, torch.Tensor) and out.requires_grad:
            for t in _tensors(args, kwargs):
                if t is not out:
                    self._consumed_by(t)


def _maybe_inplace(func: Any, rest_args: tuple, rest: dict) -> bool:
    """Whether an activation call may work in place (a trailing underscore, ``inplace=True``,
    or a positional True: ``F.relu(x, True)``, ``F.leaky_relu(x, 0.01, True)``...)."""
    return (getattr(func, "__name__", "").endswith("_") or bool(rest.get("inplace"))
            or any(a is True for a in rest_args))


def _layer_fn(func: Any, rest_args: tuple, rest: dict, x: torch.Tensor, w: torch.Tensor,
              b: torch.Tensor | None) -> torch.Tensor:
    return func(x, w, b, *rest_args, **rest)


def _apply_rest(func: Any, rest_args: tuple, rest: dict, *xs: torch.Tensor) -> torch.Tensor:
    return func(*xs, *rest_args, **rest)


def _name(func: Any) -> str:
    return f"F.{getattr(func, '__name__', func)}"
