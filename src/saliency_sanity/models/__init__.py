"""Reference architectures of Adebayo et al. 2018 (MNIST CNN and MLP), with a width factor.

Models are looked up by name through a registry; every factory takes ``width``,
``num_classes`` and ``seed`` and never touches torch's global RNG (weights come from a
``torch.Generator`` seeded with ``seed``).

Example:
    >>> from saliency_sanity import models
    >>> models.list()
    ['mnist_cnn', 'mnist_mlp']
    >>> net = models.get("mnist_cnn", width=0.25, seed=1)
    >>> import torch
    >>> net(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .._registry import Registry
from .mnist import MnistCNN, MnistMLP, init_default_, scaled

MODELS: Registry[nn.Module] = Registry("model")


@MODELS.register("mnist_cnn")
def mnist_cnn(width: float = 1.0, num_classes: int = 10, seed: int = 0,
              input_size: tuple[int, int] = (28, 28)) -> nn.Module:
    """The paper's MNIST CNN: conv5x5x32-pool-conv5x5x64-pool-fc1024-fc10 (channels x ``width``).

    Example:
        >>> net = mnist_cnn(width=0.5)
        >>> [net.conv1.out_channels, net.conv2.out_channels, net.fc1.out_features]
        [16, 32, 512]
    """
    return MnistCNN(width=width, num_classes=num_classes, seed=seed, input_size=input_size)


@MODELS.register("mnist_mlp")
def mnist_mlp(width: float = 1.0, num_classes: int = 10, seed: int = 0) -> nn.Module:
    """The paper's MNIST MLP: 784-2500-1500-500-10 (hidden sizes x ``width``).

    Example:
        >>> net = mnist_mlp(width=0.1)
        >>> [net.fc1.out_features, net.fc2.out_features, net.fc3.out_features]
        [250, 150, 50]
    """
    return MnistMLP(width=width, num_classes=num_classes, seed=seed)


def get(name: str, **settings: Any) -> nn.Module:
    """Build a registered model by name; unknown names raise a ``KeyError`` listing known ones.

    Example:
        >>> type(get("mnist_mlp", width=0.1)).__name__
        'MnistMLP'
    """
    return MODELS.get(name, **settings)


def list() -> list[str]:
    """Names of the registered models.

    Example:
        >>> "mnist_cnn" in list()
        True
    """
    return MODELS.list()


def register(name: str):  # type: ignore[no-untyped-def]
    """Register a model factory (a callable taking ``width``, ``num_classes``, ``seed``)."""
    return MODELS.register(name)


__all__ = [
    "MODELS",
    "MnistCNN",
    "MnistMLP",
    "get",
    "init_default_",
    "list",
    "mnist_cnn",
    "mnist_mlp",
    "register",
    "scaled",
]
