"""The training cache seen from outside a training run: look a finished run up without training,
and record a run trained elsewhere (a Ray worker) as if it had been trained here.

A run trained elsewhere is one unit of work: this process looks it up first
(:func:`cached_result`), sends only the missing runs away (trained with ``cache_dir=False``) and
writes what comes back (:func:`store_result`), so only this process writes the cache and an
interrupted job keeps the trainings already finished.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Literal

import torch

from .._io import atomic_save, write_json
from ..data import Dataset
from .config import TrainConfig, TrainResult
from .trainer import (
    Factory,
    _build,
    _describe,
    _load_checkpoint,
    _state_hash,
    cache_key,
    default_cache_dir,
)


def _path(factory: Factory, dataset: Dataset, config: TrainConfig,
          cache_dir: str | os.PathLike[str] | None, model_kwargs: dict[str, Any],
          device: str | torch.device | None, adversarial: Any = None) -> tuple[str, Path]:
    kwargs = dict(model_kwargs)
    if isinstance(factory, str):
        kwargs.setdefault("num_classes", dataset.num_classes)
    model = _build(factory, kwargs, config.seed)
    key = cache_key(factory, dataset, config, kwargs, _state_hash(model), device=device,
                    adversarial=adversarial)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return key, root / f"{key}.pt"


def cached_result(factory: Factory, dataset: Dataset, config: TrainConfig,
                  cache_dir: str | os.PathLike[str] | None | Literal[False] = None, *,
                  model_kwargs: dict[str, Any] | None = None,
                  device: str | torch.device | None = None,
                  adversarial: Any = None) -> TrainResult | None:
    """The finished run in the cache, loaded as ``train`` would load it; None when there is
    none (or ``cache_dir=False``). Nothing is trained.

    Example:
        >>> from saliency_sanity import data
        >>> ds = data.load("mnist", n_train=16, n_test=16)
        >>> cached_result("mnist_mlp", ds, TrainConfig(epochs=1), cache_dir=False) is None
        True
    """
    if cache_dir is False:
        return None
    key, path = _path(factory, dataset, config, cache_dir, dict(model_kwargs or {}), device,
                      adversarial)
    state = _load_checkpoint(path, key)
    if state is None or not state["done"]:
        return None
    from .trainer import train

    return train(factory, dataset, config, cache_dir=cache_dir, progress=False,
                 model_kwargs=model_kwargs, device=device, adversarial=adversarial)


def store_result(result: TrainResult, factory: Factory, dataset: Dataset, config: TrainConfig,
                 cache_dir: str | os.PathLike[str] | None | Literal[False] = None, *,
                 model_kwargs: dict[str, Any] | None = None,
                 device: str | torch.device | None = None,
                 adversarial: Any = None) -> TrainResult:
    """Record ``result`` (trained elsewhere with the same arguments, ``cache_dir=False``) in
    the cache as a finished run, atomically; ``result`` with its checkpoint path."""
    if cache_dir is False:
        return result
    kwargs = dict(model_kwargs or {})
    key, path = _path(factory, dataset, config, cache_dir, kwargs, device, adversarial)
    if key != result.key:
        raise ValueError(f"the result belongs to run {result.key}, not to {key}")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in result.model.state_dict().items()}
    atomic_save(path, {"key": key, "model": state, "history": result.history, "done": True,
                       "epoch": result.epochs, "train_acc": result.train_acc,
                       "test_acc": result.test_acc, "reached_target": result.reached_target,
                       "robust_test_acc": result.robust_test_acc})
    if isinstance(factory, str):
        kwargs.setdefault("num_classes", dataset.num_classes)
    write_json(path.with_suffix(".json"), {
        "key": key, "model": _describe(factory, kwargs),
        "dataset": {"name": dataset.name, "n_train": dataset.n_train,
                    "n_test": dataset.n_test, "seed": dataset.seed},
        "config": dataclasses.asdict(config), "done": True, "history": result.history})
    return dataclasses.replace(result, checkpoint=path)
