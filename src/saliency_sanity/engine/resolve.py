"""Input validation and the resolution of methods and scores, shared by every check."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .. import methods as _methods
from .. import scores as _scores
from .._guard import model_device
from .config import derive_seed

# a name, a Method, a callable(model, x, target), a captum class, or (name, settings)
MethodSpec = Any
TARGET_MODES = ("predicted", "fixed")


def resolve_methods(
    specs: Sequence[MethodSpec] | Mapping[str, MethodSpec] | None,
    controls: bool | Sequence[str] | None,
    model: nn.Module,
    x: torch.Tensor,
    exclude_noise: bool = False,
) -> dict[str, _methods.Method]:
    """Turn the user's method and control choices into ``{label: Method}``.

    ``specs=None`` selects every default method that applies to this model and input
    (``methods.defaults``; with ``exclude_noise``, minus those that average over noise).
    ``controls=True`` adds the default controls that apply; a control already listed among the
    methods is not added twice.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 3))
        >>> sorted(resolve_methods(["gradient"], True, net, torch.zeros(2, 4)))
        ['gradient', 'random_gaussian', 'random_uniform']
    """
    if specs is None:
        pairs: list[tuple[str | None, MethodSpec]] = [
            (None, n) for n in _methods.defaults(model, x)
            if not (exclude_noise and _methods.get(n).averages_noise)]
    elif isinstance(specs, Mapping):
        pairs = list(specs.items())
    elif isinstance(specs, (str, bytes)) or callable(specs):
        pairs = [(None, specs)]
    else:
        pairs = [(None, s) for s in specs]
    if controls is True:
        extra: list[str] = _methods.defaults(model, x, control=True)
    else:
        extra = list(controls or [])
    out: dict[str, _methods.Method] = {}
    for label, spec in pairs:
        if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[1], Mapping):
            method = _methods.resolve(spec[0], **dict(spec[1]))
        else:
            method = _methods.resolve(spec)
        key = label or method.name
        if key in out:
            raise ValueError(
                f"method {key!r} is given twice; pass a dict {{label: spec}} to compare two "
                "settings of one method"
            )
        out[key] = method
    for name in extra:
        if name in out:
            if controls is True:
                continue  # a default control the user also listed: once is enough
            raise ValueError(f"control {name!r} is also listed among the methods; list it once")
        out[name] = _methods.resolve(name)
    if not out:
        raise ValueError("no methods to evaluate: pass at least one method name")
    return out


def resolve_scores(names: Any, x: torch.Tensor) -> dict[str, Any]:
    """``{name: Score}`` from score names or Score-like objects (``name``, ``settings()``,
    ``(a, b) -> (B,)``); None selects every registered score that applies to the input.

    Example:
        >>> sorted(resolve_scores(None, torch.zeros(2, 5)))
        ['mse', 'pearson', 'spearman', 'spearman_abs']
    """
    images = x.dim() == 4
    if names is None:
        chosen: list[Any] = [n for n in _scores.list()
                             if images or not _scores.get(n).requires_image]
    elif isinstance(names, str):
        chosen = [names]
    else:
        chosen = list(names)
    out: dict[str, Any] = {}
    for n in chosen:
        if not isinstance(n, str):
            if callable(n) and hasattr(n, "name"):
                out[str(n.name)] = n
                continue
            raise TypeError(f"scores must be names or Score objects, got {type(n).__name__}")
        s = _scores.get(n)
        if s.requires_image and not images:
            flat_ok = [k for k in _scores.list() if not _scores.get(k).requires_image]
            raise ValueError(
                f"score {n!r} needs image maps (B, C, H, W) but the input is {tuple(x.shape)}; "
                f"choose among: {', '.join(flat_ok)}"
            )
        out[n] = s
    if not out:
        raise ValueError("no scores to compute: pass at least one score name")
    return out


def check_inputs(x: torch.Tensor, target: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Validate the inputs and labels of a check; return them as tensors."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in (2, 4):
        raise ValueError(
            f"x must have shape (B, C, H, W) for images or (B, D) for flat inputs; got "
            f"{tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise TypeError(f"x must be a float tensor, got {x.dtype}; convert with x.float()")
    if x.shape[0] == 0:
        raise ValueError("x is empty: pass at least one input")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or inf values; clean the inputs first")
    if target is None:
        return x, None
    t = torch.as_tensor(target)
    if t.dim() != 1 or t.shape[0] != x.shape[0]:
        raise ValueError(
            f"target must be a 1-D tensor of {x.shape[0]} class indices, got shape "
            f"{tuple(t.shape)}"
        )
    if t.is_floating_point() or t.dtype == torch.bool:
        raise TypeError(f"target must hold integer class indices, got {t.dtype}")
    return x, t.long()


def prepare(model: nn.Module, x: torch.Tensor, target: Any, target_mode: str | None,
            device: str | torch.device | None
            ) -> tuple[torch.Tensor, torch.Tensor | None, str, torch.device]:
    """Validate a check's model, inputs, target and target mode; move x (and target) to the
    device (default: the model's). ``target_mode=None`` means "fixed" when a target is given,
    else "predicted"."""
    x, tgt = check_inputs(x, target)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if target_mode is None:
        target_mode = "fixed" if tgt is not None else "predicted"
    if target_mode not in TARGET_MODES:
        raise ValueError(f"target_mode must be one of {TARGET_MODES}, got {target_mode!r}")
    if tgt is not None and target_mode == "predicted":
        raise ValueError(
            "target was given but target_mode='predicted' explains each stage's predicted class; "
            "use target_mode='fixed' to explain the given classes, or drop target"
        )
    dev = torch.device(device) if device is not None else model_device(model)
    return x.to(dev), (None if tgt is None else tgt.to(dev)), target_mode, dev


def method_for_call(method: Any, label: str, seed: int, stage: Any, batch: int) -> Any:
    """The method to call for one (stage, batch).

    Seeded controls (random maps) get a fresh seed per stage and batch, so the control is
    independent of every other map. Seeded methods (SmoothGrad, VarGrad) get a seed per batch that
    is the same at every stage: the noise is held fixed, so map changes come from the model alone.

    Example:
        >>> from saliency_sanity import methods
        >>> sg = methods.get("smoothgrad", samples=2)
        >>> method_for_call(sg, "sg", 0, 1, 0).seed == method_for_call(sg, "sg", 0, 2, 0).seed
        True
    """
    if not getattr(method, "seeded", False):
        return method
    if getattr(method, "is_control", False):
        return method.reseeded(derive_seed(seed, label, "stage", stage, "batch", batch))
    return method.reseeded(derive_seed(seed, label, "batch", batch))
