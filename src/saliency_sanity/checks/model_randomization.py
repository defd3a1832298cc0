"""The model parameter randomization test (Adebayo et al. 2018), cascading or independent."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import methods as _methods
from .._guard import model_device
from ..randomization import discover_blocks, randomized_models
from ._engine import (
    batches,
    check_inputs,
    method_for_call,
    resolve_methods,
    resolve_scores,
    versions,
)
from ._result import COLUMNS, CheckResult

TARGET_MODES = ("predicted", "fixed")


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
    x, target = check_inputs(x, target)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if target_mode is None:
        target_mode = "fixed" if target is not None else "predicted"
    if target_mode not in TARGET_MODES:
        raise ValueError(f"target_mode must be one of {TARGET_MODES}, got {target_mode!r}")
    if target is not None and target_mode == "predicted":
        raise ValueError(
            "target was given but target_mode='predicted' explains each stage's predicted class; "
            "use target_mode='fixed' to explain the given classes, or drop target"
        )
    dev = torch.device(device) if device is not None else model_device(model)
    x = x.to(dev)
    method_objs = resolve_methods(methods, controls, model, x)
    score_objs = resolve_scores(scores, x)
    spans = batches(x.shape[0], batch_size)
    n_examples = max(0, min(n_examples, x.shape[0]))

    example_input = x[: min(batch_size, x.shape[0])]
    if blocks is None:
        blocks = discover_blocks(model, example_input, group_by=group_by)
    stage_iter = randomized_models(
        model, order=order, init=init, seed=seed, example_input=example_input, blocks=blocks,
        init_settings=dict(init_settings or {}), device=dev,
    )

    n_stages = len(blocks) + 1
    bar = _progress(progress, n_stages * len(spans) * len(method_objs), "model randomization")
    reference: dict[str, list[torch.Tensor]] = {label: [] for label in method_objs}
    fixed_targets: list[torch.Tensor] = []
    cols: dict[str, list[np.ndarray]] = {c: [] for c in COLUMNS}
    examples: dict[str, Any] = {
        "inputs": x[:n_examples].detach().cpu().numpy(),
        "samples": np.arange(n_examples),
        "targets": {},
        "maps": {label: {} for label in method_objs},
    }
    stage_info: list[dict[str, Any]] = []
    try:
        for stage in stage_iter:
            k = stage.index
            stage_info.append({
                "index": k,
                "block": stage.block,
                "layers": list(stage.layers),
                "output_change": dict(stage.output_change),
                "unchanged": bool(stage.unchanged),
            })
            ex_targets = []
            for b, span in enumerate(spans):
                xb = x[span]
                if target_mode == "predicted":
                    tb = _methods.predicted_targets(stage.model, xb)
                elif k == 0:
                    tb = (target[span].to(dev) if target is not None
                          else _methods.predicted_targets(stage.model, xb))
                    fixed_targets.append(tb)
                else:
                    tb = fixed_targets[b]
                ex_targets.append(tb)
                for label, method in method_objs.items():
                    m = method_for_call(method, label, seed, k, b)
                    maps = m(stage.model, xb, tb).detach()
                    _keep_examples(examples["maps"][label], k, span, n_examples, maps)
                    if k == 0:
                        reference[label].append(maps)
                    else:
                        ref = reference[label][b]
                        samples = np.arange(span.start, span.stop)
                        for sname, score in score_objs.items():
                            with warnings.catch_warnings():
                                warnings.simplefilter("ignore", RuntimeWarning)
                                vals = score(ref, maps).detach().double().cpu().numpy()
                            _append(cols, label, k, stage.block, samples, sname, vals)
                    bar.update(1)
            examples["targets"][k] = torch.cat(ex_targets)[:n_examples].cpu().numpy()
            del stage
    finally:
        bar.close()

    table = pd.DataFrame({c: np.concatenate(v) if v else np.array([]) for c, v in cols.items()})
    table = table.astype({"stage": "int64", "sample": "int64", "value": "float64"})
    _warn_nan(table)
    settings = {
        "check": "model_randomization",
        "order": order,
        "init": init,
        "init_settings": dict(init_settings or {}),
        "seed": seed,
        "target_mode": target_mode,
        "target_given": target is not None,
        "batch_size": batch_size,
        "device": str(dev),
        "n_samples": int(x.shape[0]),
        "input_shape": list(x.shape[1:]),
        "methods": {label: m.settings() for label, m in method_objs.items()},
        "controls": [label for label, m in method_objs.items() if m.is_control],
        "scores": {name: s.settings() for name, s in score_objs.items()},
        "blocks": [
            {"name": bl.name, "modules": list(bl.modules), "params": list(bl.params)}
            for bl in blocks
        ],
        "versions": versions(),
    }
    return CheckResult(check="model_randomization", table=table, settings=settings,
                       stages=stage_info, examples=examples)


def _keep_examples(store: dict[int, Any], stage: int, span: slice, n: int, maps: torch.Tensor):
    if span.start >= n:
        return
    part = maps[: n - span.start].cpu().numpy()
    store[stage] = part if stage not in store else np.concatenate([store[stage], part])


def _append(cols, method, stage, layer, samples, metric, vals) -> None:
    n = len(samples)
    cols["method"].append(np.full(n, method, dtype=object))
    cols["stage"].append(np.full(n, stage, dtype=np.int64))
    cols["layer"].append(np.full(n, layer, dtype=object))
    cols["sample"].append(samples.astype(np.int64))
    cols["metric"].append(np.full(n, metric, dtype=object))
    cols["value"].append(vals.astype(np.float64))


def _warn_nan(table: pd.DataFrame) -> None:
    nan = table[table["value"].isna()]
    if len(nan):
        where = ", ".join(
            f"{m}/{s}: {c}" for (m, s), c in nan.groupby(["method", "metric"]).size().items()
        )
        warnings.warn(
            f"{len(nan)} similarity values are NaN (constant maps have no rank correlation): "
            f"{where}",
            RuntimeWarning,
            stacklevel=3,
        )


def _progress(enabled: bool, total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, unit="maps")
