"""Metrics against scipy / scikit-image references, through one shared tester.

Every expected value comes from an independent reference: scipy.stats (spearmanr, pearsonr,
rankdata), scikit-image (structural_similarity, hog) or plain numpy formulas.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.stats
import torch
from skimage.feature import hog
from skimage.metrics import mean_squared_error, structural_similarity

from saliency_sanity import metrics
from saliency_sanity.metrics import DegenerateMapWarning

BACKENDS = ["numpy", "torch"]


# ----------------------------------------------------------------------------- map zoo
def make_maps(kind: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Maps of one kind, float32: random, many ties, clipped, or sample 1 constant."""
    rs = np.random.RandomState(seed)
    if kind == "random":
        m = rs.randn(*shape)
    elif kind == "ties":  # few distinct values: many ties
        m = np.round(rs.rand(*shape) * 4)
    elif kind == "clipped":  # like absolute maps: clipped at both ends
        m = np.clip(rs.randn(*shape), -0.3, 0.8)
    elif kind == "constant":
        m = rs.randn(*shape)
        m[1] = 0.25
    else:
        raise ValueError(kind)
    return m.astype(np.float32)


def check_against(
    ours: torch.Tensor, ref: list[float] | np.ndarray, tol: float
) -> float:
    """The shared tester: same shape, NaN exactly where the reference is NaN, close elsewhere."""
    ours_np = ours.detach().cpu().numpy()
    ref_np = np.asarray(ref, dtype=np.float64)
    assert ours_np.shape == ref_np.shape
    assert np.array_equal(np.isnan(ours_np), np.isnan(ref_np))
    ok = ~np.isnan(ref_np)
    diff = float(np.abs(ours_np[ok] - ref_np[ok]).max()) if ok.any() else 0.0
    assert diff <= tol, f"max |ours - reference| = {diff:g} > {tol:g}"
    return diff


def pair(kind: str, shape: tuple[int, ...], seed: int = 0):
    a = make_maps(kind, shape, seed)
    b = make_maps(kind, shape, seed + 1)
    return a, b, torch.from_numpy(a), torch.from_numpy(b)


SIZES = [8, 28, 64, 224, 299]


def corr_cases():
    for size in SIZES:
        for ch in (1, 3):
            kinds = ["random", "ties", "clipped"] if size <= 64 else ["ties"]
            for kind in kinds:
                yield size, ch, kind


# ----------------------------------------------------------------------------- correlations
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("size,ch,kind", list(corr_cases()))
def test_spearman_pearson_match_scipy(size, ch, kind, backend):
    a, b, ta, tb = pair(kind, (3, ch, size, size), seed=size + ch)
    ref_s = [scipy.stats.spearmanr(x.ravel(), y.ravel())[0] for x, y in zip(a, b, strict=True)]
    ref_p = [scipy.stats.pearsonr(x.ravel().astype(np.float64), y.ravel())[0]
             for x, y in zip(a, b, strict=True)]  # fmt: skip
    check_against(metrics.spearman(ta, tb, backend=backend), ref_s, 1e-6)
    check_against(metrics.pearson(ta, tb, backend=backend), ref_p, 1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_spearman_flat_float64_and_shapes(backend):
    rs = np.random.RandomState(3)
    a, b = rs.randn(5, 300), np.round(rs.randn(5, 300), 1)  # (B, D) flat maps from an MLP
    ref = [scipy.stats.spearmanr(x, y)[0] for x, y in zip(a, b, strict=True)]
    out = metrics.spearman(torch.from_numpy(a), torch.from_numpy(b), backend=backend)
    assert out.dtype == torch.float64
    check_against(out, ref, 1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_rankdata_matches_scipy_with_ties(backend):
    rs = np.random.RandomState(4)
    x = np.round(rs.rand(4, 1000) * 7).astype(np.float32)
    x[0, :10] = -0.0  # -0.0 and 0.0 tie, as in scipy
    x[0, 10:20] = 0.0
    ours = metrics.rankdata(torch.from_numpy(x), backend=backend).numpy()
    np.testing.assert_array_equal(ours, scipy.stats.rankdata(x, axis=1))


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_spearman_packed_keys_order_every_float(dtype):
    """The CPU path sorts float32 bit patterns packed with the column: signs, zeros of both
    signs, infinities, subnormals, long runs of ties and rows of different tie structure all
    rank as in scipy."""
    rs = np.random.RandomState(7)
    special = np.array([-np.inf, np.inf, -0.0, 0.0, 1e-45, -1e-45, 3.4e38, -3.4e38, 1.0, -1.0])
    a = rs.randn(6, 4000).astype(dtype)
    b = (rs.randn(6, 4000) * 1e3).astype(dtype)
    with np.errstate(over="ignore"):  # +-3.4e38 become +-inf in float16
        a[0, :500] = rs.choice(special, 500).astype(dtype)
    a[1, ::2] = -0.0  # half the row ties at zero, half of those as -0.0
    a[1, 1::4] = 0.0
    b[2] = np.round(b[2] / 500)  # a few large tie groups
    a[3, -1] = a[3, 0]  # a single tie at the row's ends
    ref = [scipy.stats.spearmanr(x, y)[0] for x, y in zip(a, b, strict=True)]
    check_against(metrics.spearman(torch.from_numpy(a), torch.from_numpy(b)), ref, 1e-12)
    np.testing.assert_array_equal(
        metrics.rankdata(torch.from_numpy(a)).numpy(), scipy.stats.rankdata(a, axis=1)
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fn", ["spearman", "pearson"])
def test_constant_map_gives_nan_and_one_warning(fn, backend):
    a, b, ta, tb = pair("constant", (4, 28, 28))
    b[3] = -1.0
    tb = torch.from_numpy(b)
    ref_fn = scipy.stats.spearmanr if fn == "spearman" else scipy.stats.pearsonr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy's own ConstantInputWarning
        ref = [ref_fn(x.ravel(), y.ravel())[0] for x, y in zip(a, b, strict=True)]
    assert np.isnan(ref[1]) and np.isnan(ref[3])
    with pytest.warns(DegenerateMapWarning, match=r"2 of 4 samples") as rec:
        out = getattr(metrics, fn)(ta, tb, backend=backend)
    assert len([w for w in rec if issubclass(w.category, DegenerateMapWarning)]) == 1
    check_against(out, ref, 1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_mse_matches_numpy(backend):
    a, b, ta, tb = pair("random", (3, 3, 28, 28))
    ref = ((a.astype(np.float64) - b) ** 2).reshape(3, -1).mean(axis=1)
    check_against(metrics.mse(ta, tb, backend=backend), ref, 1e-6)
    ref = [mean_squared_error(x, y) for x, y in zip(a, b, strict=True)]
    check_against(metrics.mse(ta, tb, backend=backend), ref, 1e-6)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    ref = [mean_squared_error(x, y) for x, y in zip(a64, b64, strict=True)]
    out = metrics.mse(torch.from_numpy(a64), torch.from_numpy(b64), backend=backend)
    check_against(out, ref, 1e-13)


# ----------------------------------------------------------------------------- SSIM
def ssim_cases():
    # (size, channels, kind, window, sigma)
    yield 8, 1, "random", 7, 1.5  # window above the image: Gaussian wider than the crop
    yield 8, 3, "ties", 5, 1.0
    for ch in (1, 3):
        for kind in ("random", "ties", "clipped", "constant"):
            yield 28, ch, kind, 11, 1.5
    yield 28, 1, "random", 5, 1.5  # the paper's appendix window
    yield 64, 1, "clipped", 15, 1.5  # crop wider than the filter
    yield 64, 3, "random", 11, 1.0
    yield 224, 1, "random", 11, 1.5
    yield 299, 3, "ties", 11, 1.5


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("size,ch,kind,window,sigma", list(ssim_cases()))
def test_ssim_matches_skimage(size, ch, kind, window, sigma, backend):
    bsz = 2 if size >= 224 else 3
    a, b, ta, tb = pair(kind, (bsz, ch, size, size), seed=size)
    a, b = a[:, 0] if ch == 1 else a, b[:, 0] if ch == 1 else b
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    kw = dict(gaussian_weights=True, sigma=sigma, use_sample_covariance=False, win_size=window)
    if ch == 3:
        kw["channel_axis"] = 0
    ref = [structural_similarity(x, y, data_range=1.5, **kw) for x, y in zip(a, b, strict=True)]
    out = metrics.ssim(ta, tb, window=window, sigma=sigma, data_range=1.5, backend=backend)
    check_against(out, ref, 1e-4)
    # data_range=None: per sample, the joint range of both maps
    rng = [max(x.max(), y.max()) - min(x.min(), y.min()) for x, y in zip(a, b, strict=True)]
    with np.errstate(invalid="ignore"):
        ref = [structural_similarity(x, y, data_range=float(r), **kw)
               for x, y, r in zip(a, b, rng, strict=True)]  # fmt: skip
    if kind == "constant":  # both maps of sample 1 constant and equal: zero range, NaN
        assert np.isnan(ref[1])
        with pytest.warns(DegenerateMapWarning, match="1 of 3 samples"):
            out = metrics.ssim(ta, tb, window=window, sigma=sigma, backend=backend)
    else:
        out = metrics.ssim(ta, tb, window=window, sigma=sigma, backend=backend)
    check_against(out, ref, 1e-4)


def test_ssim_float64_exact():
    a, b, _, _ = pair("random", (2, 40, 40))
    a, b = a.astype(np.float64), b.astype(np.float64)
    ref = [structural_similarity(x, y, gaussian_weights=True, sigma=1.5, data_range=2.0,
                                 use_sample_covariance=False) for x, y in zip(a, b, strict=True)]
    for backend in BACKENDS:
        out = metrics.ssim(torch.from_numpy(a), torch.from_numpy(b), data_range=2.0,
                           backend=backend)  # fmt: skip
        check_against(out, ref, 1e-10)


# ----------------------------------------------------------------------------- HOG
def hog_cases():
    # (size, channels, kind, settings)
    paper = dict(orientations=9, pixels_per_cell=(16, 16), cells_per_block=(3, 3))
    for ch in (1, 3):
        for kind in ("random", "ties", "clipped"):
            yield 64, ch, kind, paper
    yield 28, 1, "random", dict(orientations=9, pixels_per_cell=(9, 9), cells_per_block=(3, 3))
    yield 28, 3, "ties", dict(orientations=9, pixels_per_cell=(9, 9), cells_per_block=(3, 3))
    yield 8, 1, "random", dict(orientations=9, pixels_per_cell=(2, 2), cells_per_block=(3, 3))
    yield 64, 1, "random", dict(orientations=7, pixels_per_cell=(7, 9), cells_per_block=(2, 2),
                                block_norm="L1")  # fmt: skip
    yield 64, 1, "clipped", dict(orientations=11, pixels_per_cell=(8, 8),
                                 cells_per_block=(1, 2), block_norm="L1-sqrt")  # fmt: skip
    yield 64, 3, "random", dict(orientations=9, pixels_per_cell=(8, 8), cells_per_block=(2, 2),
                                block_norm="L2")  # fmt: skip
    yield 224, 1, "random", paper
    yield 299, 3, "ties", paper


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("size,ch,kind,settings", list(hog_cases()))
def test_hog_features_match_skimage(size, ch, kind, settings, backend):
    bsz = 2 if size >= 224 else 3
    m = make_maps(kind, (bsz, ch, size, size), seed=size + ch)
    m = m[:, 0] if ch == 1 else m
    extra = {"channel_axis": 0} if ch == 3 else {}
    ref = np.stack([hog(x, **settings, **extra) for x in m])
    ours = metrics.hog_features(torch.from_numpy(m), **settings, backend=backend)
    assert ours.shape == ref.shape and ours.dtype == torch.float32
    assert float(np.abs(ours.numpy() - ref).max()) <= 1e-4
    if size == 64 and kind == "random" and ch == 1:
        # sqrt transform, float64 maps
        m64 = np.abs(m).astype(np.float64)
        ref = np.stack([hog(x, transform_sqrt=True, **settings) for x in m64])
        ours = metrics.hog_features(torch.from_numpy(m64), transform_sqrt=True, **settings,
                                    backend=backend)  # fmt: skip
        # scikit-image sums each cell in float32 even for float64 maps
        assert float(np.abs(ours.numpy() - ref).max()) <= 1e-6


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("correlation", ["pearson", "spearman"])
def test_hog_similarity_matches_skimage(correlation, backend):
    a, b, ta, tb = pair("clipped", (3, 64, 64))
    ref_fn = scipy.stats.pearsonr if correlation == "pearson" else scipy.stats.spearmanr
    ref = [ref_fn(hog(x, pixels_per_cell=(16, 16)), hog(y, pixels_per_cell=(16, 16)))[0]
           for x, y in zip(a, b, strict=True)]  # fmt: skip
    out = metrics.hog_similarity(ta, tb, correlation=correlation, backend=backend)
    check_against(out, ref, 1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_hog_similarity_constant_map_is_nan(backend):
    a, b, ta, tb = pair("constant", (3, 64, 64))
    ppc = (16, 16)
    ref = [scipy.stats.pearsonr(hog(x, pixels_per_cell=ppc), hog(y, pixels_per_cell=ppc))[0]
           if x.std() > 0 else np.nan for x, y in zip(a, b, strict=True)]  # fmt: skip
    with pytest.warns(DegenerateMapWarning, match="1 of 3"):
        out = metrics.hog_similarity(ta, tb, backend=backend)
    check_against(out, ref, 1e-6)


# ----------------------------------------------------------------------------- errors, RNG
@pytest.mark.parametrize(
    "fn", [metrics.spearman, metrics.pearson, metrics.mse, metrics.ssim, metrics.hog_similarity]
)
def test_shape_mismatch_and_nan_raise(fn):
    a = torch.rand(2, 64, 64)
    with pytest.raises(ValueError, match="same shape"):
        fn(a, torch.rand(2, 64, 63))
    b = a.clone()
    b[1, 3, 4] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        fn(a, b)


def test_image_metrics_reject_flat_maps_and_small_maps():
    flat = torch.rand(4, 100)
    with pytest.raises(ValueError, match="image"):
        metrics.ssim(flat, flat)
    with pytest.raises(ValueError):
        metrics.hog_features(flat)
    with pytest.raises(ValueError, match="window 11 exceeds"):
        metrics.ssim(torch.rand(2, 8, 8), torch.rand(2, 8, 8))
    with pytest.raises(ValueError, match="too small"):
        metrics.hog_features(torch.rand(2, 28, 28))  # 16x16 cells: no 3x3 block fits


def test_metrics_leave_global_rng_alone(global_rng_guard):
    a, b, ta, tb = pair("ties", (2, 64, 64))
    for backend in BACKENDS:
        metrics.spearman(ta, tb, backend=backend)
        metrics.ssim(ta, tb, backend=backend)
        metrics.hog_similarity(ta, tb, backend=backend)


def test_metadata_attributes():
    assert metrics.spearman.range == (-1.0, 1.0) and metrics.spearman.higher_is_better
    assert metrics.mse.higher_is_better is False and metrics.mse.range == (0.0, float("inf"))
    assert metrics.ssim.requires_image and not metrics.pearson.requires_image
