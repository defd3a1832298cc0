"""Efficient MPRT (Hedstroem et al. 2023): the entropy increase of maps under full randomization.

``q = (H(e_rand) - H(e)) / H(e)``: ``H`` is the entropy (natural log) of a ``bins``-bin histogram of
a map's values, ``e`` the map of the trained model, ``e_rand`` the map of the fully randomized
model. A method whose maps depend on the parameters should give much noisier maps (higher
entropy) on a random model: higher ``q`` is better. No pairwise similarity is needed.

Definitions follow Quantus 0.6.0 (``EfficientMPRT`` with ``discrete_entropy``): maps summed over
channels (signed), no absolute value and no normalization by default, equal-width bins spanning
each map's own [min, max] (``np.histogram(a, bins)``), ``scipy.stats.entropy`` of the counts.
A normalization by a positive per-map scale (e.g. second moment) cannot change the histogram
counts, so none is offered. A constant map puts every value in one bin: H = 0, and ``q`` is
``+inf`` (or NaN when both maps are constant).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..randomization import (
    Stage,
    call_model,
    discover_blocks,
    logits_of,
    output_change,
    randomize_blocks,
    randomized_models,
)
from ._engine import (
    batches,
    common_settings,
    prepare,
    progress_bar,
    resolve_methods,
    run_stages,
    versions,
)
from ._result import CheckResult
from .smprt import block_records, init_record

LAYER = "all"


def histogram_entropy(maps: torch.Tensor, bins: int = 100, absolute: bool = False
                      ) -> torch.Tensor:
    """Entropy (nats) of a ``bins``-bin histogram of each map's values, shape (B,), float64.

    4-D maps (B, C, H, W) are summed over channels first (signed); ``absolute`` takes |m| after.
    Bins are equal-width over each map's own [min, max], exactly ``np.histogram(m, bins)``.

    Example:
        >>> histogram_entropy(torch.tensor([[0.0, 1.0, 2.0, 3.0], [5.0, 5.0, 5.0, 5.0]]), bins=2)
        tensor([0.6931, 0.0000], dtype=torch.float64)
    """
    if not isinstance(bins, int) or isinstance(bins, bool) or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    m = maps.detach()
    if m.dim() == 4:
        m = m.sum(dim=1)
    if absolute:
        m = m.abs()
    arr = m.reshape(m.shape[0], -1).cpu().numpy()
    out = np.empty(arr.shape[0], dtype=np.float64)
    for i, row in enumerate(arr):
        counts, _ = np.histogram(row, bins=bins)
        p = counts[counts > 0] / counts.sum()
        out[i] = float(-(p * np.log(p)).sum()) + 0.0  # + 0.0: no -0.0 for one bin
    return torch.from_numpy(out).to(maps.device)


def entropy_ratio(h_trained: torch.Tensor, h_random: torch.Tensor) -> torch.Tensor:
    """``(h_random - h_trained) / h_trained`` elementwise (+inf or NaN where h_trained == 0).

    Example:
        >>> entropy_ratio(torch.tensor([2.0, 0.0]), torch.tensor([3.0, 1.0])).tolist()
        [0.5, inf]
    """
    a = h_trained.double().cpu().numpy()
    b = h_random.double().cpu().numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        q = (b - a) / a
    return torch.from_numpy(q).to(h_trained.device)


@dataclass(frozen=True)
class _PairStat:
    """A per-sample statistic of (trained map, randomized map), called by ``run_stages``."""

    name: str
    bins: int
    absolute: bool
    which: str  # "ratio", "trained" or "randomized"

    def settings(self, shape: tuple[int, ...] | None = None) -> dict[str, Any]:
        return {"name": self.name, "bins": self.bins, "absolute": self.absolute,
                "entropy": "natural log of a histogram over each map's [min, max]",
                "higher_is_better": self.which == "ratio"}

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.which == "trained":
            return histogram_entropy(a, self.bins, self.absolute)
        if self.which == "randomized":
            return histogram_entropy(b, self.bins, self.absolute)
        return entropy_ratio(histogram_entropy(a, self.bins, self.absolute),
                             histogram_entropy(b, self.bins, self.absolute))


def fully_randomized_stages(
    model: nn.Module,
    example_input: torch.Tensor,
    order: str = "bottom_up",
    init: Any = "paper",
    seed: int = 0,
    blocks: Sequence[Any] | None = None,
    init_settings: Mapping[str, Any] | None = None,
    device: torch.device | str | None = None,
) -> tuple[list[Stage], Any]:
    """Stage 0 (the trained model) and the fully randomized model as the last stage of ``order``.

    A block's random weights depend only on (seed, block name, init), so the fully randomized
    model is the same for ``cascading`` and ``bottom_up``; it is built directly, without the
    intermediate stages. Its ``block`` is ``"all"``. Returns the two stages and the iterator
    (for its blocks and settings).
    """
    if order not in ("bottom_up", "cascading"):
        raise ValueError(f"order must be 'bottom_up' or 'cascading' (an order that ends with every "
                         f"block random), got {order!r}")
    rm = randomized_models(model, order=order, init=init, seed=seed, example_input=example_input,
                           blocks=blocks, init_settings=dict(init_settings or {}), device=device)
    first = next(iter(rm))
    by_name = {b.name: b for b in rm.blocks}
    names = rm.plan[-1]
    rand = copy.deepcopy(first.model)
    randomize_blocks(rand, [by_name[n] for n in names], rm.scheme, rm.seed)
    rand.eval()
    with torch.no_grad():
        out = logits_of(call_model(rand, rm.example_input)).detach()
    last = Stage(
        index=len(rm.plan) - 1, layers=tuple(names), block=LAYER, model=rand,
        output_change=output_change(rm.trained_output, out),
        unchanged=bool(torch.equal(out, rm.trained_output)), order=order, init=rm.scheme.name,
        init_settings=dict(rm.scheme.settings()), seed=rm.seed,
    )
    return [first, last], rm


def efficient_model_randomization_test(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor | Sequence[int] | None = None,
    methods: Sequence[Any] | Mapping[str, Any] | None = None,
    bins: int = 100,
    absolute: bool = False,
    order: str = "bottom_up",
    init: str = "paper",
    seed: int = 0,
    target_mode: str | None = None,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    controls: bool | Sequence[str] = True,
    blocks: Sequence[Any] | None = None,
    group_by: str | Sequence[str] | None = None,
    init_settings: Mapping[str, Any] | None = None,
    n_examples: int = 4,
    progress: bool = True,
) -> CheckResult:
    """eMPRT: the relative increase of map entropy from the trained to the fully random model.

    Rows (common schema): ``stage`` = the last stage (number of blocks), ``layer = "all"``, one row
    per method and sample for each metric: ``emprt`` (q, higher is better),
    ``entropy_trained`` (H(e), the trained map's complexity) and ``entropy_randomized`` (H(e_rand)).

    Args:
        model, x, target, methods, init, seed, target_mode, batch_size, device, controls,
            blocks, group_by, init_settings, n_examples, progress: as
            :func:`saliency_sanity.model_randomization_test`.
        bins: histogram bins (paper and Quantus: 100).
        absolute: histogram of |m| instead of m (Quantus' ``abs``; default False as Quantus).
        order: ``"bottom_up"`` (Quantus' default) or ``"cascading"``; both end with the same fully
            randomized model, so it is only recorded.

    Returns:
        A :class:`CheckResult` (check ``"efficient_model_randomization"``).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> g = torch.Generator().manual_seed(0)
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> x = torch.rand(4, 1, 4, 4, generator=g)
        >>> res = efficient_model_randomization_test(net, x, methods=["gradient"], bins=10,
        ...                                          controls=False, progress=False)
        >>> sorted(res.table["metric"].unique()), res.table["layer"].unique().tolist()
        (['emprt', 'entropy_randomized', 'entropy_trained'], ['all'])
    """
    x, target, target_mode, dev = prepare(model, x, target, target_mode, device)
    method_objs = resolve_methods(methods, controls, model, x)
    stats = {name: _PairStat(name, bins, absolute, which) for name, which in
             (("emprt", "ratio"), ("entropy_trained", "trained"),
              ("entropy_randomized", "randomized"))}
    histogram_entropy(x[:1], bins)  # validates bins before any work
    spans = batches(x.shape[0], batch_size)
    n_examples = max(0, min(n_examples, x.shape[0]))
    example_input = x[: min(batch_size, x.shape[0])]
    if blocks is None:
        blocks = discover_blocks(model, example_input, group_by=group_by)
    stages, rm = fully_randomized_stages(model, example_input, order, init, seed, blocks,
                                         init_settings, dev)
    bar = progress_bar(progress, 2 * len(spans) * len(method_objs), "eMPRT")
    try:
        table, examples, stage_info = run_stages(
            stages, x, target, target_mode, method_objs, stats, spans, seed, n_examples,
            on_step=lambda: bar.update(1),
        )
    finally:
        bar.close()
    settings = {
        "check": "efficient_model_randomization",
        "bins": bins,
        "absolute": absolute,
        "channel_reduction": "signed sum",
        "entropy": "natural log; equal-width bins over each map's own [min, max]",
        "order": order,
        "init": init if isinstance(init, str) else getattr(init, "name", repr(init)),
        "init_settings": init_record(rm, init, init_settings),
        "seed": seed,
        "target_mode": target_mode,
        **common_settings(x, target, batch_size, dev, method_objs, stats),
        "blocks": block_records(blocks),
        "versions": versions(),
    }
    return CheckResult(check="efficient_model_randomization", table=table, settings=settings,
                       stages=stage_info, examples=examples)
