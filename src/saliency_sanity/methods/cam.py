"""Grad-CAM (Selvaraju et al. 2017) and Guided Grad-CAM.

Grad-CAM explains through the activations ``A`` (B, K, h, w) of one layer: weights
``w_k = mean_{i,j} d score / d A_kij``, map ``ReLU(sum_k w_k A_k)`` (B, 1, h, w), upsampled
(bilinear, ``align_corners=False``) to the input's size.

On a vision transformer (a model with transformer encoder blocks: torchvision's, timm's and
Hugging Face's ViTs, ``nn.TransformerEncoder``) the layer is an encoder block and its patch tokens
are the map (class token dropped, patch tokens on the patch grid, channels = embedding
dimensions); the default block is the last one whose patch tokens reach the logits (see
:mod:`._tokens`): the second-to-last of a class-token ViT.

For other models the default layer is the *activated* output of the last convolutional block,
as in the authors' TensorFlow code (a TF conv layer includes its ReLU) and common Grad-CAM
tools. It is found by one traced forward pass on the first example (forward hooks on every
module, removed on exit):

1. take the last ``nn.Conv2d`` call in execution order and follow its output tensor through
   leaf modules that keep the shape and meaning of a conv output: normalization (batch, group,
   instance, layer norm), dropout, ``nn.Identity``;
2. if the module that then receives it is an activation module (``nn.ReLU``, ``nn.ReLU6``,
   ``nn.LeakyReLU``, ``nn.ELU``, ``nn.GELU``, ``nn.SiLU``, ...) that runs exactly once in the
   forward pass, that module is the layer: ``relu2`` in ``conv2 -> relu2 -> pool2``,
   ``features.29`` in torchvision's VGG-16;
3. otherwise (the activation is functional, ``F.relu(self.conv2(x))``; one activation module
   is shared by several layers; a residual addition comes first; pooling comes first) the layer
   is the module that finishes LAST in execution order among those that are or contain an
   ``nn.Conv2d`` and return a 4-D tensor: the last residual stage of a ResNet (``layer4``, whose
   output is already activated), ``Mixed_7c`` for Inception v3, and for a plain stack with a
   functional activation the last ``nn.Conv2d`` itself (its output before the activation: the
   best a module hook can reach).

:meth:`GradCAM.layer_name` returns the layer used for a model and inputs;
:meth:`GradCAM.resolved_settings` records it (``layer="auto"``, ``resolved_layer=...``). Pass
``layer="..."`` to choose.

The layer's output is captured by a forward hook (removed on exit) that hands the rest of the
network a copy, so an in-place operation after the layer (``nn.ReLU(inplace=True)``) does not
change the activations or gradients Grad-CAM sees.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._tokens import default_token_layer, first_tensor, tokens_to_map
from .base import Method, check_logits, check_target_range
from .guided import GuidedBackprop, refuse_torchscript
from .registry import METHODS


def _has_conv(m: nn.Module) -> bool:
    return any(isinstance(s, nn.Conv2d) for s in m.modules())


def conv_layer_names(model: nn.Module) -> list[str]:
    """Names of the submodules that are or contain an ``nn.Conv2d`` (Grad-CAM candidates)."""
    return [n for n, m in model.named_modules() if n and _has_conv(m)]


# leaf modules through which a conv output is followed (same shape, still "the conv's output")
_PASS_THROUGH: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.GroupNorm,
    nn.LayerNorm, nn.LocalResponseNorm, nn.modules.dropout._DropoutNd, nn.Identity,
)
# activation modules that end a convolutional block
ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU,
    nn.SiLU, nn.Mish, nn.Hardswish, nn.Hardtanh, nn.Softplus, nn.Tanh, nn.Sigmoid,
)


def trace_calls(model: nn.Module, x: torch.Tensor) -> list[tuple[str, nn.Module, Any, Any]]:
    """(name, module, first positional input, output) of every module call, in the order the
    calls finish, from one forward pass without gradients on ``x[:1]`` (hooks removed).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
        >>> calls = trace_calls(net, torch.ones(3, 1, 5, 5))
        >>> [(name, tuple(out.shape)) for name, _, _, out in calls]
        [('0', (1, 2, 3, 3)), ('1', (1, 2, 3, 3))]
    """
    calls: list[tuple[str, nn.Module, Any, Any]] = []
    handles = []

    def hook(name: str):
        def fn(m: nn.Module, args: Any, out: Any) -> None:
            calls.append((name, m, args[0] if args else None, out))
        return fn

    try:
        for name, m in model.named_modules():
            if name:
                handles.append(m.register_forward_hook(hook(name)))
        with torch.no_grad():
            model(x[:1].detach())
    finally:
        for h in handles:
            h.remove()
    return calls


def _activation_after(calls: list[tuple[str, nn.Module, Any, Any]], start: int,
                      t: torch.Tensor) -> str | None:
    """Name of the activation module applied to conv output ``t`` (through pass-through leaves)
    if it runs exactly once; None otherwise."""
    runs: dict[str, int] = {}
    for name, _m, _i, _o in calls:
        runs[name] = runs.get(name, 0) + 1
    for name, m, inp, out in calls[start + 1:]:
        if inp is not t or any(True for _ in m.children()):
            continue
        if isinstance(m, ACTIVATIONS):
            ok = runs[name] == 1 and isinstance(out, torch.Tensor) and out.ndim == 4
            return name if ok else None
        if isinstance(m, _PASS_THROUGH) and isinstance(out, torch.Tensor):
            t = out
            continue
        return None  # pooling, a custom module, ...: not an activation of the conv output
    return None


def default_layer(model: nn.Module, x: torch.Tensor, who: str = "gradcam") -> str:
    """Name of the default Grad-CAM layer (see the module docstring) for inputs like ``x``.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3),
        ...                       nn.BatchNorm2d(2), nn.ReLU(),
        ...                       nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3))
        >>> default_layer(model.eval(), torch.zeros(1, 1, 8, 8))  # conv '2' -> bn '3' -> relu
        '4'
        >>> no_act = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3),
        ...                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3))
        >>> default_layer(no_act, torch.zeros(1, 1, 8, 8))  # no activation module: the conv
        '2'
    """
    tokens = default_token_layer(model, x)
    if tokens is not None:
        return tokens
    calls = trace_calls(model, x)
    last_conv = max((i for i, c in enumerate(calls) if isinstance(c[1], nn.Conv2d)
                     and isinstance(c[3], torch.Tensor) and c[3].ndim == 4), default=None)
    if last_conv is not None:
        act = _activation_after(calls, last_conv, calls[last_conv][3])
        if act is not None:
            return act
    finished = [name for name, m, _i, out in calls
                if isinstance(out, torch.Tensor) and out.ndim == 4 and _has_conv(m)]
    if not finished:
        raise ValueError(f"{who}: the model has no convolutional layer with a 4-D output; "
                         "CAM methods need one (pass layer=<module name>)")
    return finished[-1]


def get_layer(model: nn.Module, name: str, who: str = "gradcam") -> nn.Module:
    """The submodule called ``name``; a KeyError listing candidate names if there is none."""
    modules = dict(model.named_modules())
    if not isinstance(name, str) or not name or name not in modules:
        cands = conv_layer_names(model) or [n for n in modules if n]
        raise KeyError(f"{who}: no layer named {name!r} in {type(model).__name__}; "
                       f"candidate layers: {', '.join(cands)}")
    return modules[name]


def capture_layer(model: nn.Module, x: torch.Tensor, layer: str, who: str = "gradcam",
                  grad: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits, activations)`` of one forward pass on ``x``; the activations (B, K, h, w) are
    the output of module ``layer``, part of the autograd graph when ``grad`` is True.

    A forward hook (removed on exit) captures the output and hands the rest of the network a
    copy, so an in-place operation after the layer does not change the captured tensor. Clear
    errors for an unknown name, a layer that does not run exactly once, and a non-spatial
    (not 4-D) output.
    """
    module = get_layer(model, layer, who)
    captured: list[Any] = []

    def hook(_m: nn.Module, _i: Any, out: Any) -> Any:
        t = first_tensor(out)
        captured.append(t if t is not None else out)
        if isinstance(out, torch.Tensor):
            return out.clone()
        return (t.clone(), *out[1:]) if t is not None else None

    handle = module.register_forward_hook(hook)
    try:
        with torch.set_grad_enabled(grad):
            xin = x.detach().clone().requires_grad_(grad)
            logits = check_logits(model(xin), x.shape[0], who)
    finally:
        handle.remove()
    if len(captured) != 1:
        raise ValueError(f"{who}: layer {layer!r} ran {len(captured)} times in one forward pass; "
                         "a CAM method needs a layer that runs exactly once")
    acts = captured[0]
    if not isinstance(acts, torch.Tensor) or acts.ndim not in (3, 4):
        shape = tuple(acts.shape) if isinstance(acts, torch.Tensor) else ""
        raise ValueError(f"{who}: layer {layer!r} must output a 4-D tensor (B, K, h, w) or "
                         f"transformer tokens (B, N, D), got {type(acts).__name__} {shape}; "
                         "CAM methods need a spatial (convolutional or token) layer")
    return logits, acts


def layer_gradients(model: nn.Module, x: torch.Tensor, target: torch.Tensor, layer: str,
                    who: str = "gradcam") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(activations, gradients, logits)``, detached: the output ``A`` of ``layer`` (B, K, h,
    w), ``d logit[target] / d A`` for each row, and the logits (one forward, one backward).
    Transformer tokens (B, N, D) come back as patch maps (B, D, h, w), leading tokens dropped."""
    logits, acts = capture_layer(model, x, layer, who)
    check_target_range(target, logits.shape[1], who)
    (grads,) = torch.autograd.grad(logits.gather(1, target.view(-1, 1)).sum(), acts)
    if acts.ndim == 3:  # patch tokens on the patch grid: (B, D, h, w)
        module = get_layer(model, layer, who)
        acts = tokens_to_map(acts, module, model, tuple(x.shape))
        grads = tokens_to_map(grads, module, model, tuple(x.shape))
    return acts.detach(), grads.detach(), logits.detach()


def layer_gradcam(model: nn.Module, x: torch.Tensor, target: torch.Tensor, layer: str,
                  who: str = "gradcam") -> torch.Tensor:
    """Grad-CAM at the resolution of ``layer`` (B, 1, h, w), ReLU applied, not upsampled."""
    acts, grads, _ = layer_gradients(model, x, target, layer, who)
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
        """The layer used for ``model`` and inputs like ``x`` (the chosen one, or the default
        layer found by :func:`default_layer`)."""
        if self.layer is not None:
            get_layer(model, self.layer, self.name)
            return self.layer
        return default_layer(model, x, self.name)

    def resolved_settings(self, model: nn.Module, x: torch.Tensor) -> dict[str, Any]:
        """:meth:`settings` with the layer resolved for ``model`` and inputs like ``x``:
        ``layer`` is the given name or ``"auto"``, ``resolved_layer`` the module used.

        Example:
            >>> from torch import nn
            >>> model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(),
            ...                       nn.Linear(72, 3))
            >>> s = GradCAM().resolved_settings(model, torch.zeros(1, 1, 8, 8))
            >>> s["layer"], s["resolved_layer"]
            ('auto', '1')
        """
        out = self.settings()
        out["layer"] = self.layer if self.layer is not None else "auto"
        out["resolved_layer"] = self.layer_name(model, x)
        return out

    def attribute(self, model: Any, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_image(x, self.name)
        refuse_torchscript(model, self.name)
        cam = self.layer_map(model, x, target, self.layer_name(model, x))
        return _upsample(cam, (x.shape[2], x.shape[3]), self.upsample)

    def layer_map(self, model: Any, x: torch.Tensor, target: torch.Tensor, layer: str
                  ) -> torch.Tensor:
        """The map at the resolution of ``layer`` (B, 1, h, w), before upsampling. Subclasses
        (the other CAM methods) override this alone."""
        return layer_gradcam(model, x, target, layer, who=self.name)


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
        self.layer = layer
        self.gradcam = GradCAM(layer=layer, upsample=upsample)
        self.guided = GuidedBackprop(allow_other_activations=allow_other_activations)
        self._settings = {"layer": layer, "upsample": upsample,
                          "allow_other_activations": allow_other_activations}

    def layer_name(self, model: nn.Module, x: torch.Tensor) -> str:
        """The Grad-CAM layer used for ``model`` and inputs like ``x``."""
        return self.gradcam.layer_name(model, x)

    def resolved_settings(self, model: nn.Module, x: torch.Tensor) -> dict[str, Any]:
        """:meth:`settings` with the Grad-CAM layer resolved (as :meth:`GradCAM.resolved_settings`).
        """
        out = self.settings()
        out["layer"] = self.layer if self.layer is not None else "auto"
        out["resolved_layer"] = self.layer_name(model, x)
        return out

    def attribute(self, model: Any, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_image(x, self.name)
        return self.guided.attribute(model, x, target) * self.gradcam.attribute(model, x, target)
