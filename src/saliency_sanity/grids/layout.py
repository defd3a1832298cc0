"""Where a model's features end and its head begins, and which layers are "middle" and "final".

Everything is read from one traced forward pass on a single cell (forward hooks on every
module, removed on exit):

- the **split point** (DiPart's shared feature map): the module giving the last spatial (h*w > 1)
  4-D output before the first linear layer (the outermost module returning that tensor), leaving
  out adaptive pools that are the identity on one cell (torchvision VGG's ``avgpool``);
- the **head**: if the first linear layer takes the split map flattened (K*h*w inputs), the head
  is "flatten -> linear", which GridPG converts to a convolution of kernel (h, w) slid over the
  grid's feature map and average-pooled (the paper's VGG conversion); if it takes K inputs (a
  global pool in between) the model takes a grid as it is;
- **final**: Grad-CAM's default layer (:func:`~saliency_sanity.methods.default_layer`): the
  activated output of the last convolutional block (VGG-11 ``features.19``, ResNet ``layer4``);
- **middle**: the feature blocks are the conv-holding children of the model (descending while
  there is only one, e.g. VGG's ``features``); middle is block ``min(len // 2, len - 2)``, as
  its activation for a plain convolution: VGG-11 conv5's ReLU ``features.12``, ResNet-18
  ``layer2``, the MNIST CNN's ``relu1``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..methods.cam import ACTIVATIONS, conv_layer_names, default_layer, trace_calls

_PASS = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd, nn.Identity)
_ADAPTIVE = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def _is4d(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and t.ndim == 4


@dataclass
class Layout:
    """The structure of a model as the localization settings need it (see the module doc)."""

    split: str | None
    split_shape: tuple[int, ...] | None
    head: str | None
    kernel: tuple[int, int] | None
    global_pool: bool
    identity_pools: list[str] = field(default_factory=list)
    blocks: list[str] = field(default_factory=list)
    final: str | None = None
    shapes: dict[str, tuple[int, ...] | None] = field(default_factory=dict)
    runs: dict[str, int] = field(default_factory=dict)
    order: dict[str, int] = field(default_factory=dict)

    @property
    def middle(self) -> str | None:
        if len(self.blocks) < 2:
            return None
        return self.blocks[min(len(self.blocks) // 2, len(self.blocks) - 2)]


def _block_output(model: nn.Module, name: str, calls: list[Any]) -> str:
    """A block's output module: a leaf convolution's activation when one follows it directly
    (through batch norm), else the block itself."""
    mod = dict(model.named_modules())[name]
    if any(True for _ in mod.children()):
        return name
    idx = max((i for i, c in enumerate(calls) if c[0] == name), default=None)
    if idx is None:
        return name
    t = calls[idx][3]
    for cname, m, inp, out in calls[idx + 1:]:
        if inp is not t or any(True for _ in m.children()):
            continue
        if isinstance(m, ACTIVATIONS):
            return cname
        if isinstance(m, _PASS):
            t = out
            continue
        break
    return name


def _blocks(model: nn.Module, calls: list[Any]) -> list[str]:
    def convs(m: nn.Module) -> bool:
        return any(isinstance(s, nn.Conv2d) for s in m.modules())

    prefix, mod = "", model
    while True:
        kids = [(n, c) for n, c in mod.named_children() if convs(c)]
        if len(kids) == 1 and any(True for _ in kids[0][1].children()):
            prefix, mod = f"{prefix}{kids[0][0]}.", kids[0][1]
            continue
        break
    finish = {c[0]: i for i, c in enumerate(calls)}
    names = [f"{prefix}{n}" for n, _ in kids if f"{prefix}{n}" in finish]
    names.sort(key=lambda n: finish[n])
    return [_block_output(model, n, calls) for n in names]


def layout(model: nn.Module, cell: torch.Tensor) -> Layout:
    """The :class:`Layout` of ``model`` for inputs like ``cell`` (1, C, H, W).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        ...                     nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
        >>> lay = layout(net.eval(), torch.zeros(1, 1, 8, 8))
        >>> lay.split, lay.head, lay.kernel, lay.final
        ('2', '4', (4, 4), '1')
    """
    calls = trace_calls(model, cell)
    runs: dict[str, int] = {}
    shapes: dict[str, tuple[int, ...] | None] = {}
    order: dict[str, int] = {}
    for i, (name, _m, _inp, out) in enumerate(calls):
        runs[name] = runs.get(name, 0) + 1
        shapes[name] = tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else None
        order[name] = i
    lin = next((i for i, c in enumerate(calls) if isinstance(c[1], nn.Linear)
                and isinstance(c[2], torch.Tensor) and c[2].ndim == 2), None)
    ident = [c[0] for c in calls if isinstance(c[1], _ADAPTIVE) and _is4d(c[2]) and _is4d(c[3])
             and tuple(c[2].shape) == tuple(c[3].shape)]
    before = calls if lin is None else calls[:lin]
    spatial = [i for i, c in enumerate(before) if _is4d(c[3]) and c[3].shape[2] * c[3].shape[3] > 1
               and c[0] not in ident]
    split = split_shape = None
    if spatial:
        t = before[spatial[-1]][3]
        split = [c[0] for c in before if c[3] is t][-1]
        split_shape = tuple(t.shape[1:])
    head = kernel = None
    global_pool = lin is None
    if lin is not None and split_shape is not None:
        d = calls[lin][2].shape[1]
        k, h, w = split_shape
        if k * h * w == d:
            head, kernel = calls[lin][0], (h, w)
        elif k == d:
            global_pool = True
        else:
            head = calls[lin][0]  # takes something else: GridPG reports it
    try:
        final = default_layer(model, cell[:1])
    except ValueError:
        final = None
    return Layout(split=split, split_shape=split_shape, head=head, kernel=kernel,
                  global_pool=global_pool, identity_pools=ident, blocks=_blocks(model, calls),
                  final=final, shapes=shapes, runs=runs, order=order)


LAYER_ALIASES = ("input", "middle", "final")


def resolve_layer(model: nn.Module, lay: Layout, layer: str) -> str | None:
    """The module name for ``layer`` (None for ``"input"``); clear errors for unknown names,
    layers that are not spatial or that run more than once.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3))
        >>> lay = layout(net, torch.zeros(1, 1, 4, 4))
        >>> resolve_layer(net, lay, "final"), resolve_layer(net, lay, "input")
        ('1', None)
    """
    if not isinstance(layer, str) or not layer:
        raise ValueError(f"layer must be a name ('input', 'middle', 'final' or a module name), "
                         f"got {layer!r}")
    if layer == "input":
        return None
    if layer in ("middle", "final"):
        name = lay.middle if layer == "middle" else lay.final
        if name is None:
            raise ValueError(f"no {layer!r} layer found automatically in "
                             f"{type(model).__name__} (it needs at least "
                             f"{'two convolutional blocks' if layer == 'middle' else 'one'}); "
                             "pass a module name instead")
        return name
    modules = dict(model.named_modules())
    if layer not in modules or not layer:
        cands = conv_layer_names(model) or [n for n in modules if n]
        raise KeyError(f"no layer named {layer!r} in {type(model).__name__}; layers are "
                       f"'input', 'middle', 'final' or a module name such as "
                       f"{', '.join(cands[:12])}")
    if layer not in lay.runs:
        raise ValueError(f"layer {layer!r} does not run in the model's forward pass")
    if lay.runs[layer] != 1:
        raise ValueError(f"layer {layer!r} runs {lay.runs[layer]} times in one forward pass; "
                         "choose a layer that runs once")
    shape = lay.shapes.get(layer)
    if shape is None or len(shape) != 3:
        raise ValueError(f"layer {layer!r} is not spatial: its output has shape "
                         f"{shape}; localization needs a 4-D (B, K, h, w) feature map")
    return layer
