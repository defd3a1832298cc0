"""Attribution methods and controls, by name.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from saliency_sanity import methods
    >>> m = methods.get("smoothgrad", base="gradient", samples=4, noise=0.15, seed=0)
    >>> model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> m(model, torch.randn(2, 5), "predicted").shape
    torch.Size([2, 5])
    >>> "gradcam" in methods.list()
    True
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from typing import Any

# The method modules register themselves with METHODS when imported (explicitly, here).
from . import (  # noqa: F401
    cam,
    cam_family,
    controls,
    gradient,
    guided,
    lrp,
    noise,
    occlusion,
    rise,
)
from .adapters import CaptumMethod, FunctionMethod, resolve
from .base import Method, check_input, model_guard, predicted_targets
from .cam import GradCAM, GuidedGradCAM, default_layer
from .cam_family import AblationCAM, GradCAMPlusPlus, LayerCAM, ScoreCAM
from .controls import Constant, EdgeSobel, RandomGaussian, RandomUniform
from .gradient import Gradient, GradientXInput, IntegratedGradients, quadrature
from .guided import Deconvnet, GuidedBackprop, guided_relus
from .lrp import LRP
from .noise import NoiseWrapper, gaussian_noise, ig_smoothgrad, smoothgrad, vargrad
from .occlusion import Occlusion
from .registry import METHODS
from .rise import RISE, rise_masks


def get(name: str, **settings: Any) -> Method:
    """The registered method ``name`` built with ``settings``; KeyError listing known names."""
    return METHODS.get(name, **settings)


def list() -> builtins.list[str]:  # noqa: A001
    """Sorted names of the registered methods and controls."""
    return METHODS.list()


def register(name: str, default: int | None = None
             ) -> Callable[[Callable[..., Method]], Callable[..., Method]]:
    """Decorator registering a Method factory (a Method subclass or a function) under ``name``.

    ``default``: its place among the default methods (or controls), None if it is not one.
    """
    return METHODS.register(name, default=default)


def defaults(model: Any = None, x: Any = None, control: bool = False) -> builtins.list[str]:
    """The default methods (or, with ``control``, the default controls) in their order; with
    ``model`` and ``x``, only those that apply to them (e.g. no Grad-CAM without convolutions).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> defaults()[:3]
        ['gradient', 'gradient_x_input', 'integrated_gradients']
        >>> "gradcam" in defaults(nn.Linear(4, 2), torch.zeros(1, 4))
        False
        >>> defaults(control=True)
        ['edge_sobel', 'random_gaussian', 'random_uniform']
    """
    ranked = []
    for name in METHODS.list():
        rank = METHODS.meta(name).get("default")
        if rank is None:
            continue
        m = METHODS.get(name)
        if m.is_control != control:
            continue
        if model is not None and x is not None and not m.applies(model, x):
            continue
        ranked.append((rank, name))
    return [name for _, name in sorted(ranked)]


__all__ = [
    "LRP", "METHODS", "RISE", "AblationCAM", "CaptumMethod", "Constant", "Deconvnet",
    "EdgeSobel", "FunctionMethod", "GradCAM", "GradCAMPlusPlus", "Gradient", "GradientXInput",
    "GuidedBackprop", "GuidedGradCAM", "IntegratedGradients", "LayerCAM", "Method",
    "NoiseWrapper", "Occlusion", "RandomGaussian", "RandomUniform", "ScoreCAM", "check_input",
    "default_layer", "gaussian_noise", "get", "guided_relus", "ig_smoothgrad", "list",
    "model_guard", "predicted_targets", "quadrature", "register", "defaults", "resolve",
    "rise_masks", "smoothgrad", "vargrad",
]
