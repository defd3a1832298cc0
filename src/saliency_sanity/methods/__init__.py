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
from . import cam, controls, gradient, guided, noise  # noqa: F401
from .adapters import CaptumMethod, FunctionMethod, resolve
from .base import Method, check_input, model_guard, predicted_targets
from .cam import GradCAM, GuidedGradCAM, default_layer
from .controls import Constant, EdgeSobel, RandomGaussian, RandomUniform
from .gradient import Gradient, GradientXInput, IntegratedGradients, quadrature
from .guided import GuidedBackprop, guided_relus
from .noise import NoiseWrapper, gaussian_noise, ig_smoothgrad, smoothgrad, vargrad
from .registry import METHODS


def get(name: str, **settings: Any) -> Method:
    """The registered method ``name`` built with ``settings``; KeyError listing known names."""
    return METHODS.get(name, **settings)


def list() -> builtins.list[str]:  # noqa: A001
    """Sorted names of the registered methods and controls."""
    return METHODS.list()


def register(name: str) -> Callable[[Callable[..., Method]], Callable[..., Method]]:
    """Decorator registering a Method factory (a Method subclass or a function) under ``name``."""
    return METHODS.register(name)


__all__ = [
    "METHODS", "CaptumMethod", "Constant", "EdgeSobel", "FunctionMethod", "GradCAM", "Gradient",
    "GradientXInput", "GuidedBackprop", "GuidedGradCAM", "IntegratedGradients", "Method",
    "NoiseWrapper", "RandomGaussian", "RandomUniform", "check_input", "default_layer",
    "gaussian_noise", "get", "guided_relus", "ig_smoothgrad", "list", "model_guard",
    "predicted_targets", "quadrature", "register", "resolve", "smoothgrad", "vargrad",
]
