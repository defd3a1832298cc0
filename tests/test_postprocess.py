"""Post-processing against plain numpy versions of the formulas (Adebayo et al. 2018)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saliency_sanity import postprocess


def _reduce(m: np.ndarray, absolute: bool) -> np.ndarray:
    m = m.astype(np.float64)
    if absolute:
        m = np.abs(m)
    return m.sum(axis=1) if m.ndim == 4 else m


def ref_absolute(m: np.ndarray) -> np.ndarray:
    x = _reduce(m, True)
    out = []
    for s in x:
        lo, p = s.min(), np.percentile(s, 99)
        out.append(np.clip((s - lo) / (p - lo), 0, 1))
    return np.stack(out)


def ref_diverging(m: np.ndarray) -> np.ndarray:
    x = _reduce(m, False)
    out = []
    for s in x:
        sc = abs(np.percentile(s, 99))
        out.append(np.clip((s + sc) / (2 * sc), 0, 1))
    return np.stack(out)


def ref_minmax(m: np.ndarray) -> np.ndarray:
    x = _reduce(m, False)
    return np.stack([(s - s.min()) / (s.max() - s.min()) for s in x])


def ref_second_moment(m: np.ndarray) -> np.ndarray:
    x = _reduce(m, False)
    return np.stack([s / np.sqrt(np.mean(s**2)) for s in x])


REFS = {
    "absolute": ref_absolute,
    "diverging": ref_diverging,
    "minmax": ref_minmax,
    "second_moment": ref_second_moment,
}
SHAPES = [(3, 3, 28, 28), (3, 1, 28, 28), (2, 3, 224, 224), (3, 28, 28), (4, 300), (2, 1, 8, 8)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", sorted(REFS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_numpy_formula(name, shape, dtype):
    rs = np.random.RandomState(len(shape) + shape[-1])
    m = (rs.randn(*shape) * 1e-3 + 2e-4).astype(dtype)  # gradient-like scale, off-centre
    ours = postprocess.get(name)(torch.from_numpy(m))
    ref = REFS[name](m)
    assert tuple(ours.shape) == ref.shape
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(ours.double().numpy(), ref, atol=tol, rtol=0)


@pytest.mark.parametrize("q", [0.0, 1.0, 37.5, 50.0, 99.0, 99.9, 100.0])
@pytest.mark.parametrize("n", [1, 2, 7, 784, 50176])
def test_percentile_matches_numpy(q, n):
    rs = np.random.RandomState(n)
    x = rs.randn(3, n)
    x[1] = np.round(x[1])  # ties
    ours = postprocess.percentile(torch.from_numpy(x), q).numpy()
    np.testing.assert_allclose(ours, np.percentile(x, q, axis=1), rtol=0, atol=1e-14)


def test_degenerate_maps_follow_documented_conventions():
    const = torch.full((1, 3, 8, 8), 0.7)
    zero = torch.zeros(1, 3, 8, 8)
    np.testing.assert_array_equal(postprocess.absolute(const).numpy(), np.zeros((1, 8, 8)))
    np.testing.assert_array_equal(postprocess.minmax(const).numpy(), np.zeros((1, 8, 8)))
    np.testing.assert_array_equal(postprocess.diverging(zero).numpy(), np.full((1, 8, 8), 0.5))
    np.testing.assert_array_equal(postprocess.second_moment(zero).numpy(), np.zeros((1, 8, 8)))
    # Sparse map: p99 == min (more than 99% zeros): the scale falls back to max - min.
    sparse = np.zeros((1, 1, 20, 20))
    sparse[0, 0, 0, :3] = [1.0, -2.0, 4.0]
    x = np.abs(sparse[0, 0])
    assert np.percentile(x, 99) == x.min()
    np.testing.assert_allclose(
        postprocess.absolute(torch.from_numpy(sparse))[0].numpy(), (x - x.min()) / x.max()
    )
    # Diverging with p99 == 0: the scale falls back to max |m|.
    s = sparse[0, 0]
    np.testing.assert_allclose(
        postprocess.diverging(torch.from_numpy(sparse))[0].numpy(), (s + 4.0) / 8.0
    )


def test_registry_and_errors():
    assert postprocess.list() == ["absolute", "diverging", "minmax", "none", "second_moment"]
    m = torch.randn(2, 3, 4, 4)
    assert torch.equal(postprocess.get("none")(m), m)
    p95 = postprocess.get("absolute", percentile_=95.0)
    ref = _reduce(m.numpy(), True)
    ref = np.stack([np.clip((s - s.min()) / (np.percentile(s, 95) - s.min()), 0, 1) for s in ref])
    np.testing.assert_allclose(p95(m).double().numpy(), ref, atol=1e-6)
    with pytest.raises(KeyError, match="absolute"):
        postprocess.get("abs")
    with pytest.raises(ValueError, match="NaN"):
        postprocess.minmax(torch.tensor([[1.0, float("nan")]]))
    with pytest.raises(ValueError, match="shape"):
        postprocess.minmax(torch.ones(4))
