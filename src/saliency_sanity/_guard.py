"""Keep the user's model exactly as it was: train/eval modes and requires_grad flags."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode with gradients enabled on all parameters' graph, then restore.

    On exit, also after an exception, every submodule's ``training`` flag and every parameter's
    ``requires_grad`` flag are as they were on entry.

    Example:
        >>> m = nn.Sequential(nn.Linear(2, 2), nn.Dropout()).train()
        >>> with eval_mode(m):
        ...     m.training
        False
        >>> m.training
        True
    """
    modes = [(mod, mod.training) for mod in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        yield model
    finally:
        for mod, mode in modes:
            mod.training = mode
        for p, flag in flags:
            p.requires_grad_(flag)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model with neither)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks_with_kwargs",
    "_state_dict_hooks",
    "_load_state_dict_pre_hooks",
)


@contextlib.contextmanager
def model_guard(model: Any) -> Iterator[Any]:
    """Eval mode for the call; afterwards (also on error) the model is exactly as before.

    Restores: every submodule's train/eval flag and every parameter's ``requires_grad`` (via
    ``_guard.eval_mode``), buffer values, parameters' ``.grad``, and removes any hook that was
    added to a submodule during the call. Non-module callables pass through unguarded.

    Example:
        >>> m = nn.Sequential(nn.Linear(2, 2), nn.Dropout()).train()
        >>> with model_guard(m):
        ...     m.training
        False
        >>> m.training
        True
    """
    if not isinstance(model, nn.Module):
        yield model
        return
    modules = list(model.modules())
    hooks = [{a: dict(getattr(m, a, {})) for a in _HOOK_DICTS} for m in modules]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    grads = [(p, None if p.grad is None else p.grad.detach().clone()) for p in model.parameters()]
    try:
        with eval_mode(model):
            yield model
    finally:
        for mod, before in zip(modules, hooks, strict=True):
            for attr, keys in before.items():
                d = getattr(mod, attr, None)
                if d is not None and list(d.keys()) != list(keys.keys()):
                    d.clear()
                    d.update(keys)
        with torch.no_grad():
            for b, saved in buffers:
                if b.shape == saved.shape and not torch.equal(b, saved):
                    b.copy_(saved)
        for p, g in grads:
            if g is None:
                if p.grad is not None:
                    p.grad = None
            elif p.grad is None or not torch.equal(p.grad, g):
                p.grad = g
