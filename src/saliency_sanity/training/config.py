"""The settings of one training run (:class:`TrainConfig`) and what it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (all of them enter the cache key).

    Defaults are a CPU-friendly recipe (Adam lr 1e-3, batch 64) rather than the authors'
    (Adam lr 1e-4, batch 50, 100 epochs random / 50 true labels). ``epochs`` is a budget: training
    stops earlier once the training accuracy (measured on the whole training set in eval mode
    after an epoch) reaches ``target_train_acc``; ``None`` runs every epoch. ``label_seed`` = None
    trains on the true labels, an int on the labels permuted by ``permuted_labels(y, label_seed)``.

    Example:
        >>> TrainConfig.random_labels(label_seed=1).target_train_acc
        0.95
        >>> TrainConfig(epochs=3).label_seed is None
        True
    """

    epochs: int = 100
    lr: float = 1e-3
    batch_size: int = 64
    weight_decay: float = 0.0
    target_train_acc: float | None = 0.95
    seed: int = 0
    label_seed: int | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        if self.target_train_acc is not None and not 0.0 < self.target_train_acc <= 1.0:
            raise ValueError(f"target_train_acc must be in (0, 1], got {self.target_train_acc}")

    @classmethod
    def random_labels(cls, label_seed: int = 0, **overrides: Any) -> TrainConfig:
        """Memorization recipe: permuted labels, stop at 95% training accuracy, 100-epoch budget.

        Example:
            >>> TrainConfig.random_labels(3, epochs=60).epochs
            60
        """
        settings: dict[str, Any] = {"epochs": 100, "target_train_acc": 0.95}
        settings.update(overrides)
        return cls(label_seed=label_seed, **settings)

    @classmethod
    def true_labels(cls, **overrides: Any) -> TrainConfig:
        """True-label recipe: stop at 99% training accuracy, 30-epoch budget.

        Example:
            >>> TrainConfig.true_labels().target_train_acc
            0.99
        """
        settings: dict[str, Any] = {"epochs": 30, "target_train_acc": 0.99}
        settings.update(overrides)
        return cls(label_seed=None, **settings)


@dataclass
class TrainResult:
    """What ``train`` returns. ``model`` is in eval mode; accuracies are fractions in [0, 1].

    ``train_acc`` is measured against the labels the model was trained on (permuted ones for
    ``label_seed`` != None); ``test_acc`` always against the true test labels. ``epochs`` is the
    number of epochs trained in total (across resumes); ``history`` holds one dict per epoch
    (epoch, loss, train_acc, test_acc, seconds).
    """

    model: nn.Module
    train_acc: float
    test_acc: float
    epochs: int
    reached_target: bool
    from_cache: bool
    key: str
    history: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: Path | None = None
    #: accuracy on PGD-perturbed test images (adversarial training only), else None
    robust_test_acc: float | None = None
