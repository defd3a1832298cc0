"""GridPG, DiFull and DiPart: a model on an n x n grid, one logit vector per cell ("head k").

- **GridPG**: the whole grid through one network; every head is that network's logits (head k
  explains the class of cell k). A flatten -> linear head is converted into an equivalent
  convolution slid over the grid's feature map and average-pooled: the first linear layer's
  weights, viewed as a (h, w) kernel, are convolved with the grid's feature map and its
  positions handed on as rows, so every later layer of the head runs per position; the
  positions' logits are averaged. On one cell this is the model itself (to float rounding).
  A model with a global pool takes the grid as it is.
- **DiFull**: cell k alone through the whole network gives head k: any attribution outside cell
  k is provably wrong.
- **DiPart**: the features of the whole grid up to the split point (:mod:`.layout`), split into
  n x n equal slices; slice k through the rest of the network (pool + classifier) gives head k.

At a layer, :class:`Head` takes that layer's activations ``a`` as input: the rest of the network
is forwarded from there (a forward hook hands the layer's consumers ``a``, or, in DiFull, cell
k's part of the stitched per-cell activations; in DiPart the split map is sliced). Values that
bypass the layer (a skip connection around it) come from the grid itself, tiled over the rows of
``a`` (row r uses grid r mod B). :meth:`Setting.front` gives the activations the heads take.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .layout import Layout, layout, resolve_layer
from .split import rest_after, same_as_hooks

SETTINGS = ("gridpg", "difull", "dipart")


class _Stop(Exception):
    """Raised by a capturing hook to end a forward pass early."""


def cell_slice(t: torch.Tensor, k: int, n: int) -> torch.Tensor:
    """Cell k (row-major) of a (B, C, n*h, n*w) tensor.

    Example:
        >>> cell_slice(torch.arange(16.0).view(1, 1, 4, 4), 3, 2).flatten().tolist()
        [10.0, 11.0, 14.0, 15.0]
    """
    h, w = t.shape[2] // n, t.shape[3] // n
    r, q = divmod(k, n)
    return t[:, :, r * h:(r + 1) * h, q * w:(q + 1) * w]


def stitch(cells: torch.Tensor, n: int) -> torch.Tensor:
    """(n^2 * B, C, h, w) cells (cell-major) -> (B, C, n*h, n*w), the inverse of taking
    :func:`cell_slice` of every cell.

    Example:
        >>> t = torch.arange(16.0).view(1, 1, 4, 4)
        >>> torch.equal(stitch(torch.cat([cell_slice(t, k, 2) for k in range(4)]), 2), t)
        True
    """
    b = cells.shape[0] // (n * n)
    c, h, w = cells.shape[1:]
    t = cells.view(n, n, b, c, h, w).permute(2, 3, 0, 4, 1, 5)
    return t.reshape(b, c, n * h, n * w)


@contextlib.contextmanager
def _hooked(module: nn.Module, fn: Any) -> Iterator[None]:
    handle = module.register_forward_hook(fn)
    try:
        yield
    finally:
        handle.remove()


def _replacer(value_of: Any, name: str, fits: torch.Tensor | None = None) -> Any:
    """A forward hook replacing the output with ``value_of(output)`` (once per pass); the
    output must have the shape of ``fits`` (default: of the new value)."""
    seen = [0]

    def hook(_m: nn.Module, _i: Any, out: Any) -> Any:
        seen[0] += 1
        if seen[0] > 1:
            raise ValueError(f"layer {name!r} ran twice in one forward pass")
        new = value_of(out)
        ref = new if fits is None else fits
        if not isinstance(out, torch.Tensor) or tuple(ref.shape) != tuple(out.shape):
            raise ValueError(f"layer {name!r}: activations of shape {tuple(ref.shape)} do not "
                             f"fit its output {tuple(getattr(out, 'shape', ()))}")
        return new
    return hook


def _pop(stack: list[str]) -> None:
    if stack:
        stack.pop()


def _slicer(k: int, n: int) -> Any:
    """A forward hook handing on cell k's slice of the output."""
    return lambda _m, _i, out: cell_slice(out, k, n)


class Setting(nn.Module):
    """A model in one of the three settings on n x n grids of (H, W) cells.

    ``forward(grid)`` returns the logits of every head, (B, n^2, classes).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        ...                     nn.Flatten(), nn.Linear(2 * 4 * 4, 3)).eval()
        >>> cell = torch.randn(1, 1, 8, 8)
        >>> s = Setting(net, "gridpg", n=2, cell=cell)
        >>> grid = cell.repeat(1, 1, 2, 2)
        >>> s(grid).shape
        torch.Size([1, 4, 3])
        >>> bool((Setting(net, "gridpg", 2, cell).gridpg(cell) - net(cell)).abs().max() < 1e-5)
        True
    """

    def __init__(self, model: nn.Module, setting: str, n: int, cell: torch.Tensor,
                 split: str | None = None, lay: Layout | None = None) -> None:
        super().__init__()
        if setting not in SETTINGS:
            raise ValueError(f"unknown setting {setting!r}; choose among {', '.join(SETTINGS)}")
        if cell.ndim != 4:
            raise ValueError(f"{setting}: the inputs must be images (B, C, H, W); got "
                             f"{tuple(cell.shape)}")
        self.net, self.setting, self.n = model, setting, int(n)
        self.cell_hw = (int(cell.shape[2]), int(cell.shape[3]))
        self.lay = lay if lay is not None else layout(model, cell[:1])
        self._cell = cell[:1].detach()
        self._rest: dict[str, nn.Module | None] = {}
        self._grid_feat: tuple[int, ...] | None = None
        if split is not None:
            self.lay.split = resolve_layer(model, self.lay, split)
            self.lay.split_shape = self.lay.shapes[split]
        if setting == "gridpg":
            self._check_gridpg(cell[:1])
        if setting == "dipart" and self.lay.split is None:
            raise ValueError("dipart: the model has no spatial feature map to split (no 4-D "
                             "module output with h*w > 1); pass split=<module name>")

    # ----------------------------------------------------------------------------- GridPG
    def _check_gridpg(self, cell: torch.Tensor) -> None:
        lay = self.lay
        if lay.head is not None and lay.kernel is None:
            raise ValueError(
                f"gridpg: the model cannot take a {self.n}x{self.n} grid: its linear layer "
                f"{lay.head!r} takes neither the flattened feature map of {lay.split!r} "
                f"{lay.split_shape} nor its pooled channels; give the model a global pool or "
                "use difull")
        if lay.head is None and not lay.global_pool:
            raise ValueError("gridpg: the model cannot take a grid: no convolutional features "
                             "before its first linear layer")
        grid = cell.repeat(1, 1, self.n, self.n)
        with torch.no_grad():
            out = self._named_failure(lambda: self.gridpg(grid))
            one = self.gridpg(cell)
            ref = self.net(cell)
        if not isinstance(out, torch.Tensor) or out.ndim != 2:
            raise ValueError(f"gridpg: the model's output on a grid has shape "
                             f"{tuple(getattr(out, 'shape', ()))}, not (B, classes)")
        diff = float((one - ref).abs().max())
        if diff > 1e-5:
            raise ValueError(f"gridpg: the converted head differs from the model on one cell "
                             f"(max |diff| {diff:.3g}); the model cannot be used in GridPG")

    def _named_failure(self, fn: Any) -> Any:
        """Run ``fn``; on an error, name the module that failed."""
        stack: list[str] = []
        handles = []
        for name, m in self.net.named_modules():
            if name:
                handles.append(m.register_forward_pre_hook(
                    lambda _m, _i, name=name: stack.append(name)))
                handles.append(m.register_forward_hook(lambda _m, _i, _o: _pop(stack)))
        try:
            return fn()
        except (RuntimeError, ValueError) as err:
            where = repr(stack[-1]) if stack else "the model's own forward code"
            raise ValueError(f"gridpg: the model cannot take a {self.n}x{self.n} grid: layer "
                             f"{where} failed ({str(err).splitlines()[0]})") from err
        finally:
            for h in handles:
                h.remove()

    def rest(self, layer: str) -> nn.Module | None:
        """The network after ``layer`` as a module (:func:`.split.rest_after`), checked once
        against the hooked network on one cell; None: use forward hooks."""
        if layer not in self._rest:
            mods = (self.lay.split, self.lay.head, *self.lay.identity_pools)
            keep = [m for m in mods if m and not layer.startswith(f"{m}.")]
            split_inside = bool(self.lay.split) and layer.startswith(f"{self.lay.split}.")
            # DiPart slices the split module's output: it must stay one call in the graph
            r = None if (split_inside and self.setting == "dipart") else rest_after(
                self.net, layer, keep)
            if r is not None and not same_as_hooks(r, self.net, layer, self._cell):
                r = None
            self._rest[layer] = r
        return self._rest[layer]

    def gridpg(self, x: torch.Tensor, run: Any = None) -> torch.Tensor:
        """The GridPG logits (B, classes) of a grid (or of one cell); ``run`` replaces the
        network (the rest after a layer, given that layer's activations as ``x``)."""
        lay, mods = self.lay, dict(self.net.named_modules())
        rows = [1]
        handles = []

        conv: list[torch.Tensor] = []

        def take(_m: nn.Module, args: Any) -> Any:  # the linear layer sees one dummy row
            feat_shape = shapes[-1] if shapes else self._grid_feat
            if feat_shape is None:
                raise ValueError("gridpg: the grid's feature map shape is unknown")
            conv.append(args[0].reshape(args[0].shape[0], *feat_shape))
            return (args[0].new_zeros(1, _m.in_features), *args[1:])

        def slide(m: nn.Module, _i: Any, _o: Any) -> Any:  # ... and gives the conv's rows
            feat = conv.pop()
            w = m.weight.view(m.out_features, feat.shape[1], *lay.kernel)
            out = F.conv2d(feat, w, m.bias)  # (B, out, P, Q): fc1 at every position
            rows[0] = out.shape[2] * out.shape[3]
            return out.permute(0, 2, 3, 1).reshape(-1, out.shape[1])

        shapes: list[tuple[int, ...]] = []
        try:
            for name in lay.identity_pools:
                handles.append(mods[name].register_forward_hook(lambda _m, i, _o: i[0]))
            if lay.head is not None and lay.kernel is not None:
                handles.append(mods[lay.split].register_forward_hook(
                    lambda _m, _i, o: shapes.append(tuple(o.shape[1:]))))
                handles.append(mods[lay.head].register_forward_pre_hook(take))
                handles.append(mods[lay.head].register_forward_hook(slide))
            out = (run or self.net)(x)
        finally:
            for h in handles:
                h.remove()
        if shapes and self._grid_feat is None and rows[0] > 1:
            self._grid_feat = shapes[-1]
        if rows[0] > 1:
            out = out.view(x.shape[0], rows[0], *out.shape[1:]).mean(1)
        return out

    # ----------------------------------------------------------------------------- all
    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        k2 = self.n * self.n
        if self.setting == "gridpg":
            return self.gridpg(grid).unsqueeze(1).expand(-1, k2, -1)
        return torch.stack([Head(self, k, None)(grid) for k in range(k2)], dim=1)

    def front(self, layer: str | None, x: torch.Tensor) -> torch.Tensor:
        """The activations of ``layer`` (None: the grid itself) that the heads take."""
        if layer is None:
            return x
        module = dict(self.net.named_modules())[layer]
        got: list[torch.Tensor] = []

        def capture(_m: nn.Module, _i: Any, out: Any) -> None:
            got.append(out)
            raise _Stop

        if self.setting == "dipart":
            self._check_before_split(layer)
        cells = (torch.cat([cell_slice(x, k, self.n) for k in range(self.n ** 2)])
                 if self.setting == "difull" else x)
        with torch.no_grad(), _hooked(module, capture), contextlib.suppress(_Stop):
            if self.setting == "gridpg":
                self.gridpg(cells)
            else:
                self.net(cells)
        a = got[0]
        if self.setting == "difull":
            a = stitch(a, self.n)
        elif self.setting == "dipart":
            self._split_shape_ok(a if layer == self.lay.split else None)
        return a.detach()

    def _check_before_split(self, layer: str) -> None:
        lay = self.lay
        if lay.order.get(layer, -1) > lay.order.get(lay.split or "", -1):
            raise ValueError(f"dipart: layer {layer!r} comes after the split point "
                             f"{lay.split!r}; choose a layer at or before it")

    def _split_shape_ok(self, a: torch.Tensor | None) -> None:
        if a is not None and (a.shape[2] % self.n or a.shape[3] % self.n):
            raise ValueError(f"dipart: the feature map of {self.lay.split!r} is "
                             f"{a.shape[2]}x{a.shape[3]} on the grid, which does not split into "
                             f"{self.n}x{self.n} equal slices")

    def all_heads(self, a: torch.Tensor, layer: str | None, x: torch.Tensor | None,
                  heads: Sequence[int] | None = None) -> torch.Tensor:
        """The logits of ``heads`` (default: all), (B', len(heads), classes), from the
        activations ``a`` of ``layer`` in one pass (GridPG: one network; DiPart: the heads'
        slices stacked into the batch after the split point). DiFull heads are separate
        networks: use :class:`Head` per cell."""
        ks = list(range(self.n ** 2)) if heads is None else list(heads)
        n2 = len(ks)
        rest = self.rest(layer) if layer is not None else None
        if self.setting == "gridpg":
            if layer is None or rest is not None:
                return self.gridpg(a, run=rest).unsqueeze(1).expand(-1, n2, -1)
            head = Head(self, 0, layer, x)
            x_t = head._tiled(a.shape[0])
            with _hooked(dict(self.net.named_modules())[layer], _replacer(lambda o: a, layer)):
                return self.gridpg(x_t).unsqueeze(1).expand(-1, n2, -1)
        if self.setting != "dipart":
            raise ValueError("all_heads: DiFull heads are separate networks")
        mods, split, n = dict(self.net.named_modules()), self.lay.split, self.n

        def stacked(t: torch.Tensor) -> torch.Tensor:
            return torch.cat([cell_slice(t, k, n) for k in ks])

        b = a.shape[0]
        with contextlib.ExitStack() as stack:
            if rest is not None and layer == split:
                out = rest(stacked(a))
                return out.view(n2, b, *out.shape[1:]).transpose(0, 1)
            if rest is not None:
                stack.enter_context(_hooked(mods[split], lambda _m, _i, o: stacked(o)))
                out = rest(a)
                return out.view(n2, b, *out.shape[1:]).transpose(0, 1)
            if layer is None:
                inp = a
                stack.enter_context(_hooked(mods[split], lambda _m, _i, o: stacked(o)))
            else:
                inp = Head(self, 0, layer, x)._tiled(b)
                if layer == split:
                    stack.enter_context(_hooked(mods[layer], _replacer(
                        lambda o: stacked(a), layer, a)))
                else:
                    stack.enter_context(_hooked(mods[layer], _replacer(lambda o: a, layer)))
                    stack.enter_context(_hooked(mods[split], lambda _m, _i, o: stacked(o)))
            out = self.net(inp)
        return out.view(n2, b, *out.shape[1:]).transpose(0, 1)


class Head(nn.Module):
    """Head k of a :class:`Setting` at ``layer``: ``forward(a)`` -> (B', classes), where ``a``
    is the layer's activations (the grid for ``layer=None``). ``at`` (an ``nn.Identity``
    applied to ``a`` first) is the layer CAM methods are given."""

    def __init__(self, setting: Setting, k: int, layer: str | None,
                 x: torch.Tensor | None = None) -> None:
        super().__init__()
        self.at = nn.Identity()
        self.owner = setting
        self.net = setting.net
        self.k, self.layer, self.x = int(k), layer, x

    def _tiled(self, rows: int) -> torch.Tensor:
        x = self.x
        if x is None:
            raise ValueError("a head at a layer needs the grids it explains")
        if rows % x.shape[0]:
            raise ValueError(f"activations with {rows} rows do not tile {x.shape[0]} grids")
        return x.repeat(rows // x.shape[0], 1, 1, 1)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        a = self.at(a)
        s, n, k = self.owner, self.owner.n, self.k
        mods = dict(self.net.named_modules())
        split = s.lay.split
        if self.layer is None:
            if s.setting == "gridpg":
                return s.gridpg(a)
            if s.setting == "difull":
                return self.net(cell_slice(a, k, n))
            with _hooked(mods[split], _slicer(k, n)):
                return self.net(a)
        layer = self.layer
        rest = s.rest(layer)
        if rest is not None:
            if s.setting == "gridpg":
                return s.gridpg(a, run=rest)
            if s.setting == "difull" or layer == split:
                return rest(cell_slice(a, k, n))
            with _hooked(mods[split], _slicer(k, n)):
                return rest(a)
        x = self._tiled(a.shape[0])
        if s.setting == "gridpg":
            with _hooked(mods[layer], _replacer(lambda o: a, layer)):
                return s.gridpg(x)
        if s.setting == "difull":
            with _hooked(mods[layer], _replacer(lambda o: cell_slice(a, k, n), layer)):
                return self.net(cell_slice(x, k, n))
        if layer == split:
            with _hooked(mods[layer], _replacer(lambda o: cell_slice(a, k, n), layer, a)):
                return self.net(x)
        with _hooked(mods[layer], _replacer(lambda o: a, layer)), \
                _hooked(mods[split], _slicer(k, n)):
            return self.net(x)
