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

import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import methods as _methods
from ..methods.base import check_logits, model_guard
from ._engine import (
    _append,
    _keep_examples,
    _score_quietly,
    _warn_nan,
    batches,
    common_settings,
    derive_seed,
    method_for_call,
    prepare,
    progress_bar,
    resolve_methods,
    versions,
)
from ._result import COLUMNS, CheckResult
from .smprt import resolve_score_specs

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


def _num_classes(model: nn.Module, x: torch.Tensor) -> int:
    with model_guard(model), torch.no_grad():
        return int(check_logits(model(x), x.shape[0], "random_logit_test").shape[1])


def random_logit_test(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor | Sequence[int] | None = None,
    methods: Sequence[Any] | Mapping[str, Any] | None = None,
    scores: Any = None,
    seed: int = 0,
    other: torch.Tensor | Sequence[int] | None = None,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    controls: bool | Sequence[str] = True,
    n_examples: int = 4,
    progress: bool = True,
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
        methods, scores, batch_size, device, controls, n_examples, progress: as
            :func:`saliency_sanity.model_randomization_test` (scores may also be Score objects).
        seed: seeds the other classes, the noise of seeded methods and the random controls.
        other: the other classes (B,) to use instead of random draws (e.g. to reproduce a run).

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
    x, tgt, _, dev = prepare(model, x, target, None, device)
    method_objs = resolve_methods(methods, controls, model, x)
    score_objs = resolve_score_specs(scores, x)
    spans = batches(x.shape[0], batch_size)
    n_examples = max(0, min(n_examples, x.shape[0]))
    num_classes = _num_classes(model, x[: min(batch_size, x.shape[0])])
    if tgt is None:
        tgt = torch.cat([_methods.predicted_targets(model, x[s]) for s in spans])
    elif tgt.numel() and (int(tgt.max()) >= num_classes or int(tgt.min()) < 0):
        raise ValueError(f"target out of range for a model with {num_classes} classes")
    if other is None:
        oth = other_classes(tgt, num_classes, seed)
    else:
        oth = torch.as_tensor(other).long().to(dev)
        if oth.shape != tgt.shape:
            raise ValueError(f"other must have shape {tuple(tgt.shape)}, got {tuple(oth.shape)}")
        if bool((oth == tgt).any()) or int(oth.max()) >= num_classes or int(oth.min()) < 0:
            raise ValueError("other must hold valid classes different from the explained ones")

    cols: dict[str, list[np.ndarray]] = {c: [] for c in COLUMNS}
    examples: dict[str, Any] = {
        "inputs": x[:n_examples].detach().cpu().numpy(),
        "samples": np.arange(n_examples),
        "targets": {0: tgt[:n_examples].cpu().numpy(), 1: oth[:n_examples].cpu().numpy()},
        "maps": {label: {} for label in method_objs},
    }
    bar = progress_bar(progress, 2 * len(spans) * len(method_objs), "random logit")
    try:
        for b, span in enumerate(spans):
            xb, samples = x[span], np.arange(span.start, span.stop)
            for label, method in method_objs.items():
                own = method_for_call(method, label, seed, 0, b)(model, xb, tgt[span]).detach()
                bar.update(1)
                alt = method_for_call(method, label, seed, 1, b)(model, xb, oth[span]).detach()
                bar.update(1)
                _keep_examples(examples["maps"][label], 0, span, n_examples, own)
                _keep_examples(examples["maps"][label], 1, span, n_examples, alt)
                for sname, score in score_objs.items():
                    _append(cols, label, 1, LAYER, samples, sname,
                            _score_quietly(score, own, alt))
    finally:
        bar.close()
    table = pd.DataFrame({c: np.concatenate(v) if v else np.array([]) for c, v in cols.items()})
    table = table.astype({"stage": "int64", "sample": "int64", "value": "float64"})
    _warn_nan(table)
    settings = {
        "check": "random_logit",
        "seed": seed,
        "other_given": other is not None,
        "num_classes": num_classes,
        "targets": tgt.cpu().tolist(),
        "other": oth.cpu().tolist(),
        **common_settings(x, target, batch_size, dev, method_objs, score_objs),
        "versions": versions(),
    }
    stages = [
        {"index": 0, "block": None, "layers": [], "output_change": {}, "unchanged": False},
        {"index": 1, "block": LAYER, "layers": [LAYER], "output_change": {},
         "unchanged": False},
    ]
    return CheckResult(check="random_logit", table=table, settings=settings, stages=stages,
                       examples=examples)
