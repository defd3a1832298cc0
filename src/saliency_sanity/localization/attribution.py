"""ML-Att: every method at a layer, on every head of a setting.

A method at a layer explains :class:`~saliency_sanity.grids.Head` -- the rest of the network
from that layer -- on the layer's activations: the method's map is taken with respect to the
activations, so gradient, guided backprop, Gradient x Input and IG at a layer are the paper's
layer attributions, and any registered method works there. CAM methods (those with a ``layer``
argument) get ``layer="at"``: the head's identity on the activations, so they weight the layer's
channels as feature maps (at the input, the image channels, as in the paper).

Methods whose map is a function of the input gradient (``Method.input_gradient_map``) share one
gradient per head, as in the engine's evaluator.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from ..engine import derive_seed
from ..grids import Head, Setting
from ..methods.base import input_gradient
from ..methods.cam import GradCAM

#: the name of the head's identity on its input, the layer CAM methods are given
AT = "at"


def at_layer(method: Any) -> Any:
    """``method`` itself, or, for a method with a ``layer`` setting (the CAM family), a copy
    explaining the head's input activations (``layer="at"``).

    Example:
        >>> from saliency_sanity import methods
        >>> at_layer(methods.get("gradcam")).layer
        'at'
        >>> at_layer(methods.get("gradient")).name
        'gradient'
    """
    try:
        params = inspect.signature(type(method).__init__).parameters
    except (TypeError, ValueError):
        return method
    if "layer" not in params:
        return method
    settings = getattr(method, "_settings", {})
    kwargs = {k: v for k, v in settings.items() if k in params}
    kwargs["layer"] = AT
    try:
        return type(method)(**kwargs)
    except TypeError:
        new = copy.copy(method)
        new.layer = AT
        return new


def _is_gradcam_at_input(method: Any) -> bool:
    """Grad-CAM on the head's input: a function of the input gradient and the input."""
    return (type(method) is GradCAM and method.layer == AT)


def gradcam_from_gradient(grad: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Grad-CAM of activations ``a`` from the target's gradient ``grad`` with respect to them:
    ReLU(sum_c mean_ij(grad_c) a_c), (B, 1, h, w).

    Example:
        >>> a = torch.ones(1, 2, 2, 2)
        >>> g = torch.stack([torch.ones(2, 2), -3 * torch.ones(2, 2)])[None]
        >>> gradcam_from_gradient(g, a).flatten().tolist()  # ReLU(1 - 3)
        [0.0, 0.0, 0.0, 0.0]
    """
    return torch.relu((grad.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1, keepdim=True))


def uses_gradient(method: Any) -> bool:
    """Whether the map is computed from the shared input gradient of the head."""
    return bool(getattr(method, "input_gradient_map", False)) or _is_gradcam_at_input(method)


def head_maps(head: Head, a: torch.Tensor, target: torch.Tensor, methods: Mapping[str, Any],
              seed_parts: tuple[Any, ...], grad: torch.Tensor | None = None
              ) -> Iterator[tuple[str, torch.Tensor]]:
    """(label, map) for every method on one head: maps (B, C', h, w) of the activations ``a``.

    Methods that are functions of the input gradient (``input_gradient_map``, and Grad-CAM on
    the head's input) share one gradient (``grad`` if given, else computed once). Seeded methods
    are reseeded from ``seed_parts`` and their label, so a unit's maps are the same in every run
    and after a resume.
    """
    for label, method in methods.items():
        if uses_gradient(method):
            if grad is None:
                grad = input_gradient(head, a, target, who=label)
            if _is_gradcam_at_input(method):
                yield label, gradcam_from_gradient(grad, a)
            else:
                yield label, method.from_input_gradient(grad, a)
            continue
        m = method
        if getattr(m, "seeded", False):
            m = m.reseeded(derive_seed(*seed_parts, label))
        yield label, m(head, a, target, checked_target=True)


def shared_gradients(setting: Setting, layer: str | None, a: torch.Tensor, x: torch.Tensor,
                     labels: torch.Tensor, heads: list[int]) -> dict[int, torch.Tensor]:
    """The input gradient of every head's target logit from one forward pass of all heads
    (GridPG, DiPart) and one backward pass per head."""
    ag = a.detach().clone().requires_grad_(True)
    logits = setting.all_heads(ag, layer, x, heads)
    out = {}
    for i, k in enumerate(heads):
        score = logits[:, i].gather(1, labels[:, k].view(-1, 1).to(a.device)).sum()
        (g,) = torch.autograd.grad(score, ag, retain_graph=i < len(heads) - 1)
        out[k] = g.detach()
    return out


def setting_layer_maps(setting: Setting, layer: str | None, x: torch.Tensor,
                       labels: torch.Tensor, heads: list[int], methods: Mapping[str, Any],
                       seed_parts: tuple[Any, ...]
                       ) -> Iterator[tuple[int, str, torch.Tensor]]:
    """(head, label, map) for every head in ``heads`` and method, at ``layer`` of ``setting``
    on the grids ``x`` whose cell classes are ``labels`` (B, n^2)."""
    a = setting.front(layer, x)
    grads: dict[int, torch.Tensor] = {}
    if setting.setting != "difull" and any(uses_gradient(m) for m in methods.values()):
        grads = shared_gradients(setting, layer, a, x, labels, heads)
    for k in heads:
        head = Head(setting, k, layer, x if layer is not None else None)
        target = labels[:, k].to(x.device)
        for label, m in head_maps(head, a, target, methods, (*seed_parts, k), grads.get(k)):
            yield k, label, m
