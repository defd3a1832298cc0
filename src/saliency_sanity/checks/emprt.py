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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..engine import Pair, RunConfig, View, execute, prepare, resolve_methods
from ..results import COLUMNS, CheckResult
from ..results.spec import CheckSpec, Example, Ranking
from ._common import randomization_settings, stage_plan
from ._examples import tiny_inputs, tiny_model

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
    """A per-sample statistic of (trained map, randomized map), scored by the evaluator."""

    name: str
    bins: int
    absolute: bool
    which: str  # "ratio", "trained" or "randomized"

    def settings(self, shape: tuple[int, ...] | None = None) -> dict[str, Any]:
        return {"name": self.name, "bins": self.bins, "absolute": self.absolute,
                "entropy": "natural log of a histogram over each map's [min, max]",
                "higher_is_better": self.which == "ratio",
                # for the method ranking: a higher q is a better method
                "better_method": "higher" if self.which == "ratio" else None}

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.which == "trained":
            return histogram_entropy(a, self.bins, self.absolute)
        if self.which == "randomized":
            return histogram_entropy(b, self.bins, self.absolute)
        return entropy_ratio(histogram_entropy(a, self.bins, self.absolute),
                             histogram_entropy(b, self.bins, self.absolute))


def efficient_model_randomization_test(
    model: nn.Module,
    x: torch.Tensor,
    *,
    target: torch.Tensor | Sequence[int] | None = None,
    methods: Sequence[Any] | Mapping[str, Any] | None = None,
    bins: int = 100,
    absolute: bool = False,
    order: str = "bottom_up",
    init: str = "paper",
    blocks: Sequence[Any] | None = None,
    group_by: str | Sequence[str] | None = None,
    init_settings: Mapping[str, Any] | None = None,
    config: RunConfig | None = None,
    **common: Any,
) -> CheckResult:
    """eMPRT: the relative increase of map entropy from the trained to the fully random model.

    Rows (common schema): ``stage`` = the last stage (number of blocks), ``layer = "all"``, one row
    per method and sample for each metric: ``emprt`` (q, higher is better),
    ``entropy_trained`` (H(e), the trained map's complexity) and ``entropy_randomized`` (H(e_rand)).

    Args:
        model, x, target, methods, init, blocks, group_by, init_settings: as
            :func:`saliency_sanity.model_randomization_test`.
        bins: histogram bins (paper and Quantus: 100).
        absolute: histogram of |m| instead of m (Quantus' ``abs``; default False as Quantus).
        order: ``"bottom_up"`` (Quantus' default) or ``"cascading"``; both end with the same fully
            randomized model (a block's weights depend only on the seed and its name), which the
            plan builds directly, without the intermediate stages; the order is only recorded.
        config, **common: the common settings (:class:`~saliency_sanity.engine.RunConfig`).

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
    cfg = RunConfig.from_kwargs(config, common)
    if order not in ("bottom_up", "cascading"):
        raise ValueError(f"order must be 'bottom_up' or 'cascading' (an order that ends with every "
                         f"block random), got {order!r}")
    x, target, target_mode, dev = prepare(model, x, target, cfg.target_mode, cfg.device)
    method_objs = resolve_methods(methods, cfg.controls, model, x)
    stats = {name: _PairStat(name, bins, absolute, which) for name, which in
             (("emprt", "ratio"), ("entropy_trained", "trained"),
              ("entropy_randomized", "randomized"))}
    histogram_entropy(x[:1], bins)  # validates bins before any work
    plan = stage_plan(model, x, cfg.batch_size, order, init, cfg.seed, dev, blocks, group_by,
                      init_settings, stages="ends")
    last = plan.specs[1].index
    views = [View("trained", 0, 0, keep_as=0, measure=True),
             View("randomized", 1, last, keep_as=last, measure=True)]
    settings = {
        "bins": bins,
        "absolute": absolute,
        "channel_reduction": "signed sum",
        "entropy": "natural log; equal-width bins over each map's own [min, max]",
        "ranking_metric": "emprt",
        **randomization_settings(plan),
    }
    return execute("efficient_model_randomization", plan=plan, views=views,
                   pairs=[Pair("trained", "randomized", last, LAYER)], x=x, target=target,
                   target_mode=target_mode, method_objs=method_objs, score_objs=stats,
                   config=cfg, settings=settings, models=[model], desc="eMPRT")


def _example() -> Example:
    return Example(args=(tiny_model(), tiny_inputs()),
                   kwargs={"methods": ["gradient"], "bins": 10, "seed": 0, "progress": False,
                            "batch_size": 2},
                   bad={"methods": ["gradient"], "target": [0]})


#: An extra of the model randomization run (``--...``):
#: no subcommand of its own; its page is a randomization page.
SPEC = CheckSpec(
    "efficient_model_randomization",
    run=efficient_model_randomization_test,
    title="efficient_model_randomization",
    columns=tuple(COLUMNS),
    figures="saliency_sanity.plots:model_randomization_figures",
    report="saliency_sanity.report.pages:randomization_page",
    summary="saliency_sanity.report.hooks:format_table_summary",
    verdict=None,
    ranking=Ranking(label="eMPRT"),
    cli=None,
    example=_example,
)
