"""Activation-scale analysis (Binder et al. 2023, claim 2).

Top-down randomization keeps the forward activations of the layers below the randomized ones, and
often much of the scale structure of the randomized layers too (e.g. through residual
connections or through a random layer's roughly norm-preserving action). Maps that multiply
gradients by activations can then not be expected to change fully. This module measures, for each
stage of a randomization run and each block, the Spearman rank correlation of the per-channel mean
|activation| between the trained and the randomized model over the given inputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats
from torch import nn

from ..engine import RunConfig, View, execute, prepare
from ..engine.evaluator import RunOutput
from ..results import CheckResult
from ..results.spec import CheckSpec, Example
from ._common import stage_plan
from ._examples import tiny_inputs, tiny_model

#: the table's columns: one row per stage and block
COLUMNS_SCALES = ["stage", "randomized_block", "block", "position", "n_channels", "spearman",
                  "spearman_spatial", "scale_ratio"]


def _first_tensor(out: Any) -> torch.Tensor | None:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        for item in out:
            if isinstance(item, torch.Tensor):
                return item
    return None


def _hook_module(model: nn.Module, block: Any) -> str:
    """The module whose output is the block's output: the block itself when its name is a module
    (a ``group_by`` container, so residual additions are included), else its last module."""
    names = dict(model.named_modules())
    if block.name in names and block.name != "":
        return block.name
    return block.modules[-1]


def _probe(blocks: Sequence[Any]) -> Any:
    """A probe for the engine: per block, the per-channel sum of |a|, the element count per
    channel, and the per-position mean |a| (spatial activations) of one batch."""

    def probe(model: nn.Module, xb: torch.Tensor, _unit: Any = None) -> dict[str, np.ndarray]:
        modules = dict(model.named_modules())
        out: dict[str, np.ndarray] = {}
        handles = []

        def make_hook(name: str) -> Any:
            def hook(_mod: nn.Module, _inp: Any, result: Any) -> None:
                t = _first_tensor(result)
                if t is None or t.dim() < 2:
                    return
                a = t.detach().abs().double()
                dims = [0] + list(range(2, a.dim()))
                out[f"{name}|chan"] = a.sum(dim=dims).cpu().numpy()
                out[f"{name}|count"] = np.array(a.numel() // a.shape[1])
                if a.dim() > 2:
                    out[f"{name}|spatial"] = a.mean(dim=1).reshape(-1).cpu().numpy()
            return hook

        try:
            for b in blocks:
                handles.append(modules[_hook_module(model, b)].register_forward_hook(
                    make_hook(b.name)))
            model(xb)
        finally:
            for h in handles:
                h.remove()
        return out

    return probe


def _combine(chunks: Sequence[Mapping[str, np.ndarray]], view: str, blocks: Sequence[Any]
             ) -> dict[str, dict[str, np.ndarray]]:
    """Per block, the mean |a| per channel over all units, and the per-position means."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for b in blocks:
        chan: np.ndarray | None = None
        count = 0
        spatial: list[np.ndarray] = []
        for ch in chunks:
            key = f"probe|{view}|{b.name}|"
            if key + "chan" not in ch:
                continue
            s = ch[key + "chan"]
            if chan is None or chan.shape != s.shape:
                chan, count, spatial = s, 0, []
            else:
                chan = chan + s
            count += int(ch[key + "count"])
            if key + "spatial" in ch:
                spatial.append(ch[key + "spatial"])
        if chan is None:
            continue
        out[b.name] = {"chan": chan / max(count, 1),
                       "spatial": np.concatenate(spatial) if spatial else np.array([])}
    return out


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 2 or a.shape != b.shape or np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan")
    if np.array_equal(a, b):
        return 1.0
    return float(stats.spearmanr(a, b)[0])


def activation_scale_analysis(
    model: nn.Module,
    x: torch.Tensor,
    *,
    order: str = "cascading",
    init: str = "paper",
    blocks: Sequence[Any] | None = None,
    group_by: str | Sequence[str] | None = None,
    init_settings: Mapping[str, Any] | None = None,
    config: RunConfig | None = None,
    **common: Any,
) -> CheckResult:
    """How much of the forward activations' scale structure survives randomization.

    For each stage k >= 1 of the randomization (``order``, ``init``, the run's seed) and each
    block (in forward order), the block's output activations on ``x`` are compared between the
    trained and the stage's model:

    - ``spearman``: Spearman rank correlation of the per-channel mean |activation| (channels =
      dim 1, mean over inputs and positions). NaN when either is constant or there is one channel.
    - ``spearman_spatial``: rank correlation of the per-position mean |activation| (mean over
      channels, all inputs and positions pooled); NaN for flat (B, D) activations.
    - ``scale_ratio``: mean |activation| randomized / trained.
    - ``position``: ``"below"`` the randomized blocks (before the first randomized block in
      forward order), ``"randomized"``, or ``"above"`` (bottom-up and independent orders).

    A block's output is the output of the module named like the block when there is one (e.g.
    ``group_by="children"`` blocks of a ResNet, so the residual addition is included), otherwise
    of its last module. In a plain feed-forward net the blocks below are untouched, so their
    correlation is exactly 1: the activations that gradient x activation maps multiply with are
    fully preserved. The interesting rows are the randomized blocks.

    Args:
        model, x: the trained classifier and the inputs.
        order, init, blocks, group_by, init_settings: the randomization, as
            :func:`~saliency_sanity.model_randomization_test`.
        config, **common: the common settings (:class:`~saliency_sanity.engine.RunConfig`:
            ``seed``, ``batch_size``, ``device``, ``progress``, ``run_dir`` (resume),
            ``backend``, ...); a keyword given here replaces the one in ``config``.

    Returns:
        A :class:`CheckResult` whose ``table`` has the columns ``stage, randomized_block,
        block, position, n_channels, spearman, spearman_spatial, scale_ratio`` and whose
        ``settings`` record the run.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 5), nn.ReLU(),
        ...                     nn.Linear(5, 3))
        >>> x = torch.randn(16, 4, generator=torch.Generator().manual_seed(0))
        >>> df = activation_scale_analysis(net, x, progress=False).table
        >>> df[df["position"] == "below"]["spearman"].tolist()
        [1.0, 1.0, 1.0]
    """
    cfg = RunConfig.from_kwargs(config, common)
    x, _, _, dev = prepare(model, x, None, None, cfg.device)
    plan = stage_plan(model, x, cfg.batch_size, order, init, cfg.seed, dev, blocks, group_by,
                      init_settings)
    blocks = plan.blocks
    views = [View(f"s{pos}", pos, spec.index) for pos, spec in enumerate(plan.specs)]
    settings = {"order": order, "init": plan.scheme.name, "init_settings": plan.settings(),
                "blocks": [b.name for b in blocks],
                "hooked_modules": {b.name: _hook_module(model, b) for b in blocks}}
    return execute("activation_scales", plan=plan, views=views, pairs=[], x=x, target=None,
                   target_mode="predicted", method_objs={}, score_objs={}, config=cfg,
                   settings=settings, models=[model], desc="activation scales",
                   probe=_probe(blocks), post=_post(plan))


def _post(plan: Any) -> Any:
    """The table from the units' probe arrays: one row per stage k >= 1 and block."""
    blocks = plan.blocks
    forward_index = {b.name: i for i, b in enumerate(blocks)}

    def post(out: RunOutput) -> RunOutput:
        trained = _combine(out.chunks, "s0", blocks)
        rows: list[list[Any]] = []
        for pos, spec in enumerate(plan.specs):
            if pos == 0:
                continue
            acts = _combine(out.chunks, f"s{pos}", blocks)
            lowest = min(forward_index[n] for n in spec.layers)
            for b in blocks:
                if b.name not in acts or b.name not in trained:
                    continue
                t, r = trained[b.name], acts[b.name]
                if b.name in spec.layers:
                    position = "randomized"
                elif forward_index[b.name] < lowest:
                    position = "below"
                else:
                    position = "above"
                t_mean = float(t["chan"].mean())
                ratio = float(r["chan"].mean()) / t_mean if t_mean > 0 else float("nan")
                rows.append([spec.index, spec.block, b.name, position, int(t["chan"].size),
                             _spearman(t["chan"], r["chan"]),
                             _spearman(t["spatial"], r["spatial"]), ratio])
        df = pd.DataFrame(rows, columns=COLUMNS_SCALES)
        out.table = df.astype({"stage": "int64", "n_channels": "int64", "spearman": "float64",
                               "spearman_spatial": "float64", "scale_ratio": "float64"})
        out.examples = {}
        return out

    return post


def _example() -> Example:
    return Example(args=(tiny_model(), tiny_inputs()),
                   kwargs={"seed": 0, "progress": False, "batch_size": 2},
                   bad={"order": "sideways"})


#: An extra of the model randomization run (``--activation-scales``), no subcommand of its own.
SPEC = CheckSpec(
    "activation_scales",
    run=activation_scale_analysis,
    title="Activation scales (Binder et al. 2023, claim 2)",
    columns=tuple(COLUMNS_SCALES),
    figures="saliency_sanity.plots_critiques:activation_scales_figures",
    report="saliency_sanity.report.pages:activation_scales_page",
    summary=None,
    verdict=None,
    ranking=None,
    cli=None,
    example=_example,
)
