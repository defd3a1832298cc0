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


def ref_diverging(m: np.ndarray, low: float = -1.0) -> np.ndarray:
    """The authors' visualization formula: s = |p99|, (m + s) / (2 s), clipped to [-1, 1]."""
    x = _reduce(m, False)
    out = []
    for s in x:
        sc = abs(np.percentile(s, 99))
        out.append(np.clip((s + sc) / (2 * sc), low, 1))
    return np.stack(out)


def ref_diverging_display(m: np.ndarray) -> np.ndarray:
    """The display variant: the same formula clipped to [0, 1]."""
    return ref_diverging(m, low=0.0)


def ref_max_abs(m: np.ndarray) -> np.ndarray:
    x = _reduce(m, True)
    return np.stack([s / np.abs(s).max() for s in x])


def ref_signed_max_abs(m: np.ndarray) -> np.ndarray:
    x = _reduce(m, False)
    return np.stack([s / np.abs(s).max() for s in x])


def ref_minmax(m: np.ndarray) -> np.ndarray:
    x = _reduce(m, False)
    return np.stack([(s - s.min()) / (s.max() - s.min()) for s in x])


def ref_second_moment(m: np.ndarray) -> np.ndarray:
    x = _reduce(m, False)
    return np.stack([s / np.sqrt(np.mean(s**2)) for s in x])


REFS = {
    "absolute": ref_absolute,
    "diverging": ref_diverging,
    "diverging_display": ref_diverging_display,
    "max_abs": ref_max_abs,
    "signed_max_abs": ref_signed_max_abs,
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
    np.testing.assert_array_equal(
        postprocess.diverging_display(zero).numpy(), np.full((1, 8, 8), 0.5)
    )
    for name in ("max_abs", "signed_max_abs"):
        np.testing.assert_array_equal(postprocess.get(name)(zero).numpy(), np.zeros((1, 8, 8)))
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
    assert postprocess.list() == [
        "absolute", "diverging", "diverging_display", "max_abs", "minmax", "none",
        "second_moment", "signed_max_abs",
    ]  # fmt: skip
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


# ------------------------------------------------------------ the authors' diverging formula
def _heavy_negative_tails(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Maps whose negative values reach far below -s = -|p99| (down to about -5 s)."""
    rs = np.random.RandomState(seed)
    m = rs.rand(*shape)  # in [0, 1): p99 of the channel sum is positive
    neg = rs.rand(*shape) < 0.3
    m[neg] = -rs.rand(int(neg.sum())) * 5.0 * (shape[1] if len(shape) == 4 else 1)
    return m


@pytest.mark.parametrize("shape", [(3, 3, 28, 28), (2, 1, 16, 16), (3, 28, 28), (4, 300)])
def test_diverging_is_the_authors_formula_on_heavy_negative_tails(shape):
    m = _heavy_negative_tails(shape, seed=sum(shape))
    x = _reduce(m, False)
    s = np.abs(np.percentile(x.reshape(x.shape[0], -1), 99, axis=1))
    s = s.reshape(-1, *([1] * (x.ndim - 1)))
    assert (x < -3 * s).any() and (x > -3 * s).any()  # tails reach past the clip at -1
    ours = postprocess.diverging(torch.from_numpy(m)).numpy()
    np.testing.assert_allclose(ours, np.clip((x + s) / (2 * s), -1, 1), atol=1e-6, rtol=0)
    assert ours.min() == -1.0 and ours.max() == 1.0
    # values in [-3 s, -s] keep their order: they are not tied at 0 as in the display variant
    mid = (x > -3 * s) & (x < -s)
    assert len(np.unique(ours[mid])) == mid.sum()
    disp = postprocess.diverging_display(torch.from_numpy(m)).numpy()
    np.testing.assert_allclose(disp, np.clip((x + s) / (2 * s), 0, 1), atol=1e-6, rtol=0)
    assert (disp[x <= -s] == 0).all()


def test_diverging_float32_matches_float64_transcription():
    m = _heavy_negative_tails((2, 3, 32, 32), seed=5).astype(np.float32)
    ours = postprocess.diverging(torch.from_numpy(m)).double().numpy()
    np.testing.assert_allclose(ours, ref_diverging(m), atol=1e-6, rtol=0)


def test_max_abs_hand_values():
    m = torch.tensor([[[[1.0, -2.0], [0.5, 0.0]], [[-3.0, 0.0], [0.5, 1.0]]]])  # (1, 2, 2, 2)
    # channel sums: |m| -> [[4, 2], [1, 1]]; signed -> [[-2, -2], [1, 1]]
    torch.testing.assert_close(postprocess.max_abs(m), torch.tensor([[[1.0, 0.5], [0.25, 0.25]]]))
    torch.testing.assert_close(
        postprocess.signed_max_abs(m), torch.tensor([[[-1.0, -1.0], [0.5, 0.5]]])
    )
    flat = torch.tensor([[0.5, -0.25, 0.125], [2.0, 4.0, -8.0]])
    torch.testing.assert_close(
        postprocess.signed_max_abs(flat), torch.tensor([[1.0, -0.5, 0.25], [0.25, 0.5, -1.0]])
    )
    torch.testing.assert_close(
        postprocess.max_abs(flat), torch.tensor([[1.0, 0.5, 0.25], [0.25, 0.5, 1.0]])
    )
