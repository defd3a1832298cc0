"""Model randomization: layer discovery, init schemes, orders, copies and stage plans.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    >>> [b.name for b in discover_blocks(net, x)]
    ['0', '2']
    >>> [s.layers for s in randomized_models(net, order="cascading", init="paper", example_input=x)]
    [(), ('2',), ('2', '0')]
"""

from __future__ import annotations

from ._copy import fresh_copy, shared_copy
from ._discovery import ROOT, Block, call_model, discover_blocks
from ._plan import (
    FixedPlan,
    StagePlan,
    StageSpec,
    orders,
    plan,
    randomize_blocks,
    resolve_scheme,
)
from ._schemes import (
    InitScheme,
    MomentMatched,
    Paper,
    Permute,
    Reinit,
    block_seed,
    init_schemes,
)
from ._stages import (
    RandomizedModels,
    Stage,
    logits_of,
    output_change,
    randomized_models,
)

__all__ = [
    "ROOT",
    "Block",
    "FixedPlan",
    "InitScheme",
    "MomentMatched",
    "Paper",
    "Permute",
    "RandomizedModels",
    "Reinit",
    "Stage",
    "StagePlan",
    "StageSpec",
    "block_seed",
    "call_model",
    "discover_blocks",
    "fresh_copy",
    "init_schemes",
    "logits_of",
    "orders",
    "output_change",
    "plan",
    "randomize_blocks",
    "randomized_models",
    "resolve_scheme",
    "shared_copy",
]
