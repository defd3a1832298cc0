"""The random logit test (Sixt et al. 2020): is the map specific to the explained class?

For each input, the map of the explained class (the model's prediction, or ``target``) is compared
with the map of a random OTHER class, drawn uniformly among the remaining classes. A method that
explains the class gives dissimilar maps: lower similarity is better. Class-insensitive methods
(e.g. Guided Backprop, or any control) give high similarity.

Quantus 0.6.0 (``RandomLogit``) draws the other class the same way (index ``r`` uniform in
``[0, C - 1)`` into the classes without the target: class ``r`` if ``r < t`` else ``r + 1``), but
from NumPy's global RNG reseeded with ``seed`` for every batch (so every batch reuses the same
draws); here one private ``torch.Generator`` draws all classes at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .. import methods as _methods
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
from ..methods.base import check_logits
from ..randomization import FixedPlan, StageSpec, fresh_copy
from ..results import COLUMNS, CheckResult
from ..results.spec import CheckSpec, Example, Ranking
from ._examples import tiny_inputs, tiny_model

LAYER = "random_logit"


def other_classes(target: torch.Tensor, num_classes: int, seed: int = 0) -> torch.Tensor:
    """A class different from ``target[i]`` for each i, uniform over the other classes.

    Drawn from a private ``torch.Generator`` (the global RNG is not touched).

    Example:
        >>> t = torch.tensor([0, 1, 2, 2])
        >>> o = other_classes(t, 3, seed=0)
        >>> bool((o != t).all()), torch.equal(o, other_classes(t, 3, seed=0))
        (True, True)
    """
    if num_classes < 2:
        raise ValueError(f"the random logit test needs at least 2 classes, got {num_classes}")
    gen = torch.Generator(device="cpu").manual_seed(derive_seed(seed, "random_logit"))
    t = target.detach().cpu().long()
    r = torch.randint(0, num_classes - 1, t.shape, generator=gen)
    return (r + (r >= t).long()).to(target.device)


def random_logit_test(
    model: nn.Module,
    x: torch.Tensor,
    *,
    target: torch.Tensor | Sequence[int] | None = None,
    methods: Sequence[Any] | Mapping[str, Any] | None = None,
    scores: Any = None,
    other: torch.Tensor | Sequence[int] | None = None,
    config: RunConfig | None = None,
    **common: Any,
) -> CheckResult:
    """Compare each method's map for the explained class with its map for a random other class.

    Rows: ``stage = 1``, ``layer = "random_logit"``, one per method, sample and score; the value is
    the similarity of the two maps (lower is better for similarity scores). Example maps: stage 0
    holds the explained class's maps, stage 1 the other class's; ``examples["targets"]`` the
    classes. Seeded methods (SmoothGrad) use the same noise for both classes; random controls get
    independent maps.

    Args:
        model: a classifier returning logits (B, classes).
        x: inputs (B, C, H, W) or (B, D).
        target: the classes to explain (default: the model's predictions).
        methods, scores: as :func:`saliency_sanity.model_randomization_test` (scores may also be
            Score objects).
        other: the other classes (B,) to use instead of random draws (e.g. to reproduce a run).
        config, **common: the common settings (:class:`~saliency_sanity.engine.RunConfig`);
            ``seed`` seeds the other classes, the noise of seeded methods and the random
            controls.

    Returns:
        A :class:`CheckResult` (check ``"random_logit"``); ``settings["other"]`` lists the classes.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> g = torch.Generator().manual_seed(0)
        >>> net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> x = torch.rand(4, 6, generator=g)
        >>> res = random_logit_test(net, x, methods=["gradient"], scores=["spearman"],
        ...                         controls=False, progress=False)
        >>> res.table[["stage", "layer"]].drop_duplicates().values.tolist()
        [[1, 'random_logit']]
    """
    cfg = RunConfig.from_kwargs(config, common)
    x, tgt, _, dev = prepare(model, x, target, None, cfg.device)
    method_objs = resolve_methods(methods, cfg.controls, model, x)
    score_objs = resolve_scores(scores, x)
    trained = fresh_copy(model, dev)
    first = x[: min(cfg.batch_size, x.shape[0])]
    with torch.no_grad():
        num_classes = int(check_logits(trained(first), first.shape[0],
                                       "random_logit_test").shape[1])
    if num_classes < 2:
        raise ValueError(f"the random logit test needs at least 2 classes, got {num_classes}")
    if tgt is None:
        tgt = torch.cat([_methods.predicted_targets(trained, x[s])
                         for s in [slice(i, i + cfg.batch_size)
                                   for i in range(0, x.shape[0], cfg.batch_size)]])
    elif tgt.numel() and (int(tgt.max()) >= num_classes or int(tgt.min()) < 0):
        raise ValueError(f"target out of range for a model with {num_classes} classes")
    if other is None:
        oth = other_classes(tgt, num_classes, cfg.seed)
    else:
        oth = torch.as_tensor(other).long().to(dev)
        if oth.shape != tgt.shape:
            raise ValueError(f"other must have shape {tuple(tgt.shape)}, got {tuple(oth.shape)}")
        if bool((oth == tgt).any()) or int(oth.max()) >= num_classes or int(oth.min()) < 0:
            raise ValueError("other must hold valid classes different from the explained ones")
    plan = FixedPlan([trained], [StageSpec(0, (), None)])
    views = [View("own", 0, 0, target="own", keep_as=0), View("other", 0, 1, target="other",
                                                               keep_as=1)]
    settings = {"other_given": other is not None, "num_classes": num_classes,
                "targets": tgt.cpu().tolist(), "other": oth.cpu().tolist()}
    result = execute("random_logit", plan=plan, views=views,
                     pairs=[Pair("own", "other", 1, LAYER)], x=x,
                     target=None if target is None else tgt,
                     target_mode="fixed", method_objs=method_objs, score_objs=score_objs,
                     config=cfg, settings=settings, models=[model],
                     targets={"own": tgt, "other": oth}, desc="random logit")
    result.stages = [
        {"index": 0, "block": None, "layers": [], "output_change": {}, "unchanged": False},
        {"index": 1, "block": LAYER, "layers": [LAYER], "output_change": {},
         "unchanged": False},
    ]
    return result


def _example() -> Example:
    return Example(args=(tiny_model(), tiny_inputs()),
                   kwargs={"methods": ["gradient"], "seed": 0, "progress": False,
                            "batch_size": 2},
                   bad={"methods": ["gradient"], "target": [0]})


#: An extra of the model randomization run (``--...``):
#: no subcommand of its own; its page is a randomization page.
SPEC = CheckSpec(
    "random_logit",
    run=random_logit_test,
    title="random_logit",
    columns=tuple(COLUMNS),
    figures="saliency_sanity.plots:model_randomization_figures",
    report="saliency_sanity.report.pages:randomization_page",
    summary="saliency_sanity.report.hooks:format_table_summary",
    verdict=None,
    ranking=Ranking(label="random logit"),
    cli=None,
    example=_example,
)
