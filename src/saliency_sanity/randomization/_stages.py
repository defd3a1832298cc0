"""Stages of model randomization: fresh copies of the model with more and more blocks randomized."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch import nn

from .._arch import logits_of
from ._copy import fresh_copy
from ._discovery import Block, GroupBy, call_model, discover_blocks
from ._plan import StagePlan, orders
from ._schemes import InitScheme


def output_change(trained: torch.Tensor, randomized: torch.Tensor) -> dict[str, float]:
    """How much the outputs changed: Pearson correlation of the flattened logits, max absolute
    difference, and the fraction of samples whose arg-max class (dim 1) is unchanged.

    The correlation is NaN when either output is constant.

    Example:
        >>> a = torch.tensor([[1.0, 2.0], [3.0, 0.0]])
        >>> output_change(a, 2 * a)
        {'logit_correlation': 1.0, 'max_abs_logit_diff': 3.0, 'prediction_agreement': 1.0}
    """
    a = trained.detach().to("cpu", torch.float64).flatten()
    b = randomized.detach().to("cpu", torch.float64).flatten()
    da, db = a - a.mean(), b - b.mean()
    denom = math.sqrt(float((da * da).sum()) * float((db * db).sum()))
    corr = float((da * db).sum()) / denom if denom > 0 else math.nan
    if not math.isnan(corr):
        corr = 1.0 if torch.equal(a, b) else max(-1.0, min(1.0, corr))
    diff = float((a - b).abs().max()) if a.numel() else 0.0
    if trained.dim() >= 2:
        agree = float((trained.argmax(1) == randomized.argmax(1)).double().mean())
    else:
        agree = float(trained.argmax() == randomized.argmax())
    return {"logit_correlation": corr, "max_abs_logit_diff": diff, "prediction_agreement": agree}


@dataclass(frozen=True, eq=False)
class Stage:
    """One stage of model randomization.

    Attributes:
        index: 0 for the trained model, then 1, 2, ...
        layers: names of the blocks randomized in ``model`` (cumulative for ``cascading`` and
            ``bottom_up``, one block for ``independent``, empty at stage 0).
        block: the block this stage adds (the deepest so far for ``cascading``); None at stage 0.
        model: a copy in eval mode (never the user's model, never mutated by later stages;
            stage 0 is an unmodified copy of the trained model). Stage models are copy-on-write:
            they share every tensor they do not randomize with the trained copy and with each
            other, so deep-copy one (``copy.deepcopy``) before changing it in place.
        output_change: :func:`output_change` of this model's outputs vs the trained model's on
            ``example_input``.
        unchanged: True if the outputs are bit-identical to the trained model's although blocks
            were randomized (a warning is also given, once per iteration). Always False at stage 0.
        order, init, init_settings, seed: how the stage was made (for recording in results).
    """

    index: int
    layers: tuple[str, ...]
    block: str | None
    model: nn.Module
    output_change: dict[str, float]
    unchanged: bool
    order: str
    init: str
    init_settings: dict[str, Any] = field(default_factory=dict)
    seed: int = 0


class RandomizedModels:
    """The stages of one randomization run; see :func:`randomized_models`.

    A thin iterator over a :class:`~saliency_sanity.randomization.StagePlan`: each stage model
    is built when the iteration reaches it and released by the plan once the next one is
    built, so at most two stage models are held at once. ``next()`` on the object itself walks
    one shared iteration. ``len()`` is the number of stages, ``blocks`` the blocks in forward
    order and ``plan`` the block names randomized at each stage.
    """

    def __init__(
        self,
        model: nn.Module,
        order: str = "cascading",
        init: str | InitScheme = "paper",
        seed: int = 0,
        example_input: Any = None,
        blocks: Sequence[Block] | None = None,
        group_by: GroupBy = None,
        init_settings: Mapping[str, Any] | None = None,
        device: torch.device | str | None = None,
        allow_unused: bool = False,
    ) -> None:
        if order not in orders:
            raise ValueError(f"unknown order {order!r}; known orders: {', '.join(orders)}")
        if example_input is None:
            raise ValueError("example_input is required (layer discovery and output checks)")
        base = fresh_copy(model, device)
        if device is not None:
            example_input = pytree.tree_map(
                lambda t: t.to(device) if isinstance(t, torch.Tensor) else t, example_input
            )
        self.example_input = example_input
        if blocks is None:
            blocks = discover_blocks(base, example_input, group_by, allow_unused)
        self.stages = StagePlan(base, blocks, order, init, seed, init_settings=init_settings,
                                cache_bytes=0, trained=base)
        self.order, self.seed, self.scheme = order, int(seed), self.stages.scheme
        self.blocks: list[Block] = self.stages.blocks
        self.plan = [s.layers for s in self.stages.specs]
        self.trained_output = self._logits(base)
        self._shared: Iterator[Stage] | None = None

    def _logits(self, model: nn.Module) -> torch.Tensor:
        with torch.no_grad():
            return logits_of(call_model(model, self.example_input)).detach()

    def __len__(self) -> int:
        return len(self.plan)

    def __next__(self) -> Stage:
        if self._shared is None:
            self._shared = iter(self)
        return next(self._shared)

    def __iter__(self) -> Iterator[Stage]:
        settings = self.scheme.settings()
        warned = False
        for pos, spec in enumerate(self.stages.specs):
            stage_model = self.stages.model(pos)
            self.stages.release_before(pos)
            out = self._logits(stage_model)
            unchanged = pos > 0 and torch.equal(out, self.trained_output)
            if unchanged and not warned:
                warned = True
                warnings.warn(
                    f"stage {pos} ({self.order}, blocks {list(spec.layers)}): randomizing left "
                    "the model's outputs on example_input bit-identical to the trained model's",
                    stacklevel=2,
                )
            yield Stage(
                index=spec.index,
                layers=spec.layers,
                block=spec.block,
                model=stage_model,
                output_change=output_change(self.trained_output, out),
                unchanged=unchanged,
                order=self.order,
                init=self.scheme.name,
                init_settings=dict(settings),
                seed=self.seed,
            )


def randomized_models(
    model: nn.Module,
    order: str = "cascading",
    init: str | InitScheme = "paper",
    seed: int = 0,
    example_input: Any = None,
    blocks: Sequence[Block] | None = None,
    group_by: GroupBy = None,
    init_settings: Mapping[str, Any] | None = None,
    device: torch.device | str | None = None,
    allow_unused: bool = False,
) -> RandomizedModels:
    """Stages of model randomization, each a randomized copy; the user's model is untouched.

    The model is deep-copied once (to ``device`` if given) and blocks are discovered on that copy
    (see :func:`discover_blocks`) unless ``blocks`` is given. Stage 0 is an unmodified copy of the
    trained model; then, by ``order``:

    - ``cascading`` (the paper): the output block, then also the next one down, ... until all
      blocks are random (``len(blocks) + 1`` stages);
    - ``bottom_up``: the input-side block first, cumulatively (``len(blocks) + 1`` stages);
    - ``independent``: one block at a time, the others trained, top-down
      (``len(blocks) + 1`` stages).

    ``init`` names an :data:`init_schemes` entry (``paper``, ``reinit``, ``permute``,
    ``moment_matched``) configured by ``init_settings`` (e.g. ``{"std": 0.1}``), or is an
    :class:`InitScheme` instance. A block's random weights depend only on (seed, block name,
    init), so a block gets the same weights in every order. The global RNG is never touched.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
        >>> [(s.index, s.layers) for s in randomized_models(net, "cascading", example_input=x)]
        [(0, ()), (1, ('2',)), (2, ('2', '0'))]
    """
    return RandomizedModels(
        model,
        order=order,
        init=init,
        seed=seed,
        example_input=example_input,
        blocks=blocks,
        group_by=group_by,
        init_settings=init_settings,
        device=device,
        allow_unused=allow_unused,
    )
