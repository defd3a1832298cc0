"""Grid images for the controlled-setting localization check (Rao, Boehle, Schiele 2022).

A grid is an n x n mosaic (row-major cells) of images of n^2 distinct classes, each classified
correctly by every given model with softmax probability >= ``confidence``; no image is used
twice. Where the answer is known by construction, a map can be scored by how much of its
positive mass lies in the cell of the class it explains.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._guard import model_guard
from .._io import atomic_write


@dataclass
class GridSet:
    """Grids of images and the class of each cell.

    Attributes:
        images: (G, C, n*H, n*W) float tensor.
        labels: (G, n^2) LongTensor, cells row-major.
        sources: (G, n^2) LongTensor, the index of each cell's image in the source data
            (-1 when unknown).

    Example:
        >>> g = GridSet(torch.zeros(1, 1, 4, 4), torch.tensor([[0, 1, 2, 3]]),
        ...             torch.tensor([[5, 6, 7, 8]]))
        >>> g.n, g.cell, len(g)
        (2, (2, 2), 1)
    """

    images: torch.Tensor
    labels: torch.Tensor
    sources: torch.Tensor

    def __post_init__(self) -> None:
        check_grid_tensors(self.images, self.labels, self.sources)

    @property
    def n(self) -> int:
        """Cells per side."""
        return int(round(self.labels.shape[1] ** 0.5))

    @property
    def cell(self) -> tuple[int, int]:
        """(H, W) of one cell."""
        return self.images.shape[2] // self.n, self.images.shape[3] // self.n

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def save(self, path: str | os.PathLike) -> Path:
        """Write an ``.npz`` (images, labels, sources) atomically."""
        arrays = {"images": self.images.detach().cpu().numpy(),
                  "labels": self.labels.cpu().numpy(), "sources": self.sources.cpu().numpy()}

        def write(p: Path) -> None:
            with open(p, "wb") as fh:
                np.savez_compressed(fh, **arrays)

        return atomic_write(path, write)


def check_grid_tensors(images: Any, labels: Any, sources: Any) -> None:
    """Raise a clear error unless the three arrays form a grid set."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
        shape = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
        raise ValueError(f"grid images must be a float tensor (G, C, n*H, n*W); got {shape}")
    if not isinstance(labels, torch.Tensor) or labels.ndim != 2 or labels.shape[0] != len(images):
        raise ValueError(f"grid labels must have shape ({len(images)}, n^2); got "
                         f"{tuple(getattr(labels, 'shape', ()))}")
    n = int(round(labels.shape[1] ** 0.5))
    if n < 2 or n * n != labels.shape[1]:
        raise ValueError(f"grid labels must hold n^2 cells with n >= 2; got {labels.shape[1]}")
    if images.shape[2] % n or images.shape[3] % n:
        raise ValueError(f"grid images of size {tuple(images.shape[2:])} do not split into "
                         f"{n} x {n} equal cells")
    if tuple(sources.shape) != tuple(labels.shape):
        raise ValueError(f"grid sources must have the labels' shape {tuple(labels.shape)}")


def load_grids(path: str | os.PathLike) -> GridSet:
    """Read a grid set written by :meth:`GridSet.save`.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "g.npz"
        >>> _ = GridSet(torch.zeros(1, 1, 4, 4), torch.tensor([[0, 1, 2, 3]]),
        ...             torch.tensor([[5, 6, 7, 8]])).save(p)
        >>> load_grids(p).labels.tolist()
        [[0, 1, 2, 3]]
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no grid file at {p}")
    try:
        with np.load(p, allow_pickle=False) as z:
            files = set(getattr(z, "files", ()))
            arrays = {k: z[k] for k in ("images", "labels", "sources") if k in files}
    except (OSError, EOFError, ValueError) as err:
        raise ValueError(f"{p} is not a readable grid set (.npz): {err}") from err
    missing = {"images", "labels", "sources"} - set(arrays)
    if missing:
        raise ValueError(f"{p} is not a grid set: missing {sorted(missing)}")
    images, labels, sources = arrays["images"], arrays["labels"], arrays["sources"]
    return GridSet(torch.from_numpy(images).float(), torch.from_numpy(labels).long(),
                   torch.from_numpy(sources).long())


def confident(models: Sequence[nn.Module], x: torch.Tensor, y: torch.Tensor,
              confidence: float, batch_size: int = 256) -> torch.Tensor:
    """Mask of the images every model classifies as ``y`` with softmax >= ``confidence``."""
    ok = torch.ones(len(x), dtype=torch.bool)
    for model in models:
        with model_guard(model), torch.no_grad():
            dev = next((p.device for p in model.parameters()), x.device)
            for s in range(0, len(x), batch_size):
                logits = model(x[s:s + batch_size].to(dev))
                if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
                    raise ValueError("make_grids: the model must return logits (B, classes)")
                if int(y.max()) >= logits.shape[1]:
                    raise ValueError(f"make_grids: labels go up to {int(y.max())} but the model "
                                     f"has {logits.shape[1]} classes")
                p = torch.softmax(logits.double(), dim=1).cpu()
                yy = y[s:s + batch_size]
                good = (p.argmax(1) == yy) & (p.gather(1, yy.view(-1, 1))[:, 0] >= confidence)
                ok[s:s + batch_size] &= good
    return ok


def _feasible(remaining: np.ndarray, grids: int, k: int) -> bool:
    """Whether ``grids`` more grids of ``k`` distinct classes can be drawn (a class gives at
    most one image per grid)."""
    return int(np.minimum(remaining, grids).sum()) >= k * grids


def make_grids(model: nn.Module | Sequence[nn.Module], x: torch.Tensor, y: Any, n: int = 2,
               count: int = 100, confidence: float = 0.99, seed: int = 0,
               batch_size: int = 256) -> GridSet:
    """Build ``count`` n x n grids of confidently classified images of n^2 distinct classes.

    Args:
        model: a classifier, or a list of them: every one must predict the true class with
            softmax probability >= ``confidence`` (the paper: VGG-11 and ResNet-18, 0.99).
        x: images (N, C, H, W); y: their labels (N,).
        n: cells per side (>= 2; the paper uses 2 and 3).
        count: number of grids.
        seed: seeds the choice of classes, positions and images (numpy Generator).

    Each grid draws n^2 classes among those with images left (weighted by how many are left,
    so that as many grids as possible can be built), shuffles their positions and takes one
    unused image of each. Too few confident images: a ValueError with the count per class.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 4))
        >>> with torch.no_grad():
        ...     _ = net[1].weight.copy_(torch.eye(4) * 20); _ = net[1].bias.zero_()
        >>> x = torch.eye(4).repeat(2, 1).view(8, 1, 2, 2)
        >>> g = make_grids(net, x, torch.arange(4).repeat(2), n=2, count=2)
        >>> g.images.shape, sorted(g.labels[0].tolist())
        (torch.Size([2, 1, 4, 4]), [0, 1, 2, 3])
    """
    models = list(model) if isinstance(model, (list, tuple)) else [model]
    if not models or not all(isinstance(m, nn.Module) for m in models):
        raise TypeError("make_grids: model must be an nn.Module or a list of them")
    if not isinstance(n, int) or isinstance(n, bool) or n < 2:
        raise ValueError(f"make_grids: n (cells per side) must be an integer >= 2, got {n!r}")
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ValueError(f"make_grids: count must be a positive integer, got {count!r}")
    if not 0.0 <= float(confidence) <= 1.0:
        raise ValueError(f"make_grids: confidence must lie in [0, 1], got {confidence}")
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"make_grids needs images (N, C, H, W) as a float tensor; got {shape}")
    yt = torch.as_tensor(y).long().cpu()
    if yt.ndim != 1 or len(yt) != len(x):
        raise ValueError(f"make_grids: y must hold one label per image ({len(x)}), got shape "
                         f"{tuple(yt.shape)}")
    if len(yt) and int(yt.min()) < 0:
        raise ValueError("make_grids: labels must be class indices >= 0")
    ok = confident(models, x, yt, float(confidence), batch_size)
    k = n * n
    classes = sorted(int(c) for c in yt.unique())
    pools = {c: np.flatnonzero((ok & (yt == c)).numpy()) for c in classes}
    counts = {c: len(v) for c, v in pools.items()}
    remaining = np.array([counts[c] for c in classes])
    if not _feasible(remaining, count, k):
        have = sum(1 for v in counts.values() if v)
        raise ValueError(
            f"make_grids: too few confident images for {count} grids of {n}x{n} distinct "
            f"classes (softmax >= {confidence}): confident images per class {counts} "
            f"({have} classes have any; a grid needs {k}). Lower count or confidence, or "
            "give more images.")
    rng = np.random.default_rng(seed)
    for c in classes:
        pools[c] = list(rng.permutation(pools[c]))
    cells_h, cells_w = x.shape[2], x.shape[3]
    images = torch.empty(count, x.shape[1], n * cells_h, n * cells_w, dtype=x.dtype)
    labels = torch.empty(count, k, dtype=torch.long)
    sources = torch.empty(count, k, dtype=torch.long)
    for g in range(count):
        avail = np.flatnonzero(remaining > 0)
        p = remaining[avail] / remaining[avail].sum()
        pick = rng.choice(avail, size=k, replace=False, p=p)
        left = remaining.copy()
        left[pick] -= 1
        if not _feasible(left, count - g - 1, k):  # keep the rest buildable: largest first
            order = np.lexsort((rng.random(len(remaining)), -remaining))
            pick = order[:k]
        pick = rng.permutation(pick)
        for cell, ci in enumerate(pick):
            c = classes[int(ci)]
            idx = int(pools[c].pop())
            remaining[ci] -= 1
            r, q = divmod(cell, n)
            images[g, :, r * cells_h:(r + 1) * cells_h, q * cells_w:(q + 1) * cells_w] = x[idx]
            labels[g, cell], sources[g, cell] = c, idx
    return GridSet(images, labels, sources)
