"""ROAR / KAR / DiffROAR with retraining (Hooker et al. 2019; Shah, Jain, Netrapalli 2021).

For each fraction k and side (``top``: keep the top-k attributed coordinates, ``bottom``: keep
the bottom-k) and repeat, a fresh model is trained on the masked training set and tested on the
masked test set. DiffROAR(k) = acc(top-k) - acc(bottom-k), pooled over all top x bottom repeat
pairs (mean, std, interval mean +- std, as Shah et al. plot it). KAR(k) = acc(top-k);
ROAR at removed fraction r = acc(bottom-(1 - r)) (removing the top r keeps the bottom 1 - r):
both curves come from the same runs.

Every retraining is an independent unit with a stable key (``checks/_retrain.py``), run here
one after the other or as Ray tasks, its row written atomically to
``run_dir/units/<key>.json``; the trained model is cached by the trainer (per-epoch
checkpoints), so a killed run resumes without retraining what finished.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from .._io import write_json
from ..data import Dataset
from ..engine import RunConfig, derive_seed
from ..results.spec import CheckSpec, Cli
from ._examples import diffroar_example
from ._masking import RANDOM, cached_attributions, model_fingerprint
from ._retrain import KS, RetrainSetup, plan_units, run_unit, run_units_on_ray
from ._roar_summary import summarize

TABLE_COLUMNS = ["method", "k", "side", "repeat", "seed", "test_acc", "train_acc", "epochs",
                 "reached_target", "cache_key"]


#: the common settings (:class:`RunConfig`) a DiffROAR run uses; the others raise when set
RUN_SETTINGS = ("seed", "run_dir", "batch_size", "progress", "backend", "ray_address",
                "ray_options")


@dataclass
class DiffRoarResult:
    """The tidy table (one row per retraining), the DiffROAR summary, settings, validity."""

    table: pd.DataFrame
    summary: pd.DataFrame
    settings: dict[str, Any]

    @property
    def valid(self) -> bool:
        return bool(self.settings.get("valid", True))

    def save(self, out: str | os.PathLike) -> Path:
        """``results.csv`` (the table), ``diffroar.csv`` (the summary), ``run.json``."""
        from .._io import atomic_write

        d = Path(out)
        atomic_write(d / "results.csv", lambda p: self.table.to_csv(p, index=False))
        atomic_write(d / "diffroar.csv", lambda p: self.summary.to_csv(p, index=False))
        write_json(d / "run.json", {"check": "diffroar", "settings": self.settings})
        return d


def _as_dataset(train: Any, test: Any) -> Dataset:
    if isinstance(train, Dataset):
        if test is not None:
            raise ValueError("give test=None when train is a Dataset (it holds the test split)")
        return train
    try:
        (x_tr, y_tr), (x_te, y_te) = train, test
    except (TypeError, ValueError):
        raise TypeError("train and test must be (x, y) pairs of tensors, or train a Dataset "
                        "and test None") from None
    n_cls = int(max(int(y_tr.max()), int(y_te.max()))) + 1
    return Dataset("data", x_tr.float(), y_tr.long(), x_te.float(), y_te.long(),
                   [str(i) for i in range(n_cls)])


def diffroar(
    model_factory: Any,
    train: Any,
    test: Any,
    *,
    method: Any = "gradient",
    ks: Sequence[float] = KS,
    repeats: int = 2,
    trainer: Any = None,
    original: nn.Module | None = None,
    adversarial: Any = None,
    original_trainer: Any = None,
    model_kwargs: dict[str, Any] | None = None,
    per: str = "coordinate",
    fill: str = "scalar",
    cache_dir: str | os.PathLike | None = None,
    config: RunConfig | None = None,
    **common: Any,
) -> DiffRoarResult:
    """DiffROAR / ROAR / KAR of ``method`` on ``train`` / ``test`` with retraining.

    Args:
        model_factory: a registered model name or a callable (as for ``training.train``).
        train, test: ``(x, y)`` tensor pairs, or a ``Dataset`` and ``None``.
        method: a method name or Method whose maps (of the true label) rank the coordinates,
            or ``"random"``: the random-map control (seeded uniform maps, model unused; each
            repeat draws its own map, so the repeat spread includes the map's randomness).
        trainer: a ``training.TrainConfig`` for the original model and every retraining
            (default ``TrainConfig(epochs=4, target_train_acc=None)``); its seed is replaced
            by each unit's.
        original: the model that ranks the coordinates; ``None`` trains one on the original
            data with ``trainer`` (seed ``seed``) and ``adversarial`` (a ``training.PGD`` for a
            robust original; retrainings are always standard).
        original_trainer: a ``training.TrainConfig`` for the original model only (default
            ``trainer``): an original trained longer than the retrainings, e.g. an
            adversarially trained one that needs more epochs to learn.
        cache_dir: where trained models go (runs sharing it share the k = 1 retrainings);
            default ``run_dir/models``, or the user cache without a run_dir.
        per, fill: ``"coordinate"`` / ``"pixel"`` ranking; ``"scalar"`` / ``"channel"`` mean.
        config, **common: the common settings (:class:`~saliency_sanity.engine.RunConfig`) that
            apply here, a keyword replacing the one in ``config``: ``seed`` (the original
            model, the retraining seeds, the random maps); ``run_dir``: where unit rows
            (``units/``), attributions and trained models (``models/``, unless ``cache_dir``
            is given) go, and rerunning with the same ``run_dir`` resumes; ``batch_size``:
            inputs per attribution batch (default 250 without a ``config``); ``progress``;
            ``backend``: ``"local"`` (retrainings one after the other here) or ``"ray"``: each
            retraining a Ray task, on the cluster at ``ray_address`` with ``ray_options``; the
            same table, bit for bit on CPU (``docs/scaling.md``). The other common settings
            do not apply and raise an error when set.

    The run is invalid (``settings["valid"] = False``, reason in ``settings["invalid_reason"]``)
    when the trainer has a target accuracy and the original model, or a retraining on the full
    data (k = 1), does not reach it.

    Example:
        >>> from saliency_sanity import data, training
        >>> ds = data.load("mnist", n_train=48, n_test=24)
        >>> r = diffroar("mnist_mlp", ds, None, method="random", ks=(1.0, 0.5), repeats=1,
        ...              trainer=training.TrainConfig(epochs=1, target_train_acc=None),
        ...              model_kwargs={"width": 0.02}, cache_dir=False, progress=False)
        >>> len(r.table), list(r.summary["k"])
        (4, [1.0, 0.5])
    """
    from .. import training

    cfg_run = RunConfig.from_kwargs(config, common, defaults={"batch_size": 250})
    cfg_run.reject_unused(RUN_SETTINGS, "diffroar")
    seed, rd, progress = cfg_run.seed, cfg_run.run_dir, cfg_run.progress
    units = plan_units(ks, repeats, seed)  # validates ks and repeats first
    if cfg_run.backend == "ray":  # before any training: a missing extra says how to install it
        from ..engine.ray_backend import require_ray

        require_ray()
    if original is not None and adversarial is not None:
        raise ValueError("give either original= (a trained model) or adversarial= (to train a "
                         "robust original), not both: the attack would not be used")
    ds = _as_dataset(train, test)
    cfg = trainer if trainer is not None else training.TrainConfig(epochs=4,
                                                                  target_train_acc=None)
    if not isinstance(cfg, training.TrainConfig):
        raise TypeError(f"trainer must be a training.TrainConfig, got {type(cfg).__name__}")
    ocfg = original_trainer if original_trainer is not None else cfg
    if not isinstance(ocfg, training.TrainConfig):
        raise TypeError("original_trainer must be a training.TrainConfig, got "
                        f"{type(ocfg).__name__}")
    if original_trainer is not None and original is not None:
        raise ValueError("give either original= (a trained model) or original_trainer= (to "
                         "train one), not both: the settings would not be used")
    kw = dict(model_kwargs or {})
    if isinstance(model_factory, str):
        kw.setdefault("num_classes", ds.num_classes)
    rd = Path(rd) if rd is not None else None
    models_dir: Any = cache_dir if cache_dir is not None or rd is None else rd / "models"
    attr_dir = (rd / "attributions" if rd is not None else
                None if cache_dir is False else
                Path(cache_dir or training.default_cache_dir()) / "attributions")
    is_random = isinstance(method, str) and method == RANDOM
    orig_info: dict[str, Any] = {}
    problems: list[str] = []
    if original is None and not is_random:
        res = training.train(model_factory, ds, dataclasses.replace(ocfg, seed=seed),
                             cache_dir=models_dir, progress=progress, model_kwargs=kw,
                             adversarial=adversarial)
        original = res.model
        orig_info = {"train_acc": res.train_acc, "test_acc": res.test_acc,
                     "robust_test_acc": res.robust_test_acc, "epochs": res.epochs,
                     "reached_target": res.reached_target, "cache_key": res.key}
        if ocfg.target_train_acc is not None and not res.reached_target:
            problems.append(f"the original model reached {res.train_acc:.1%} training accuracy, "
                            f"below the target {ocfg.target_train_acc:.0%}")
    fp = model_fingerprint(original) if original is not None else None
    def maps(x: torch.Tensor, y: torch.Tensor, *key: Any) -> torch.Tensor:
        return cached_attributions(original, x, y, method, attr_dir, cfg_run.batch_size,
                                   derive_seed(seed, "random-map", *key) % 2**31)

    if is_random:  # a map per repeat: the repeats sample the map's randomness too
        a_tr = torch.stack([maps(ds.x_train, ds.y_train, "train", r) for r in range(repeats)])
        a_te = torch.stack([maps(ds.x_test, ds.y_test, "test", r) for r in range(repeats)])
    else:
        a_tr, a_te = maps(ds.x_train, ds.y_train, "train"), maps(ds.x_test, ds.y_test, "test")
    label = method if isinstance(method, str) else getattr(method, "name", repr(method))
    setup = RetrainSetup(model_factory, ds, a_tr, a_te, label, cfg, kw, per, fill,
                         models_dir, False, per_repeat=is_random)
    from tqdm.auto import tqdm

    if cfg_run.backend == "ray":
        rows = run_units_on_ray(units, setup, rd, cfg_run.ray_address, cfg_run.ray_options,
                                progress,
                                f"diffroar {label}")
    else:
        rows = [run_unit(unit, setup, rd) for unit in tqdm(
            units, desc=f"diffroar {label}", disable=not progress, leave=False)]
    table = pd.DataFrame(rows)
    full = table[(table["k"] == 1.0) & (table["reached_target"] == False)]  # noqa: E712
    if len(full):
        problems.append(f"{len(full)} retraining(s) on the full data (k = 1) did not reach the "
                        f"target training accuracy {cfg.target_train_acc}")
    reason = "; ".join(problems)
    if reason:
        reason += ": train longer (more epochs) or lower the target, then rerun"
        warnings.warn(f"DiffROAR run is INVALID: {reason}", RuntimeWarning, stacklevel=2)
    settings = {
        "method": label, "ks": [u.k for u in units[:: 2 * repeats]], "repeats": repeats,
        "seed": seed, "per": per, "fill": fill, "fill_value": float(ds.x_train.double().mean())
        if fill == "scalar" else None, "trainer": dataclasses.asdict(cfg),
        "original_trainer": dataclasses.asdict(dataclasses.replace(ocfg, seed=seed))
        if orig_info else None,
        "model_factory": model_factory if isinstance(model_factory, str) else repr(model_factory),
        "model_kwargs": {k: v if isinstance(v, (int, float, str)) else repr(v)
                         for k, v in kw.items()},
        "adversarial": adversarial.settings() if adversarial is not None else None,
        "original": orig_info, "original_fingerprint": fp, "dataset": ds.name,
        "n_train": ds.n_train, "n_test": ds.n_test, "dataset_fingerprint": ds.fingerprint(),
        "setup_fingerprint": setup.fingerprint(), "valid": not problems,
        "invalid_reason": reason,
        "units_loaded": [u.key for u, r in zip(units, rows, strict=True) if r["from_cache"]],
        "units_trained": [u.key for u, r in zip(units, rows, strict=True) if not r["from_cache"]],
    }
    if cfg_run.backend != "local":  # not part of the setup: a run resumes on the other backend
        settings["engine"] = {"backend": cfg_run.backend}
    cols = [*TABLE_COLUMNS, "seconds", "from_cache"]
    return DiffRoarResult(table[cols], summarize(table), settings)


#: The CLI writes one run of three (standard, robust, random) with its figures and page
#: (``report.shah.write_diffroar_run``): no figures or page function of its own.
SPEC = CheckSpec(
    "diffroar",
    run=diffroar,
    title="DiffROAR, ROAR and KAR with retraining (Shah, Jain, Netrapalli 2021)",
    columns=(*TABLE_COLUMNS, "seconds", "from_cache"),
    figures=None,
    report=None,
    summary=None,
    verdict=None,
    ranking=None,
    cli=Cli("diffroar", "saliency_sanity.cli.shah:add_diffroar",
            "saliency_sanity.cli.shah:_cmd_diffroar", keeps_run_dir=True),
    example=diffroar_example,
)
