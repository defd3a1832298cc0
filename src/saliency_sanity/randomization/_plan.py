"""Stage plans: which blocks each stage randomizes, and its model, built lazily, one at a time.

A :class:`StagePlan` is the one way every check gets randomized models. It holds a private copy
of the trained model and builds a stage's model only when asked, as a copy-on-write copy
(:func:`~saliency_sanity.randomization.shared_copy`) of the nearest held stage whose blocks are a
prefix of its own (cascading and bottom-up stages build on the stage before) or of the trained
model, randomizing only the blocks it adds. A block's random weights depend only on
(seed, block name, init scheme), so a stage's model is the same whichever way it is built.

Built models are held while their own randomized tensors fit in ``cache_bytes``; the least
recently used are released beyond that, and :meth:`StagePlan.release_before` lets an evaluator
drop every stage it has finished with. ``peak_held`` records the most stage models held at once.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ._copy import fresh_copy, shared_copy
from ._discovery import Block
from ._schemes import InitScheme, block_seed, init_schemes

DEFAULT_CACHE_BYTES = 256 * 2**20


def _cascading(names: Sequence[str]) -> list[tuple[str, ...]]:
    top_down = tuple(reversed(names))
    return [top_down[:k] for k in range(len(names) + 1)]


def _bottom_up(names: Sequence[str]) -> list[tuple[str, ...]]:
    return [tuple(names[:k]) for k in range(len(names) + 1)]


def _independent(names: Sequence[str]) -> list[tuple[str, ...]]:
    return [()] + [(n,) for n in reversed(names)]


_PLANS: dict[str, Callable[[Sequence[str]], list[tuple[str, ...]]]] = {
    "cascading": _cascading,
    "bottom_up": _bottom_up,
    "independent": _independent,
}

orders: tuple[str, ...] = tuple(_PLANS)
"""Randomization orders: ``cascading`` (top-down, cumulative: the paper), ``bottom_up``
(input-side first, cumulative) and ``independent`` (one block at a time, top-down)."""


def plan(order: str, block_names: Sequence[str]) -> list[tuple[str, ...]]:
    """The block names randomized at each stage (stage 0 = none), for blocks in forward order.

    Example:
        >>> plan("cascading", ["conv", "fc"])
        [(), ('fc',), ('fc', 'conv')]
        >>> plan("independent", ["conv", "fc"])
        [(), ('fc',), ('conv',)]
    """
    if order not in _PLANS:
        raise ValueError(f"unknown order {order!r}; known orders: {', '.join(orders)}")
    return _PLANS[order](list(block_names))


def resolve_scheme(init: str | InitScheme, init_settings: Mapping[str, Any] | None = None
                   ) -> InitScheme:
    """An init scheme from its name (or an instance) and settings."""
    if isinstance(init, InitScheme):
        return dataclasses.replace(init, **dict(init_settings or {}))
    return init_schemes.get(init, **dict(init_settings or {}))


def randomize_blocks(
    model: nn.Module,
    blocks: Sequence[Block],
    init: str | InitScheme = "paper",
    seed: int = 0,
    init_settings: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Randomize ``blocks`` of ``model`` IN PLACE (pass a copy) and return it.

    Each block draws from its own CPU ``torch.Generator`` seeded with ``block_seed(seed, name)``,
    so a block's random weights depend only on (seed, block name, init scheme), not on the order
    or on the other blocks. The global RNG is not touched.

    Example:
        >>> import copy
        >>> from saliency_sanity.randomization import discover_blocks
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> blocks = discover_blocks(net, torch.zeros(1, 3))
        >>> rand = randomize_blocks(copy.deepcopy(net), blocks[-1:], "paper", seed=0)
        >>> torch.equal(rand[0].weight, net[0].weight), torch.equal(rand[2].weight, net[2].weight)
        (True, False)
    """
    scheme = resolve_scheme(init, init_settings)
    for block in blocks:
        generator = torch.Generator(device="cpu").manual_seed(block_seed(seed, block.name))
        scheme(model, block, generator)
    return model


@dataclass(frozen=True)
class StageSpec:
    """One stage of a plan: its number, the blocks randomized, and its label in tables.

    ``block`` is the block the stage adds (the deepest so far for cascading), a label such as
    ``"all"``, or None for the trained model.
    """

    index: int
    layers: tuple[str, ...]
    block: str | None

    def record(self) -> dict[str, Any]:
        """The stage as stored in a result (output change filled in by the evaluator)."""
        return {"index": self.index, "block": self.block, "layers": list(self.layers),
                "output_change": None, "unchanged": False}


class StagePlan:
    """The stages of one randomization, their models built lazily (see the module docstring).

    Args:
        model: the user's model (copied once to ``device``; never modified).
        blocks: the blocks in forward order (:func:`discover_blocks`).
        order: a randomization order, or None with ``stages`` given.
        init: an init scheme name or instance; ``init_settings`` configures it.
        seed: seeds the randomization. ``null_seed``: seeds the null twins (none without it).
        stages: which stages of the order to keep, by position (default all); ``"ends"`` keeps
            the trained and the last (fully randomized) stage, labelled ``"all"``.
        cache_bytes: how many bytes of randomized tensors may stay held between uses.

    Example:
        >>> from saliency_sanity.randomization import discover_blocks
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> blocks = discover_blocks(net, torch.zeros(1, 3))
        >>> p = StagePlan(net, blocks, "cascading", seed=0)
        >>> [(s.index, s.layers) for s in p.specs]
        [(0, ()), (1, ('2',)), (2, ('2', '0'))]
        >>> m1, m2 = p.model(1), p.model(2)  # stage 2 is built on stage 1: it shares its top
        >>> m2[0].weight is m1[0].weight, m2[2].weight is m1[2].weight, p.built
        (False, True, 2)
    """

    def __init__(self, model: nn.Module, blocks: Sequence[Block], order: str | None = "cascading",
                 init: str | InitScheme = "paper", seed: int = 0,
                 init_settings: Mapping[str, Any] | None = None, null_seed: int | None = None,
                 stages: Sequence[int] | str | None = None, device: Any = None,
                 cache_bytes: int = DEFAULT_CACHE_BYTES, trained: nn.Module | None = None
                 ) -> None:
        self.blocks = list(blocks)
        names = [b.name for b in self.blocks]
        if len(set(names)) != len(names):
            raise ValueError(f"block names must be unique: {names}")
        self._by_name = {b.name: b for b in self.blocks}
        self.order = order
        self.scheme = resolve_scheme(init, init_settings)
        self.seed, self.null_seed = int(seed), null_seed
        layers = plan(order, names) if order is not None else [()]
        if stages == "ends":
            last = len(layers) - 1
            self.specs = [StageSpec(0, (), None), StageSpec(last, layers[last], "all")]
        else:
            keep = range(len(layers)) if stages is None else stages
            self.specs = [StageSpec(k, layers[k], layers[k][-1] if layers[k] else None)
                          for k in keep]
        self.trained = trained if trained is not None else fresh_copy(model, device)
        self.cache_bytes = int(cache_bytes)
        self._held: OrderedDict[tuple[bool, int], tuple[nn.Module, int]] = OrderedDict()
        self.peak_held = 0
        self.built = 0

    def __len__(self) -> int:
        return len(self.specs)

    @property
    def has_null(self) -> bool:
        return self.null_seed is not None

    def model(self, pos: int, twin: bool = False) -> nn.Module:
        """The model of the stage at position ``pos`` (its null twin with ``twin``)."""
        layers = self.specs[pos].layers
        if not layers:
            return self.trained
        if twin and self.null_seed is None:
            raise ValueError("this plan has no null twins (null_seed is None)")
        key = (twin, pos)
        if key in self._held:
            self._held.move_to_end(key)
            return self._held[key][0]
        base, done = self.trained, ()
        for (t, q), (m, _) in reversed(self._held.items()):
            prev = self.specs[q].layers
            if t == twin and len(prev) > len(done) and layers[: len(prev)] == prev:
                base, done = m, prev
        new = [self._by_name[n] for n in layers[len(done):]]
        fresh = {t for bl in new for t in (*bl.params, *bl.buffers)}
        model = shared_copy(base, fresh)
        randomize_blocks(model, new, self.scheme, self.null_seed if twin else self.seed)
        model.eval()
        self.built += 1
        size = sum(t.numel() * t.element_size() for n, t in _tensors(model) if n in fresh)
        self._held[key] = (model, size)
        self.peak_held = max(self.peak_held, len(self._held))
        self._evict(keep={key})
        return model

    def _evict(self, keep: set[tuple[bool, int]]) -> None:
        total = sum(size for _, size in self._held.values())
        for key in list(self._held):
            if total <= self.cache_bytes:
                break
            if key in keep:
                continue
            total -= self._held.pop(key)[1]

    def release_before(self, pos: int) -> None:
        """Release every held stage model at a position below ``pos`` (they are rebuilt if
        asked for again)."""
        for key in [k for k in self._held if k[1] < pos]:
            del self._held[key]

    def release(self) -> None:
        """Release every held stage model."""
        self._held.clear()

    def settings(self) -> dict[str, Any]:
        return dict(self.scheme.settings())


def _tensors(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [*model.named_parameters(remove_duplicate=False),
            *model.named_buffers(remove_duplicate=False)]


class FixedPlan:
    """A plan of given models (e.g. a true-label and a random-label model), one per stage.

    Example:
        >>> p = FixedPlan([nn.Linear(2, 2), nn.Linear(2, 2)], [StageSpec(0, (), None),
        ...               StageSpec(1, ("x",), "x")])
        >>> len(p), p.model(1) is p.models[1]
        (2, True)
    """

    has_null = False
    peak_held = 0

    def __init__(self, models: Sequence[nn.Module], specs: Sequence[StageSpec]) -> None:
        if len(models) != len(specs):
            raise ValueError("one model per stage")
        self.models, self.specs = list(models), list(specs)
        self.peak_held = len(self.models)

    def __len__(self) -> int:
        return len(self.specs)

    def model(self, pos: int, twin: bool = False) -> nn.Module:
        return self.models[pos]

    def release_before(self, pos: int) -> None:
        """Nothing to release: the models are given."""

    def release(self) -> None:
        """Nothing to release: the models are given."""
