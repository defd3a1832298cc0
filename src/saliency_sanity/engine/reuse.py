"""Reuse of the trained model's lower-layer activations across cascading stages.

In top-down cascading, a stage model shares every module below its randomized blocks with the
trained model (:func:`~saliency_sanity.randomization.shared_copy`): the same weight tensors,
fed the same inputs, compute the same activations. :class:`ActivationReuse` is a
``TorchFunctionMode`` that records, while the trained model's maps of a batch are computed, the
output of every convolution and linear layer together with a private autograd graph of that one
operation; while the stage models' maps of the same batch are computed,
an operation whose weights are the very same tensors and whose input equals the recorded input
(``torch.equal``) returns the recorded output instead of computing it again. Its backward runs the
recorded operation's own backward (``torch.autograd.grad`` through the kept graph), so gradients
reach the stage's input exactly as they would through a fresh forward.

Nothing changes a number: a reused output is bit-identical to the recomputed one (same kernel,
same operands), and so is its backward. Only the forward passes below the randomized blocks are
saved; the backward passes, which input gradients need at every stage, still run.

A reused output is handed out as an alias of the kept tensor (no copy). If a caller modifies it
in place (an in-place ReLU right after a convolution), the tensor's version counter shows it:
that operation is computed afresh from then on, and in later batches its kept output is handed
out as a copy. Element-wise operations (batch norm in eval mode, activations, pooling) are not
kept: reusing them would cost as much memory traffic as computing them.

Recording stops when the kept outputs and inputs reach ``budget_bytes`` (later operations are
computed as usual), and everything is dropped after each batch: memory does not grow with the
number of inputs.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

__all__ = ["ActivationReuse", "DEFAULT_BUDGET_BYTES"]

DEFAULT_BUDGET_BYTES = 512 * 2**20

# operations whose output depends only on their input and their weight tensors
_WEIGHTED = {F.conv1d, F.conv2d, F.conv3d, F.linear}


class _Entry:
    __slots__ = ("inp", "out", "refs", "versions", "out_version", "copy")

    def __init__(self, inp: torch.Tensor, out: torch.Tensor, refs: tuple[Any, ...],
                 copy: bool):
        self.inp, self.out, self.refs, self.copy = inp, out, refs, copy
        self.versions = tuple(t._version if isinstance(t, torch.Tensor) else None for t in refs)
        self.out_version = out._version

    def hand_out(self) -> torch.Tensor:
        """The kept output without its graph: an alias (its in-place changes are detected by
        the version counter it shares with the kept tensor) or, for ops whose output callers
        modify in place, a copy."""
        return self.out.detach().clone() if self.copy else self.out.detach()

    def same_operands(self, refs: tuple[Any, ...]) -> bool:
        return len(refs) == len(self.refs) and all(
            (a is b and a._version == v) if isinstance(b, torch.Tensor) else a == b
            for a, b, v in zip(refs, self.refs, self.versions, strict=True)
        )


class _Route(torch.autograd.Function):
    """Returns a recorded output; back-propagates through the recorded operation's graph."""

    @staticmethod
    def forward(ctx: Any, inp: torch.Tensor, entry: _Entry) -> torch.Tensor:  # noqa: ARG004
        ctx.entry = entry
        return entry.hand_out()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        e = ctx.entry
        (g,) = torch.autograd.grad(e.out, e.inp, grad, retain_graph=True)
        return g, None


class ActivationReuse(TorchFunctionMode):
    """Records weighted operations' outputs in :meth:`record` mode and reuses them in
    :meth:`replay` mode (see the module docstring).

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> top = nn.Linear(4, 2)  # a stage: the same lower layer, a new top layer
        >>> stage = nn.Sequential(net[0], net[1], top)
        >>> x = torch.rand(5, 3)
        >>> reuse = ActivationReuse()
        >>> with reuse.record():
        ...     y0 = net(x)
        >>> reuse.rewind()
        >>> with reuse.replay():
        ...     y1 = stage(x.clone())
        >>> reuse.hits, torch.equal(y1, stage(x))  # net[0] reused; the result is unchanged
        (1, True)
    """

    def __init__(self, budget_bytes: int = DEFAULT_BUDGET_BYTES):
        super().__init__()
        self.budget_bytes = int(budget_bytes)
        self.entries: dict[tuple[Any, int], list[_Entry]] = {}
        self.cursor: dict[tuple[Any, int], int] = {}
        self.recording = False
        self.used = 0
        self.hits = 0
        self.copy_keys: set[tuple[Any, int]] = set()  # ops whose outputs were changed in place

    # -- control
    def record(self) -> ActivationReuse:
        """Use as ``with reuse.record():`` around the trained model's calls."""
        self.recording = True
        return self

    def replay(self) -> ActivationReuse:
        """Use as ``with reuse.replay():`` around a stage model's calls. Operations are matched
        in the order they were recorded: call :meth:`rewind` before each stage model's turn."""
        self.recording = False
        return self

    def rewind(self) -> None:
        """Start matching from the first recorded operation again."""
        self.cursor.clear()

    def clear(self) -> None:
        """Drop everything recorded (after each batch)."""
        self.entries.clear()
        self.cursor.clear()
        self.used = 0

    # -- interception
    def __torch_function__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func not in _WEIGHTED or len(args) < 2 or not isinstance(args[0], torch.Tensor):
            return func(*args, **kwargs)
        weight = args[1]
        if not isinstance(weight, torch.Tensor):
            return func(*args, **kwargs)
        inp = args[0]
        names = sorted(kwargs)
        refs = (*args[1:], *names, *(kwargs[k] for k in names))  # tensors compared by identity
        graph = torch.is_grad_enabled() and inp.requires_grad
        key = (func, id(weight))
        if self.recording:
            return self._record(func, key, inp, args[1:], kwargs, refs, graph)
        entries = self.entries.get(key)
        if entries:
            i = self.cursor.get(key, 0)
            if i < len(entries):
                e = entries[i]
                self.cursor[key] = i + 1  # ops are met in the order they were recorded
                if e.out._version != e.out_version:  # changed in place by a caller
                    self.copy_keys.add(key)
                elif (e.same_operands(refs) and (e.inp.requires_grad or not graph)
                        and e.inp.shape == inp.shape and e.inp.dtype == inp.dtype
                        and e.inp.device == inp.device and torch.equal(e.inp, inp)):
                    self.hits += 1
                    return _Route.apply(inp, e) if graph else e.hand_out()
        return func(*args, **kwargs)

    def _record(self, func: Any, key: tuple[Any, int], inp: torch.Tensor, rest: tuple[Any, ...],
                kwargs: dict[str, Any], refs: tuple[Any, ...], graph: bool) -> torch.Tensor:
        cost = inp.numel() * inp.element_size()
        if self.used + 2 * cost > self.budget_bytes:  # estimate: output ~ input
            return func(inp, *rest, **kwargs)
        rec_in = inp.detach().requires_grad_(graph)
        with torch.set_grad_enabled(graph):
            out = func(rec_in, *rest, **kwargs)
        self.used += cost + out.numel() * out.element_size()
        e = _Entry(rec_in, out, refs, copy=key in self.copy_keys)
        self.entries.setdefault(key, []).append(e)
        return _Route.apply(inp, e) if graph else e.hand_out()
