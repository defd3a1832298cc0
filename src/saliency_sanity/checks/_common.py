"""What the randomization checks share: the stage plan from the user's options, and records."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..randomization import StagePlan, discover_blocks


def stage_plan(model: nn.Module, x: torch.Tensor, batch_size: int, order: str, init: Any,
               seed: int, dev: torch.device, blocks: Sequence[Any] | None = None,
               group_by: str | Sequence[str] | None = None,
               init_settings: Mapping[str, Any] | None = None, null_seed: int | None = None,
               stages: Sequence[int] | str | None = None) -> StagePlan:
    """The plan of a randomization check: blocks discovered on the first batch (unless given),
    a private copy of ``model`` on ``dev``, stage models built lazily."""
    example_input = x[: min(batch_size, x.shape[0])]
    if blocks is None:
        blocks = discover_blocks(model, example_input, group_by=group_by)
    return StagePlan(model, list(blocks), order, init, seed, init_settings=init_settings,
                     null_seed=null_seed, stages=stages, device=dev)


def block_records(blocks: Sequence[Any]) -> list[dict[str, Any]]:
    """The blocks as recorded in ``run.json``."""
    return [{"name": bl.name, "modules": list(bl.modules), "params": list(bl.params)}
            for bl in blocks]


def randomization_settings(plan: StagePlan) -> dict[str, Any]:
    """Order, init scheme and blocks of a plan, as every randomization check records them."""
    return {"order": plan.order, "init": plan.scheme.name, "init_settings": plan.settings(),
            "blocks": block_records(plan.blocks)}
