"""Guided Backpropagation (Springenberg et al. 2015) and Deconvnet (Zeiler and Fergus 2014).

Guided backprop replaces the backward pass of every ReLU by ``grad * [grad > 0] * [input > 0]``;
Deconvnet by ``relu(grad)``, ignoring the sign of the ReLU's input in the forward pass. ReLUs are
caught during the forward pass by a ``TorchFunctionMode``, so the rule applies however the ReLU
is written: ``nn.ReLU`` (in-place or not, one module reused any number of times), ``F.relu``,
``F.relu_``, ``torch.relu``, ``torch.relu_``, ``Tensor.relu`` and ``Tensor.relu_``. Nothing is
hooked onto the model. (ReLUs written as ``clamp(min=0)`` or ``x * (x > 0)`` are not recognised.)

Other rectifier-like activations (PReLU, LeakyReLU, RReLU, ELU, CELU, SELU, GELU, SiLU, Mish,
Softplus, ReLU6/Hardtanh, Hardswish, Threshold) have no rule in either paper: they raise an error
naming them unless (guided backprop only) ``allow_other_activations=True``, in which case the
gradient reaching their input is clamped at zero, ``relu(f'(x) * grad)`` (for a ReLU this equals
the rule above; it is also what Captum's hooks return). Smooth saturating functions (Tanh,
Sigmoid) and everything else keep their ordinary gradients, as in Captum and the papers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from .base import Method, input_gradient
from .registry import METHODS


def _collect(names: list[str]) -> dict[Any, str]:
    found: dict[Any, str] = {}
    for owner, prefix in ((F, "F."), (torch, "torch."), (torch.Tensor, "Tensor.")):
        for n in names:
            fn = getattr(owner, n, None)
            if fn is not None and fn not in found:
                found[fn] = prefix + n
    return found


_RELUS = _collect(["relu", "relu_"])
_INPLACE_RELUS = {torch.relu_, F.relu_, torch.Tensor.relu_}
_OTHER_FUNCS = _collect([
    "prelu", "leaky_relu", "leaky_relu_", "rrelu", "rrelu_", "elu", "elu_", "celu", "celu_",
    "selu", "selu_", "gelu", "silu", "mish", "softplus", "hardtanh", "hardtanh_", "relu6",
    "hardswish", "threshold", "threshold_",
])
OTHER_ACTIVATION_MODULES: tuple[type[nn.Module], ...] = (
    nn.PReLU, nn.LeakyReLU, nn.RReLU, nn.ELU, nn.CELU, nn.SELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Softplus, nn.Hardtanh, nn.Hardswish, nn.Threshold,
)


class _GuidedReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        out = x.clamp(min=0)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (out,) = ctx.saved_tensors
        return torch.where((grad > 0) & (out > 0), grad, torch.zeros_like(grad))


class _DeconvReLU(torch.autograd.Function):
    """ReLU forward; backward ``relu(grad)``, whatever the sign of the input (Deconvnet)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad.clamp(min=0)


class _PositiveGrad(torch.autograd.Function):
    """Identity forward (a copy); the gradient passed back is clamped at zero."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad.clamp(min=0)


class GuidedMode(TorchFunctionMode):
    """Substitutes guided ReLUs during a forward pass (see the module docstring).

    Example:
        >>> x = torch.tensor([-1.0, 2.0, 3.0], requires_grad=True)
        >>> with GuidedMode():
        ...     y = torch.relu(x)
        >>> (g,) = torch.autograd.grad((y * torch.tensor([3.0, -1.0, 2.0])).sum(), x)
        >>> g.tolist()
        [0.0, 0.0, 2.0]
    """

    def __init__(self, allow_other_activations: bool = False, rule: str = "guided") -> None:
        super().__init__()
        if rule not in ("guided", "deconvnet"):
            raise ValueError(f"rule must be 'guided' or 'deconvnet', got {rule!r}")
        self.allow_other_activations = allow_other_activations
        self.relu = _GuidedReLU if rule == "guided" else _DeconvReLU
        self.who = "guided_backprop" if rule == "guided" else "deconvnet"

    def __torch_function__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in _RELUS:
            x = args[0] if args else kwargs["input"]
            inplace = func in _INPLACE_RELUS or bool(
                kwargs.get("inplace", args[1] if len(args) > 1 else False))
            out = self.relu.apply(x)
            if inplace:
                x.copy_(out)
                return x
            return out
        if func in _OTHER_FUNCS:
            if not self.allow_other_activations:
                raise ValueError(_other_message([_OTHER_FUNCS[func]], self.who))
            args = list(args)
            if args:
                x = args[0]
                args[0] = xc = _PositiveGrad.apply(x)
            else:
                x = kwargs["input"]
                kwargs = {**kwargs, "input": _PositiveGrad.apply(x)}
                xc = kwargs["input"]
            out = func(*args, **kwargs)
            if out is xc:  # an in-place call: the caller expects x itself to change
                x.copy_(out)
                return x
            return out
        return func(*args, **kwargs)


def _other_message(names: list[str], who: str = "guided_backprop") -> str:
    fix = ("Pass allow_other_activations=True to clamp the gradient at zero behind these "
           "activations too (relu(f'(x) * grad)), or replace them by ReLUs."
           if who == "guided_backprop" else "Replace them by ReLUs.")
    return (f"{who} defines its backward rule for ReLUs only; the model uses "
            f"{', '.join(names)}. {fix}")


def check_activations(model: Any, allow_other_activations: bool,
                      who: str = "guided_backprop") -> None:
    """Raise a ValueError naming every non-ReLU rectifier module, unless allowed."""
    if allow_other_activations or not isinstance(model, nn.Module):
        return
    bad = [f"{name or '<model>'} ({type(m).__name__})" for name, m in model.named_modules()
           if isinstance(m, OTHER_ACTIVATION_MODULES)]
    if bad:
        raise ValueError(_other_message(bad, who))


@contextlib.contextmanager
def guided_relus(allow_other_activations: bool = False) -> Iterator[None]:
    """Context manager: forward passes inside it build guided-backprop graphs."""
    with GuidedMode(allow_other_activations):
        yield


def refuse_torchscript(model: Any, who: str) -> None:
    """TorchScript runs outside Python, where neither ReLU interception nor module hooks reach:
    guided backprop would silently return the plain gradient, so refuse it with a clear error."""
    if isinstance(model, torch.jit.ScriptModule):
        raise TypeError(
            f"{who} cannot be computed on a TorchScript model: its ReLUs and layers are out of "
            "reach of Python. Load the model from its Python class (e.g. --model "
            "package.module:factory --weights state_dict.pt), or use gradient-based methods "
            "(gradient, gradient_x_input, integrated_gradients, smoothgrad, vargrad)"
        )


@METHODS.register("guided_backprop", default=6)
class GuidedBackprop(Method):
    """Guided Backpropagation: ReLU backward = grad * [grad > 0] * [input > 0].

    Args:
        allow_other_activations: apply the positive-gradient rule to PReLU, GELU, ELU... too,
            instead of raising an error.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2))
        >>> GuidedBackprop()(model, torch.ones(1, 2), torch.tensor([0])).shape
        torch.Size([1, 2])
    """

    name = "guided_backprop"
    reuse_safe = True

    def __init__(self, allow_other_activations: bool = False) -> None:
        super().__init__()
        self.allow_other_activations = allow_other_activations
        self._settings = {"allow_other_activations": allow_other_activations}

    def attribute(self, model: Any, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        refuse_torchscript(model, self.name)
        check_activations(model, self.allow_other_activations)
        return input_gradient(model, x, target,
                              context=lambda: guided_relus(self.allow_other_activations),
                              who=self.name)


@METHODS.register("deconvnet")
class Deconvnet(Method):
    """Deconvnet (Zeiler and Fergus 2014): ReLU backward = ``relu(grad)``, the forward sign
    ignored; every other operation keeps its ordinary gradient (as Captum's ``Deconvolution``).

    ReLUs are caught however they are written (module, in-place, functional, one module used
    twice), as for guided backprop; other rectifier-like activations raise an error naming them.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> lin = nn.Linear(2, 2, bias=False)
        >>> with torch.no_grad():
        ...     _ = lin.weight.copy_(torch.tensor([[1.0, -1.0], [2.0, 0.5]]))
        >>> head = nn.Linear(2, 1, bias=False)
        >>> with torch.no_grad():
        ...     _ = head.weight.copy_(torch.tensor([[1.0, -3.0]]))
        >>> model = nn.Sequential(lin, nn.ReLU(), head)
        >>> x = torch.tensor([[-1.0, 0.0]])  # both hidden units off: the gradient would be 0
        >>> Deconvnet()(model, x, torch.tensor([0])).tolist()  # W1^T relu([1, -3])
        [[1.0, -1.0]]
    """

    name = "deconvnet"
    reuse_safe = True

    def attribute(self, model: Any, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        refuse_torchscript(model, self.name)
        check_activations(model, False, self.name)
        return input_gradient(model, x, target,
                              context=lambda: GuidedMode(rule="deconvnet"), who=self.name)
