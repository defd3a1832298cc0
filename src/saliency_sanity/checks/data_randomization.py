"""The data randomization test (Adebayo et al. 2018): true-label model vs random-label model."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..engine import (
    Pair,
    RunConfig,
    View,
    derive_seed,
    execute,
    prepare,
    resolve_methods,
    resolve_scores,
)
from ..randomization import FixedPlan, StageSpec, fresh_copy
from ..results import COLUMNS, CheckResult
from ..results.spec import CheckSpec, Cli, Example, Ranking, Verdict
from ._examples import tiny_data
from ._ray_train import TrainJob, train_on_ray

LAYER = "random_labels"


def random_label_init_seed(seed: int) -> int:
    """The init seed of the random-label model: derived from ``seed`` so that the true-label and
    random-label models do not start from the same weights.

    Example:
        >>> random_label_init_seed(0) != 0
        True
    """
    return derive_seed(seed, "random-label-init") % 2**31


def compare_models(
    true_model: nn.Module,
    random_model: nn.Module,
    x: torch.Tensor,
    *,
    target: torch.Tensor | Sequence[int] | None = None,
    methods: Sequence[Any] | Mapping[str, Any] | None = None,
    scores: str | Sequence[str] | None = None,
    accuracies: Mapping[str, Any] | None = None,
    memorization_target: float = 0.95,
    config: RunConfig | None = None,
    **common: Any,
) -> CheckResult:
    """Compare maps of a true-label model with those of a random-label model on the same inputs.

    Use this with two models you trained yourself; :func:`data_randomization_test` trains both.
    The table has the columns of the model randomization test with ``stage`` = 1 and ``layer`` =
    ``"random_labels"``. If ``accuracies["random"]["train_acc"]`` is given and below
    ``memorization_target``, the comparison is marked invalid (``settings["valid"] = False``)
    and a warning says why. ``config`` and ``**common``: the common settings (``seed``,
    ``batch_size``, ``device``, ``target_mode``, ``controls``, ``n_examples``, ``progress``,
    ``run_dir``; see :class:`~saliency_sanity.engine.RunConfig`).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> a = nn.Sequential(nn.Linear(6, 3)); b = nn.Sequential(nn.Linear(6, 3))
        >>> r = compare_models(a, b, torch.ones(2, 6), methods=["gradient"], scores=["pearson"],
        ...                    controls=False, progress=False)
        >>> sorted(r.table["layer"].unique())
        ['random_labels']
    """
    cfg = RunConfig.from_kwargs(config, common)
    for name, m in (("true_model", true_model), ("random_model", random_model)):
        if not isinstance(m, nn.Module):
            raise TypeError(f"{name} must be a torch.nn.Module, got {type(m).__name__}")
    x, target, target_mode, dev = prepare(true_model, x, target, cfg.target_mode, cfg.device)
    method_objs = resolve_methods(methods, cfg.controls, true_model, x)
    score_objs = resolve_scores(scores, x)
    # copies: the evaluator works on private models, so the user's stay untouched
    plan = FixedPlan([fresh_copy(true_model, dev), fresh_copy(random_model, dev)],
                     [StageSpec(0, (), None), StageSpec(1, (LAYER,), LAYER)])
    views = [View("true", 0, 0, keep_as=0, measure=True),
             View("random", 1, 1, keep_as=1, measure=True)]
    valid, reason = True, ""
    acc = dict(accuracies or {})
    rnd_acc = (acc.get("random") or {}).get("train_acc")
    if rnd_acc is not None and rnd_acc < memorization_target:
        valid = False
        reason = (
            f"the random-label model reached {rnd_acc:.1%} training accuracy, below the "
            f"{memorization_target:.0%} needed to show it memorized the permuted labels; its maps "
            "do not show what a model that learned nothing real explains. Train longer (more "
            "epochs) or on fewer images, then rerun."
        )
        warnings.warn(f"data randomization comparison is INVALID: {reason}", RuntimeWarning,
                      stacklevel=2)
    settings = {"accuracies": acc, "memorization_target": memorization_target, "valid": valid,
                "invalid_reason": reason}
    return execute(
        "data_randomization", plan=plan, views=views, pairs=[Pair("true", "random", 1, LAYER)],
        x=x, target=target, target_mode=target_mode, method_objs=method_objs,
        score_objs=score_objs, config=cfg, settings=settings,
        models=[true_model, random_model], desc="data randomization")


def data_randomization_test(
    dataset: str | Any = "mnist",
    architecture: str | Any = "mnist_cnn",
    *,
    n_train: int = 2000,
    n_test: int = 1000,
    n_samples: int = 16,
    label_seed: int = 0,
    true_config: Any = None,
    random_config: Any = None,
    model_kwargs: Mapping[str, Any] | None = None,
    methods: Sequence[Any] | Mapping[str, Any] | None = None,
    scores: str | Sequence[str] | None = None,
    cache_dir: str | os.PathLike | None = None,
    config: RunConfig | None = None,
    **common: Any,
) -> CheckResult:
    """Train ``architecture`` on true labels and on permuted labels, then compare their maps.

    Both models are trained with :func:`saliency_sanity.training.train` (cached, resumable). The
    random-label model must memorize its training set (training accuracy >= the target of
    ``random_config``, 95% by default), else the result is marked invalid. Maps are compared on
    the first ``n_samples`` test images.

    Args:
        dataset: a built-in data set name (``saliency_sanity.data.list()``) or a ``Dataset``.
        architecture: a model name (``saliency_sanity.models.list()``) or a factory.
        n_train, n_test: subset sizes when ``dataset`` is a name (memorizing needs a small set).
        label_seed: seeds the label permutation.
        model_kwargs: settings of the architecture; default ``{"width": 0.5}`` for the built-in
            MNIST models (half the paper's channels: memorizing 2,000 random labels then takes a
            few minutes on 2 CPU cores).
        true_config, random_config: ``TrainConfig`` for each model (defaults:
            ``TrainConfig.true_labels(seed=seed)`` and ``TrainConfig.random_labels(label_seed)``
            with an init seed derived from ``seed``, so the two models do not share initial
            weights, as in the paper's separate training runs).
        config, **common: the common settings (``seed`` also seeds the data subset and the
            training; see :class:`~saliency_sanity.engine.RunConfig`).
        Other arguments as in :func:`compare_models`.

    Example:
        >>> from saliency_sanity import data, training
        >>> ds = data.load("mnist", n_train=64, n_test=16)
        >>> r = data_randomization_test(
        ...     ds, "mnist_mlp", n_samples=4, model_kwargs={"width": 0.05}, methods=["gradient"],
        ...     scores=["spearman_abs"], controls=False, cache_dir=False, progress=False,
        ...     true_config=training.TrainConfig.true_labels(epochs=1),
        ...     random_config=training.TrainConfig.random_labels(0, epochs=1))
        >>> r.settings["valid"]  # one epoch cannot memorize permuted labels
        False
    """
    from .. import data as _data
    from .. import training

    cfg = RunConfig.from_kwargs(config, common)
    seed, progress = cfg.seed, cfg.progress
    ds = (_data.load(dataset, n_train=n_train, n_test=n_test, seed=seed)
          if isinstance(dataset, str) else dataset)
    tc = true_config or training.TrainConfig.true_labels(seed=seed)
    # An init of its own: two runs sharing initial weights would look alike through the weights
    # training barely moves (the first layer), whatever the labels (the paper trains them apart).
    rc = random_config or training.TrainConfig.random_labels(
        label_seed, seed=random_label_init_seed(seed))
    if tc.label_seed is not None:
        raise ValueError("true_config must train on true labels (label_seed=None)")
    if rc.label_seed is None:
        raise ValueError("random_config must permute the labels (set label_seed)")
    kw = dict(model_kwargs) if model_kwargs is not None else (
        {"width": 0.5} if architecture in ("mnist_cnn", "mnist_mlp") else {})
    if cfg.backend == "ray":
        jobs = [TrainJob(architecture, c, kw, data=ds) for c in (tc, rc)]
        true_res, rand_res = train_on_ray(jobs, cache_dir, cfg.ray_address, cfg.ray_options,
                                          cfg.device)
    else:
        true_res = training.train(architecture, ds, tc, cache_dir=cache_dir, progress=progress,
                                  model_kwargs=kw, device=cfg.device)
        rand_res = training.train(architecture, ds, rc, cache_dir=cache_dir, progress=progress,
                                  model_kwargs=kw, device=cfg.device)
    accuracies = {
        "true": _acc(true_res), "random": _acc(rand_res),
    }
    target = rc.target_train_acc if rc.target_train_acc is not None else 0.95
    x = ds.x_test[:n_samples]
    result = compare_models(
        true_res.model, rand_res.model, x, methods=methods, scores=scores,
        accuracies=accuracies, memorization_target=target, config=cfg,
    )
    result.settings.update({
        "dataset": getattr(ds, "name", str(dataset)),
        "architecture": architecture if isinstance(architecture, str) else repr(architecture),
        "model_kwargs": kw,
        "n_train": int(ds.x_train.shape[0]),
        "n_test": int(ds.x_test.shape[0]),
        "label_seed": label_seed,
        "true_config": _cfg(tc),
        "random_config": _cfg(rc),
    })
    return result


def _acc(res: Any) -> dict[str, Any]:
    return {"train_acc": float(res.train_acc), "test_acc": float(res.test_acc),
            "epochs": int(res.epochs), "reached_target": bool(res.reached_target),
            "from_cache": bool(res.from_cache), "cache_key": res.key}


def _cfg(cfg: Any) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(cfg)


#: The plain rule of the data randomization verdict.
RULE = (
    "A method passes when the maps of the model trained on random labels are no closer to "
    "the true-label model's maps than random maps are, yet clearly moved away from them.")


def _example() -> Example:
    from .. import training

    return Example(kwargs={"dataset": tiny_data(), "n_train": 8, "n_samples": 4,
                           "true_config": training.TrainConfig.true_labels(seed=0, epochs=1),
                           "random_config": training.TrainConfig.random_labels(0, seed=1, epochs=1),
                           "model_kwargs": {"width": 0.25}, "methods": ["gradient"],
                           "seed": 0, "progress": False},
                   bad={"n_samples": 0})


SPEC = CheckSpec(
    "data_randomization",
    run=data_randomization_test,
    title="Data randomization test",
    columns=tuple(COLUMNS),
    figures="saliency_sanity.plots:data_randomization_figures",
    report="saliency_sanity.report.pages:randomization_page",
    summary="saliency_sanity.verdicts:format_verdict",
    verdict=Verdict(judge="saliency_sanity.verdicts:data_verdicts", rule=RULE,
                    question="do the maps depend on the labels the model learnt?",
                    per_method="saliency_sanity.verdicts:data_method_verdicts",
                    rule_text="saliency_sanity.verdicts:data_rule_text",
                    line="saliency_sanity.verdicts:data_verdict_line"),
    ranking=Ranking(label="data randomization"),
    cli=Cli("data-randomization", "saliency_sanity.cli._args:add_data_randomization",
            "saliency_sanity.cli.commands:_cmd_data_randomization", keeps_run_dir=True),
    example=_example,
)
