"""The tiny inputs of the checks' examples (:class:`~saliency_sanity.results.spec.Example`):
a quarter-width MNIST CNN and a few MNIST test images, the same for every check."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .. import data, models
from ..results.spec import Example


def tiny_model(seed: int = 0) -> nn.Module:
    """``mnist_cnn(width=0.25, seed=seed)`` in eval mode.

    Example:
        >>> tiny_model().training
        False
    """
    return models.mnist_cnn(width=0.25, seed=seed).eval()


def tiny_data() -> Any:
    """``data.load("mnist", n_train=8, n_test=6, seed=0)``.

    Example:
        >>> tuple(tiny_data().x_test.shape)
        (6, 1, 28, 28)
    """
    return data.load("mnist", n_train=8, n_test=6, seed=0)


def tiny_inputs(n: int = 4) -> torch.Tensor:
    """The first ``n`` test images of :func:`tiny_data`.

    Example:
        >>> tuple(tiny_inputs(2).shape)
        (2, 1, 28, 28)
    """
    return tiny_data().x_test[:n]


def diffroar_example() -> Example:
    """The DiffROAR check's tiny run: an MLP of width 0.02, one epoch, k in (1, 0.5), one
    repeat, on :func:`tiny_data`; ``bad``: a k outside (0, 1].

    Example:
        >>> diffroar_example().bad
        {'ks': (1.0, 0.0)}
    """
    from .. import training

    return Example(args=("mnist_mlp", tiny_data(), None),
                   kwargs={"method": "gradient", "ks": (1.0, 0.5), "repeats": 1,
                           "model_kwargs": {"width": 0.02}, "progress": False, "cache_dir": False,
                           "trainer": training.TrainConfig(epochs=1, target_train_acc=None,
                                                           batch_size=32)},
                   bad={"ks": (1.0, 0.0)})
