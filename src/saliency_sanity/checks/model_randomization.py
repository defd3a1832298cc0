"""The model parameter randomization test (Adebayo et al. 2018), cascading or independent."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..engine import (
    DEFAULT_BUDGET_BYTES,
    Pair,
    RunConfig,
    View,
    derive_seed,
    execute,
    prepare,
    resolve_methods,
    resolve_scores,
)
from ..results import COLUMNS, CheckResult
from ..results.spec import CheckSpec, Cli, Example, Ranking, Verdict
from ._common import randomization_settings, stage_plan
from ._examples import tiny_inputs, tiny_model


def model_randomization_test(
    model: nn.Module,
    x: torch.Tensor,
    *,
    target: torch.Tensor | Sequence[int] | None = None,
    methods: Sequence[Any] | Mapping[str, Any] | None = None,
    scores: str | Sequence[str] | None = None,
    order: str = "cascading",
    init: str = "paper",
    blocks: Sequence[Any] | None = None,
    group_by: str | Sequence[str] | None = None,
    init_settings: Mapping[str, Any] | None = None,
    null_reference: bool = True,
    reuse_activations: bool | int = True,
    config: RunConfig | None = None,
    **common: Any,
) -> CheckResult:
    """Compare each method's maps on the trained model with its maps on randomized copies.

    Stage 0 is the trained model; stage k >= 1 has k blocks randomized (cascading, bottom-up) or
    block k alone (independent). Every row of the result's table compares one sample's map at stage
    k with its map at stage 0 under one score. The user's model is never modified.

    Args:
        model: a classifier returning logits (B, classes).
        x: inputs (B, C, H, W) or (B, D).
        target: class indices (B,) to explain; with ``target_mode="fixed"`` (the default when a
            target is given) they are explained at every stage.
        methods: method names, Method objects, callables ``f(model, x, target)``, Captum classes,
            ``(name, settings)`` pairs, or a dict ``{label: spec}``; None = every default method
            that applies (``saliency_sanity.methods.defaults``).
        scores: similarity score names (see ``saliency_sanity.scores.list()``); None = all that
            apply.
        order: ``"cascading"`` (top-down, the paper), ``"bottom_up"`` or ``"independent"``.
        init: randomization scheme (``saliency_sanity.randomization.init_schemes.list()``).
        blocks, group_by, init_settings: the blocks to randomize (default: discovered, see
            ``discover_blocks``), how to group layers into blocks, and the scheme's settings.
        null_reference: also randomize a second copy at every stage with an independent seed
            and score its maps against the stage's maps (``result.null``): the similarity that
            two random models share by chance, against which a method is judged. Costs one more
            set of maps per stage.
        reuse_activations: reuse the trained model's activations below the randomized blocks
            at every stage instead of computing them again (cascading and independent orders;
            no number changes; only for methods that declare it safe). True keeps up to 512 MiB
            of them per batch; an int sets that budget in bytes; False turns reuse off.
        config, **common: the settings every check shares (:class:`~saliency_sanity.engine.
            RunConfig`): ``seed``, ``batch_size``, ``device``, ``target_mode``, ``controls``,
            ``n_examples``, ``progress`` and ``run_dir`` (stream results there as each batch
            finishes; a run started again with the same arguments continues where it stopped).

    Returns:
        A :class:`CheckResult` with the tidy table, settings, stages and example maps.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from saliency_sanity import model_randomization_test
        >>> g = torch.Generator().manual_seed(0)
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> x = torch.rand(4, 1, 4, 4, generator=g)
        >>> res = model_randomization_test(net, x, methods=["gradient"], scores=["spearman_abs"],
        ...                                controls=False, progress=False)
        >>> sorted(res.table["layer"].unique())
        ['1', '3']
    """
    cfg = RunConfig.from_kwargs(config, common)
    x, target, target_mode, dev = prepare(model, x, target, cfg.target_mode, cfg.device)
    if not any(True for _ in model.parameters()):
        raise ValueError(
            f"the model ({type(model).__name__}) has no parameters: there is nothing to "
            "randomize. Pass the trained classifier itself"
        )
    if isinstance(reuse_activations, bool):
        reuse_bytes = DEFAULT_BUDGET_BYTES if reuse_activations else 0
    elif isinstance(reuse_activations, int) and reuse_activations >= 0:
        reuse_bytes = reuse_activations
    else:
        raise ValueError("reuse_activations must be True, False or a number of bytes >= 0, "
                         f"got {reuse_activations!r}")
    method_objs = resolve_methods(methods, cfg.controls, model, x)
    score_objs = resolve_scores(scores, x)
    null_seed = derive_seed(cfg.seed, "null-reference")
    plan = stage_plan(model, x, cfg.batch_size, order, init, cfg.seed, dev, blocks, group_by,
                      init_settings, null_seed=null_seed if null_reference else None)
    if order == "bottom_up":  # every stage changes the lowest block: nothing to reuse
        reuse_bytes = 0
    views: list[View] = []
    pairs: list[Pair] = []
    for pos, spec in enumerate(plan.specs):
        views.append(View(f"s{pos}", pos, spec.index, keep_as=spec.index, measure=True))
        if pos == 0:
            continue
        pairs.append(Pair("s0", f"s{pos}", spec.index, spec.block or ""))
        if null_reference:
            views.append(View(f"null{pos}", pos, f"null-{spec.index}", twin=True))
            pairs.append(Pair(f"s{pos}", f"null{pos}", spec.index, spec.block or "", "n"))
    settings = {**randomization_settings(plan),
                "null_reference": {"enabled": null_reference, "seed": null_seed}}
    return execute(
        "model_randomization", plan=plan, views=views, pairs=pairs, x=x, target=target,
        target_mode=target_mode, method_objs=method_objs, score_objs=score_objs, config=cfg,
        settings=settings, models=[model], reuse_bytes=reuse_bytes,
        desc="model randomization",
        more_settings=lambda out: {"activation_reuse": {"budget_bytes": reuse_bytes,
                                                        "reused_operations": out.reused}},
    )


#: The plain rule of the model randomization verdict (the report's "Rule." line).
RULE = (
    "A method is flagged when, at a stage where most of the model's predictions have "
    "changed, its maps still keep more than half of their similarity to the trained "
    "model's maps (it ignores the blocks randomized there); it passes when its maps "
    "changed at every stage it is judged at, and is inconclusive otherwise.")


def _example() -> Example:
    return Example(args=(tiny_model(), tiny_inputs()),
                   kwargs={"methods": ["gradient", "smoothgrad"], "seed": 0, "progress": False,
                            "batch_size": 2},
                   bad={"order": "sideways"})


SPEC = CheckSpec(
    "model_randomization",
    run=model_randomization_test,
    title="Model parameter randomization test",
    columns=tuple(COLUMNS),
    figures="saliency_sanity.plots:model_randomization_figures",
    report="saliency_sanity.report.pages:randomization_page",
    summary="saliency_sanity.verdicts:format_verdict",
    verdict=Verdict(judge="saliency_sanity.verdicts:verdict", rule=RULE,
                    stages="saliency_sanity.verdicts:stage_verdicts",
                    question="which randomized blocks does each method ignore?",
                    per_method="saliency_sanity.verdicts:model_method_verdicts",
                    rule_text="saliency_sanity.verdicts:model_rule_text"),
    ranking=Ranking(label="MPRT"),
    cli=Cli("model-randomization", "saliency_sanity.cli._args:add_model_randomization",
            "saliency_sanity.cli.commands:_cmd_model_randomization", keeps_run_dir=True),
    example=_example,
)
