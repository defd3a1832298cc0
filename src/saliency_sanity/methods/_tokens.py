"""Grad-CAM on vision transformers: token sequences as maps, and the default layer.

A transformer block outputs tokens (B, N, D) (or (N, B, D) for a sequence-first
``nn.TransformerEncoderLayer``). As a Grad-CAM layer, the leading non-patch tokens (class,
distillation, register tokens) are dropped and the patch tokens are laid out on the patch grid as
a (B, D, h, w) map: channels are the embedding dimensions. The number of leading tokens is the
model's ``num_prefix_tokens`` (timm) if it has one, otherwise the fewest that leave a grid with
the input's aspect ratio (:func:`saliency_sanity._arch.token_grid`).

The default layer of a transformer is the output of the last encoder block whose patch tokens
reach the logits: one backward pass on the first example finds it. In a ViT that classifies from
its class token (torchvision's, timm's and Hugging Face's) the last block's patch tokens reach
nothing (their gradient is exactly zero, so a Grad-CAM there is zero everywhere); the map is taken
at the second-to-last block's output, i.e. the input of the last block, where the class token
attends to the patches. A model that pools over all tokens uses the last block. If no block's
patch tokens reach the logits (a head of zeros, as torchvision initializes a ViT's), the last
block is used.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._arch import logits_of, token_grid, transformer_blocks


def first_tensor(out: Any) -> torch.Tensor | None:
    """``out`` if it is a tensor, else the first element of a tuple/list output (a Hugging Face
    layer returns ``(hidden_states, ...)``), else None."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    return None


def _seq_first(module: nn.Module, t: torch.Tensor, batch: int) -> bool:
    if isinstance(module, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)):
        attn = getattr(module, "self_attn", None)
        return not getattr(attn, "batch_first", True)
    return t.shape[0] != batch and t.shape[1] == batch


def tokens_to_map(t: torch.Tensor, module: nn.Module, model: nn.Module,
                  x_shape: tuple[int, ...]) -> torch.Tensor:
    """Tokens (B, N, D) of ``module``'s output as a (B, D, h, w) map of the patch tokens.

    Example:
        >>> t = torch.arange(2 * 5 * 3.0).reshape(2, 5, 3)  # a class token + a 2 x 2 grid
        >>> m = tokens_to_map(t, nn.Identity(), nn.Identity(), (2, 3, 32, 32))
        >>> m.shape, m[0, :, 0, 1].tolist() == t[0, 2].tolist()
        (torch.Size([2, 3, 2, 2]), True)
    """
    batch, height, width = x_shape[0], x_shape[2], x_shape[3]
    if _seq_first(module, t, batch):
        t = t.transpose(0, 1)
    prefix = getattr(model, "num_prefix_tokens", None)
    p, h, w = token_grid(t.shape[1], height, width, prefix if isinstance(prefix, int) else None)
    return t[:, p:].transpose(1, 2).reshape(t.shape[0], t.shape[2], h, w)


def default_token_layer(model: nn.Module, x: torch.Tensor) -> str | None:
    """The default Grad-CAM layer of a transformer (see the module docstring); None for a
    model without transformer blocks."""
    names = transformer_blocks(model)
    if not names:
        return None
    modules = dict(model.named_modules())
    outs: dict[str, torch.Tensor] = {}
    order: list[str] = []
    handles = []

    def hook(name: str):
        def fn(m: nn.Module, _args: Any, out: Any) -> None:
            t = first_tensor(out)
            if t is not None and t.ndim == 3 and name not in outs:
                outs[name] = t
                order.append(name)
        return fn

    try:
        for n in names:
            handles.append(modules[n].register_forward_hook(hook(n)))
        with torch.enable_grad():
            xg = x[:1].detach().clone().requires_grad_(True)
            score = logits_of(model(xg)).sum()
            grads = torch.autograd.grad(score, [outs[n] for n in order], allow_unused=True)
    finally:
        for h in handles:
            h.remove()
    for name, g in reversed(list(zip(order, grads, strict=True))):
        if g is None:
            continue
        try:
            gmap = tokens_to_map(g, modules[name], model, tuple(xg.shape))
        except ValueError:
            continue
        if bool((gmap != 0).any()):
            return name
    return order[-1] if order else None  # nothing reaches the logits (a zero head): the last
