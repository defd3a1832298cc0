"""Grad-CAM (Selvaraju et al. 2017) and Guided Grad-CAM.

Grad-CAM explains through the activations ``A`` (B, K, h, w) of one layer: weights
``w_k = mean_{i,j} d score / d A_kij``, map ``ReLU(sum_k w_k A_k)`` (B, 1, h, w), upsampled
(bilinear, ``align_corners=False``) to the input's size.

The default layer ("the last convolutional block") is found by one extra forward pass on the
first example: it is the module that finishes LAST in forward-execution order among those that
are or contain an ``nn.Conv2d`` and return a 4-D tensor. For a residual network that is the last
residual stage (e.g. ``layer4``), for Inception v3 ``Mixed_7c``, for a plain conv/ReLU/pool stack
the last ``nn.Conv2d`` itself (its output before the ReLU); pass ``layer="..."`` to choose.

The layer's output is captured by a forward hook (removed on exit) that hands the rest of the
network a copy, so an in-place operation after the layer (``nn.ReLU(inplace=True)``) does not
change the activations or gradients Grad-CAM sees.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import Method, check_logits, check_target_range
from .guided import GuidedBackprop, refuse_torchscript
from .registry import METHODS


def _has_conv(m: nn.Module) -> bool:
    return any(isinstance(s, nn.Conv2d) for s in m.modules())


def conv_layer_names(model: nn.Module) -> list[str]:
    """Names of the submodules that are or contain an ``nn.Conv2d`` (Grad-CAM candidates)."""
    return [n for n, m in model.named_modules() if n and _has_conv(m)]


def default_layer(model: nn.Module, x: torch.Tensor) -> str:
    """Name of the default Grad-CAM layer (see the module docstring) for inputs like ``x``.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3),
        ...                       nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3))
        >>> default_layer(model, torch.zeros(1, 1, 8, 8))
        '2'
    """
    finished: list[str] = []
    handles = []

    def hook(name: str):
        def fn(_m: nn.Module, _i: Any, out: Any) -> None:
            if isinstance(out, torch.Tensor) and out.ndim == 4:
                finished.append(name)
        return fn

    try:
        for name, m in model.named_modules():
            if name and _has_conv(m):
                handles.append(m.register_forward_hook(hook(name)))
        with torch.no_grad():
            model(x[:1].detach())
    finally:
        for h in handles:
            h.remove()
    if not finished:
        raise ValueError("gradcam: the model has no convolutional layer with a 4-D output; "
                         "Grad-CAM needs one (pass layer=<module name>)")
    return finished[-1]


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name``; a KeyError listing candidate names if there is none."""
    modules = dict(model.named_modules())
    if not isinstance(name, str) or not name or name not in modules:
        cands = conv_layer_names(model) or [n for n in modules if n]
        raise KeyError(f"gradcam: no layer named {name!r} in {type(model).__name__}; "
                       f"candidate layers: {', '.join(cands)}")
    return modules[name]


def layer_gradcam(model: nn.Module, x: torch.Tensor, target: torch.Tensor, layer: str,
                  who: str = "gradcam") -> torch.Tensor:
    """Grad-CAM at the resolution of ``layer`` (B, 1, h, w), ReLU applied, not upsampled."""
    module = get_layer(model, layer)
    captured: list[torch.Tensor] = []

    def hook(_m: nn.Module, _i: Any, out: Any) -> Any:
        captured.append(out)
        return out.clone() if isinstance(out, torch.Tensor) else None

    handle = module.register_forward_hook(hook)
    try:
        logits = check_logits(model(x.detach().clone().requires_grad_(True)), x.shape[0], who)
    finally:
        handle.remove()
    if len(captured) != 1:
        raise ValueError(f"{who}: layer {layer!r} ran {len(captured)} times in one forward pass; "
                         "Grad-CAM needs a layer that runs exactly once")
    acts = captured[0]
    if not isinstance(acts, torch.Tensor) or acts.ndim != 4:
        shape = tuple(acts.shape) if isinstance(acts, torch.Tensor) else ""
        raise ValueError(f"{who}: layer {layer!r} must output a 4-D tensor (B, K, h, w), got "
                         f"{type(acts).__name__} {shape}")
    check_target_range(target, logits.shape[1], who)
    (grads,) = torch.autograd.grad(logits.gather(1, target.view(-1, 1)).sum(), acts)
    weights = grads.mean(dim=(2, 3), keepdim=True)
    return torch.relu((weights * acts).sum(dim=1, keepdim=True)).detach()


def _upsample(cam: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    if tuple(cam.shape[2:]) == tuple(size):
        return cam
    if mode in ("bilinear", "bicubic"):
        return F.interpolate(cam, size=size, mode=mode, align_corners=False)
    return F.interpolate(cam, size=size, mode=mode)


def _check_image(x: torch.Tensor, who: str) -> None:
    if x.ndim != 4:
        raise ValueError(f"{who} needs image inputs (B, C, H, W); got shape {tuple(x.shape)}")


@METHODS.register("gradcam", default=7)
class GradCAM(Method):
    """Grad-CAM, upsampled to the input: a (B, 1, H, W) map.

    Args:
        layer: name of the module whose output is explained (as in ``model.named_modules()``);
            None picks the last convolutional block (see the module docstring).
        upsample: interpolation mode for ``F.interpolate`` ("bilinear", "nearest", "bicubic").

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(),
        ...                       nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3))
        >>> GradCAM(layer="0")(model, torch.randn(2, 1, 8, 8), "predicted").shape
        torch.Size([2, 1, 8, 8])
    """

    name = "gradcam"
    needs_image = True
    needs_conv = True
    reuse_safe = True

    def __init__(self, layer: str | None = None, upsample: str = "bilinear") -> None:
        super().__init__()
        if upsample not in ("bilinear", "nearest", "bicubic"):
            raise ValueError(
                f"upsample must be 'bilinear', 'nearest' or 'bicubic', got {upsample!r}")
        self.layer, self.upsample = layer, upsample
        self._settings = {"layer": layer, "upsample": upsample}

    def layer_name(self, model: nn.Module, x: torch.Tensor) -> str:
        """The layer used for ``model`` and inputs like ``x``."""
        if self.layer is not None:
            get_layer(model, self.layer)
            return self.layer
        return default_layer(model, x)

    def attribute(self, model: Any, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_image(x, self.name)
        refuse_torchscript(model, self.name)
        cam = layer_gradcam(model, x, target, self.layer_name(model, x), who=self.name)
        return _upsample(cam, (x.shape[2], x.shape[3]), self.upsample)


@METHODS.register("guided_gradcam", default=8)
class GuidedGradCAM(Method):
    """Guided Grad-CAM: guided backprop times the upsampled Grad-CAM map (broadcast over C).

    Args:
        layer, upsample: as for :class:`GradCAM`.
        allow_other_activations: as for :class:`~.guided.GuidedBackprop`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.ReLU(),
        ...                       nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3))
        >>> GuidedGradCAM()(model, torch.randn(2, 3, 8, 8), "predicted").shape
        torch.Size([2, 3, 8, 8])
    """

    name = "guided_gradcam"
    needs_image = True
    needs_conv = True
    reuse_safe = True

    def __init__(self, layer: str | None = None, upsample: str = "bilinear",
                 allow_other_activations: bool = False) -> None:
        super().__init__()
        self.gradcam = GradCAM(layer=layer, upsample=upsample)
        self.guided = GuidedBackprop(allow_other_activations=allow_other_activations)
        self._settings = {"layer": layer, "upsample": upsample,
                          "allow_other_activations": allow_other_activations}

    def attribute(self, model: Any, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_image(x, self.name)
        return self.guided.attribute(model, x, target) * self.gradcam.attribute(model, x, target)
