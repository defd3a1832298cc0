"""What the library knows about common architectures: repeated blocks (transformer encoder
layers, residual blocks), token maps, and where the logits are in a model's output.

Nothing here imports torchvision, timm or transformers: the rules are structural, so they hold
for those libraries' models and for hand-built modules of the same shape alike.

- A **repeated block** is a child of an ``nn.Sequential`` / ``nn.ModuleList`` that is not itself
  a plain container, owns parameters in at least two of its modules, and has a sibling of the
  same class (torchvision's ``EncoderBlock`` and ``BasicBlock``, timm's ``Block``, Hugging Face's
  ``ViTLayer``); every ``nn.TransformerEncoderLayer`` / ``nn.TransformerDecoderLayer`` is one too.
  The search stops at the first repeated block on each path (outermost wins).
- A repeated block is a **transformer block** if it holds an attention module (an
  ``nn.MultiheadAttention`` or a module whose class name contains ``Attention``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
_LAYER_CLASSES = (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)


def logits_of(output: Any) -> torch.Tensor:
    """The logits tensor of a model output: a tensor, the ``logits`` entry/attribute of an output
    object (Hugging Face's ``ImageClassifierOutput``, a dict), or the first tensor of a tuple.

    Example:
        >>> logits_of({"logits": torch.ones(1, 2), "hidden_states": None}).shape
        torch.Size([1, 2])
        >>> logits_of((torch.zeros(2, 3), "aux")).shape
        torch.Size([2, 3])
    """
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping) and "logits" in output:
        return output["logits"]
    if not isinstance(output, Mapping) and isinstance(getattr(output, "logits", None),
                                                       torch.Tensor):
        return output.logits
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, torch.Tensor):
                return item
    raise TypeError(f"cannot find logits in a model output of type {type(output).__name__}: "
                    "return a tensor (B, classes), or an object/dict with a 'logits' entry")


def _owners(module: nn.Module) -> int:
    return sum(1 for m in module.modules() if any(True for _ in m.parameters(recurse=False)))


def _composite(module: nn.Module) -> bool:
    return not isinstance(module, _CONTAINERS) and _owners(module) >= 2


def repeated_blocks(model: nn.Module) -> list[str]:
    """Names of the repeated blocks of ``model`` (see the module docstring), in registration
    order.

    Example:
        >>> enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2), 2,
        ...                             enable_nested_tensor=False)
        >>> repeated_blocks(nn.Sequential(nn.Linear(4, 8), enc))
        ['1.layers.0', '1.layers.1']
        >>> repeated_blocks(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)))  # leaves: none
        []
    """
    found: list[str] = []

    def visit(prefix: str, mod: nn.Module) -> None:
        kids = list(mod.named_children())
        counts = Counter(type(c) for _, c in kids) if isinstance(mod, _CONTAINERS) else Counter()
        for name, child in kids:
            full = prefix + name
            if isinstance(child, _LAYER_CLASSES) or (counts[type(child)] >= 2
                                                     and _composite(child)):
                found.append(full)
            else:
                visit(full + ".", child)

    visit("", model)
    return found


def is_attention_block(module: nn.Module) -> bool:
    """Whether ``module`` holds an attention module (``nn.MultiheadAttention`` or a module whose
    class name contains ``Attention``).

    Example:
        >>> layer = nn.TransformerEncoderLayer(8, 2)
        >>> is_attention_block(layer), is_attention_block(nn.Linear(2, 2))
        (True, False)
    """
    return any(isinstance(m, nn.MultiheadAttention) or "attention" in type(m).__name__.lower()
               for m in module.modules())


def transformer_blocks(model: nn.Module) -> list[str]:
    """The repeated blocks of ``model`` that are transformer blocks (encoder layers).

    Example:
        >>> enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2), 2,
        ...                             enable_nested_tensor=False)
        >>> transformer_blocks(enc)
        ['layers.0', 'layers.1']
    """
    modules = dict(model.named_modules())
    return [n for n in repeated_blocks(model) if is_attention_block(modules[n])]


def token_grid(n_tokens: int, height: int, width: int, prefix: int | None = None
               ) -> tuple[int, int, int]:
    """``(prefix, h, w)``: how a sequence of ``n_tokens`` splits into leading non-patch tokens
    (class, distillation, register tokens) and an ``h x w`` patch grid with the aspect ratio of a
    ``height x width`` image. ``prefix`` None tries 0, 1, 2, ... up to 16 and takes the first
    that fits; a ``ValueError`` if none does.

    Example:
        >>> token_grid(17, 64, 64)  # a class token and a 4 x 4 grid
        (1, 4, 4)
        >>> token_grid(8, 32, 64)
        (0, 2, 4)
    """
    tries = [prefix] if prefix is not None else range(0, min(n_tokens, 17))
    for p in tries:
        n = n_tokens - p
        if n <= 0:
            continue
        h = max(1, round(math.sqrt(n * height / width)))
        for hh in (h, h - 1, h + 1):
            if hh > 0 and n % hh == 0:
                ww = n // hh
                if abs(hh / ww - height / width) <= 0.25 * height / width:
                    return p, hh, ww
    raise ValueError(f"cannot arrange {n_tokens} tokens as leading tokens plus a patch grid "
                     f"with the aspect ratio of a {height}x{width} input")
