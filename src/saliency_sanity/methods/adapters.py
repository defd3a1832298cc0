"""Plug-ins: plain callables and Captum attribution classes as Methods, and ``resolve``."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._imports import require
from .base import Method, check_logits
from .registry import METHODS


class FunctionMethod(Method):
    """A plain callable ``fn(model, x, target, **settings) -> map`` as a Method.

    ``target`` reaches ``fn`` as a LongTensor (B,) ("predicted" already resolved); the model is
    guarded and the returned map is checked and detached like any method's.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> def ones(model, x, target):
        ...     return torch.ones_like(x)
        >>> m = FunctionMethod(ones)
        >>> m.name, m(nn.Linear(2, 2), torch.zeros(3, 2)).shape
        ('ones', torch.Size([3, 2]))
    """

    def __init__(self, fn: Callable[..., torch.Tensor], reuse_safe: bool = False,
                 **settings: Any) -> None:
        super().__init__()
        self.fn = fn
        # a plug-in may differentiate twice: activation reuse only when it says it is safe
        self.reuse_safe = bool(getattr(fn, "reuse_safe", reuse_safe))
        self.name = getattr(fn, "__name__", type(fn).__name__)
        self.kwargs = settings
        self._settings = dict(settings)

    def attribute(self, model: Any, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.fn(model, x, target, **self.kwargs)


class _Logits(nn.Module):
    """The model with its output reduced to the logits tensor (for Captum, which needs a tensor:
    a Hugging Face model returns an output object). Hooks on the model's own modules still fire.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.training = model.training

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = self.model(x, *args, **kwargs)
        return out if isinstance(out, torch.Tensor) else check_logits(out, x.shape[0], "captum")


def _is_captum_class(spec: Any) -> bool:
    if not (isinstance(spec, type) and getattr(spec, "__module__", "").startswith("captum")):
        return False
    attr = require("captum.attr")
    return issubclass(spec, attr.Attribution)


class CaptumMethod(Method):
    """A Captum attribution class as a Method (captum is imported only when used).

    At each call the class is instantiated on the model being explained. Settings named like
    parameters of the class's constructor go there (``layer`` may be a module name, resolved
    with ``model.named_modules()``); all others go to ``attribute``. A layer map of shape
    (B, 1, h, w) smaller than the input is upsampled (``upsample``, default bilinear).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from captum.attr import Saliency
        >>> m = CaptumMethod(Saliency, abs=False)
        >>> m(nn.Linear(2, 2), torch.zeros(1, 2), torch.tensor([0])).shape
        torch.Size([1, 2])
    """

    def __init__(self, cls: type, upsample: str = "bilinear", **settings: Any) -> None:
        super().__init__()
        self.cls = cls
        self.name = f"captum.{cls.__name__}"
        self.upsample = upsample
        params = inspect.signature(cls.__init__).parameters
        self.init_kwargs = {k: v for k, v in settings.items() if k in params}
        self.attr_kwargs = {k: v for k, v in settings.items() if k not in params}
        self._settings = {"upsample": upsample, **settings}

    def attribute(self, model: Any, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        init = dict(self.init_kwargs)
        if isinstance(init.get("layer"), str) and isinstance(model, nn.Module):
            from .cam import get_layer

            init["layer"] = get_layer(model, init["layer"])
        inst = self.cls(_Logits(model) if isinstance(model, nn.Module) else model, **init)
        out = inst.attribute(x.detach().clone(), target=target, **self.attr_kwargs)
        if isinstance(out, tuple):
            out = out[0]
        out = out.detach()
        if (x.ndim == 4 and out.ndim == 4 and out.shape[1] == 1
                and tuple(out.shape[2:]) != tuple(x.shape[2:])):
            kw = {"align_corners": False} if self.upsample in ("bilinear", "bicubic") else {}
            out = F.interpolate(out, size=tuple(x.shape[2:]), mode=self.upsample, **kw)
        return out


def resolve(spec: Any, **settings: Any) -> Method:
    """A Method from a registered name, a Method (returned as is), a Method subclass, a Captum
    attribution class, or a plain callable ``fn(model, x, target)``.

    Example:
        >>> resolve("integrated_gradients", steps=10).settings()["steps"]
        10
        >>> def f(model, x, target):
        ...     return x
        >>> resolve(f).name
        'f'
    """
    if isinstance(spec, Method):
        if settings:
            raise TypeError(f"settings {sorted(settings)} cannot be applied to an existing "
                            f"Method ({spec!r}); build it with them instead")
        return spec
    if isinstance(spec, str):
        return METHODS.get(spec, **settings)
    if isinstance(spec, type) and issubclass(spec, Method):
        return spec(**settings)
    if _is_captum_class(spec):
        return CaptumMethod(spec, **settings)
    if callable(spec):
        return FunctionMethod(spec, **settings)
    raise TypeError(f"cannot make a method from {spec!r}: give a registered name "
                    f"({', '.join(METHODS.list())}), a Method, a Captum attribution class or a "
                    "callable(model, x, target)")
