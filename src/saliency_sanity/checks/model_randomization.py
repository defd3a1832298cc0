"""The model parameter randomization test (Adebayo et al. 2018), cascading or independent."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..randomization import discover_blocks, init_schemes, randomize_blocks
from ..randomization import plan as plan_stages
from ._engine import (
    batches,
    common_settings,
    derive_seed,
    prepare,
    progress_bar,
    resolve_methods,
    resolve_scores,
    versions,
)
from ._result import CheckResult
from ._reuse import DEFAULT_BUDGET_BYTES
from ._runner import (
    ChunkStore,
    StagePlan,
    evaluate,
    fingerprint,
    fresh_copy,
    shared_copy,
)


def model_randomization_test(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor | Sequence[int] | None = None,
    methods: Sequence[Any] | Mapping[str, Any] | None = None,
    scores: str | Sequence[str] | None = None,
    order: str = "cascading",
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
    null_reference: bool = True,
    run_dir: str | os.PathLike | None = None,
    reuse_activations: bool | int = True,
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
            that applies.
        scores: similarity score names (see ``saliency_sanity.scores.list()``); None = all that
            apply.
        order: ``"cascading"`` (top-down, the paper), ``"bottom_up"`` or ``"independent"``.
        init: randomization scheme (``saliency_sanity.randomization.init_schemes.list()``).
        seed: seeds the randomization, noise-based methods and random controls; the global RNG is
            never used.
        target_mode: ``"predicted"`` explains the class each stage's model predicts (the paper);
            ``"fixed"`` explains ``target`` or, without it, the trained model's prediction.
            Default: "fixed" if ``target`` is given, else "predicted".
        batch_size: inputs per forward/backward batch.
        device: where to run; default the model's device.
        controls: add the default controls (edge_sobel, random_gaussian), or a list of names.
        blocks, group_by, init_settings: passed to the randomization (see ``randomized_models``).
        n_examples: how many of the first inputs keep their maps in the result, for figures.
        progress: show a progress bar.
        null_reference: also randomize a second copy at every stage with an independent seed
            and score its maps against the stage's maps (``result.null``): the similarity that
            two random models share by chance, against which a method is judged. Costs one more
            set of maps per stage.
        run_dir: stream results there as each batch finishes; a run started again with the
            same arguments continues where it stopped (and a finished one is not recomputed).
            The final result is saved there too. A directory holding a run with other
            settings, weights or inputs is refused.
        reuse_activations: reuse the trained model's activations below the randomized blocks
            at every stage instead of computing them again (cascading and independent orders;
            no number changes). True keeps up to 512 MiB of them per batch; an int sets that
            budget in bytes; False turns reuse off.

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
    x, target, target_mode, dev = prepare(model, x, target, target_mode, device)
    if not any(True for _ in model.parameters()):
        raise ValueError(
            f"the model ({type(model).__name__}) has no parameters: there is nothing to "
            "randomize. Pass the trained classifier itself"
        )
    method_objs = resolve_methods(methods, controls, model, x)
    score_objs = resolve_scores(scores, x)
    spans = batches(x.shape[0], batch_size)
    n_examples = max(0, min(n_examples, x.shape[0]))

    example_input = x[: min(batch_size, x.shape[0])]
    if blocks is None:
        blocks = discover_blocks(model, example_input, group_by=group_by)
    blocks = list(blocks)
    names = [bl.name for bl in blocks]
    if len(set(names)) != len(names):
        raise ValueError(f"block names must be unique: {names}")
    by_name = {bl.name: bl for bl in blocks}
    stage_layers = plan_stages(order, names)
    scheme = (init_schemes.get(init, **dict(init_settings or {})) if isinstance(init, str)
              else init)
    null_seed = derive_seed(seed, "null-reference")
    settings_full = dict(scheme.settings())
    trained = fresh_copy(model, dev)
    info: list[dict[str, Any]] = [
        {"index": k, "block": layers[-1] if layers else None, "layers": list(layers),
         "output_change": None, "unchanged": False}
        for k, layers in enumerate(stage_layers)
    ]

    def builder(stage_seed: int) -> Callable[[int], nn.Module]:
        """Stage models built incrementally: a stage shares every tensor with the stage before
        it (or with the trained model) except the blocks it adds, which it randomizes. A block's
        weights depend only on (seed, block name, init), as in ``randomized_models``."""
        built: dict[int, nn.Module] = {0: trained}

        def build(k: int) -> nn.Module:
            if k in built:
                return built[k]
            prev = stage_layers[k - 1]
            cumulative = stage_layers[k][: len(prev)] == prev
            base = build(k - 1) if cumulative else trained
            new = [by_name[n] for n in stage_layers[k][len(prev) if cumulative else 0:]]
            fresh = {t for bl in new for t in (*bl.params, *bl.buffers)}
            built[k] = randomize_blocks(shared_copy(base, fresh), new, init=scheme,
                                        seed=stage_seed).eval()
            return built[k]

        return build

    if isinstance(reuse_activations, bool):
        reuse_bytes = DEFAULT_BUDGET_BYTES if reuse_activations else 0
    elif isinstance(reuse_activations, int) and reuse_activations >= 0:
        reuse_bytes = reuse_activations
    else:
        raise ValueError("reuse_activations must be True, False or a number of bytes >= 0, "
                         f"got {reuse_activations!r}")
    if order == "bottom_up":  # every stage changes the lowest block: nothing to reuse
        reuse_bytes = 0
    plan = StagePlan(info=info, build=builder(seed),
                     build_null=builder(null_seed) if null_reference else None,
                     reuse_bytes=reuse_bytes)

    run_settings = {
        "check": "model_randomization",
        "order": order,
        "init": scheme.name,
        "init_settings": settings_full,
        "seed": seed,
        "target_mode": target_mode,
        "target_given": target is not None,
        "batch_size": batch_size,
        "device": dev.type,
        "n_examples": n_examples,
        "methods": {label: m.settings() for label, m in method_objs.items()},
        "scores": {name: s.settings() for name, s in score_objs.items()},
        "blocks": [
            {"name": bl.name, "modules": list(bl.modules), "params": list(bl.params)}
            for bl in blocks
        ],
        "null_reference": null_reference,
    }
    fp = None
    store = None
    if run_dir is not None:
        fp = fingerprint([model], [x, target], run_settings)
        store = ChunkStore(run_dir, fp, {"check": "model_randomization", "order": order,
                                         "n_samples": int(x.shape[0])})
        store.open()
        finished = _finished_run(store.run_dir, fp)
        if finished is not None:
            store.clear()
            return finished
    total = len(info) * len(spans)
    bar = progress_bar(progress, total, "model randomization", unit="stage-batch")
    try:
        out = evaluate(plan, x, target, target_mode, method_objs, score_objs, spans, seed,
                       n_examples, on_step=lambda: bar.update(1), store=store)
    finally:
        bar.close()
    table, examples, stage_info = out.table, out.examples, out.stages
    settings = {
        "check": "model_randomization",
        "order": order,
        "init": scheme.name,
        "init_settings": settings_full,
        "null_reference": {"enabled": null_reference, "seed": null_seed},
        "activation_reuse": {"budget_bytes": reuse_bytes, "reused_operations": out.reused},
        "fingerprint": fp,
        "seed": seed,
        "target_mode": target_mode,
        **common_settings(x, target, batch_size, dev, method_objs, score_objs),
        "blocks": [
            {"name": bl.name, "modules": list(bl.modules), "params": list(bl.params)}
            for bl in blocks
        ],
        "versions": versions(),
    }
    result = CheckResult(check="model_randomization", table=table, settings=settings,
                         stages=stage_info, examples=examples, null=out.null)
    if store is not None:
        result.save(store.run_dir)
        store.clear()
    return result


def _finished_run(run_dir: os.PathLike, fp: str) -> CheckResult | None:
    """The saved result of this very run (same fingerprint), if it was completed before."""
    from pathlib import Path

    d = Path(run_dir)
    if not ((d / "run.json").is_file() and (d / "results.csv").is_file()):
        return None
    try:
        done = CheckResult.load(d)
    except (OSError, ValueError):
        return None
    return done if done.settings.get("fingerprint") == fp else None
