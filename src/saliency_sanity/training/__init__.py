"""A small, deterministic, resumable trainer (true or seeded-permuted labels) with a cache.

Example:
    >>> from saliency_sanity import data, training
    >>> ds = data.load("mnist", n_train=64, n_test=32)
    >>> cfg = training.TrainConfig(epochs=1, target_train_acc=None)
    >>> res = training.train("mnist_cnn", ds, cfg, cache_dir=False, progress=False,
    ...                      model_kwargs={"width": 0.125})
    >>> res.epochs, res.from_cache, 0.0 <= res.train_acc <= 1.0
    (1, False, True)
"""

from __future__ import annotations

from .adversarial import PGD, robust_accuracy
from .config import TrainConfig, TrainResult
from .trainer import (
    accuracy,
    cache_key,
    default_cache_dir,
    permuted_labels,
    train,
)

__all__ = [
    "PGD",
    "TrainConfig",
    "TrainResult",
    "accuracy",
    "cache_key",
    "default_cache_dir",
    "permuted_labels",
    "robust_accuracy",
    "train",
]
