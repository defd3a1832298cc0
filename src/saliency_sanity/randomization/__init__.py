"""Model randomization: layer discovery, init schemes, orders and stages of randomized copies.

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

from ._discovery import ROOT, Block, call_model, discover_blocks
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
    orders,
    output_change,
    plan,
    randomize_blocks,
    randomized_models,
)

__all__ = [
    "ROOT",
    "Block",
    "InitScheme",
    "MomentMatched",
    "Paper",
    "Permute",
    "RandomizedModels",
    "Reinit",
    "Stage",
    "block_seed",
    "call_model",
    "discover_blocks",
    "init_schemes",
    "logits_of",
    "orders",
    "output_change",
    "plan",
    "randomize_blocks",
    "randomized_models",
]
