"""Faithfulness by perturbation (``saliency_sanity.faithfulness``): exact against Quantus 0.6.0
once the settings are aligned, hand-derived values on a linear model, the model left unchanged,
determinism without the global RNG, the bad inputs, and MoRF of the gradient against a random map
on a briefly trained CNN.

Alignments with Quantus (each stated where used):
- Quantus' ``RegionPerturbation`` returns f(x_0) - f(x_k) for k = 1..L: ours are the scores
  f(x_k) for k = 0..L, so Quantus' values are ``ours[:, :1] - ours[:, 1:]``; its
  ``PixelFlipping`` returns f(x_k) for k = 1..L: ``ours[:, 1:]``.
- Quantus' ``perturb_baseline="black"`` is each sample's minimum: ours ``replacement="min"``
  (Quantus' ``0.0`` is our ``"black"``).
- Quantus' ``normalise=True`` (divide by the max) does not change the order: set False; abs=False.
- Quantus scores softmax probabilities by default (``softmax=True``): so do we.
- Orders: Quantus uses ``np.argsort(-relevance)`` (ties in no fixed order), ours a stable sort:
  the maps are continuous random numbers, so there are no ties.
- ROAD: Quantus returns 0/1 (prediction still the target): ours ``score="correct"``; percentages
  are percents there, fractions here; its noise comes from NumPy's global RNG, so the exact
  comparisons use ``noise=0`` (the noise itself is checked separately).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import zoo
from torch import nn

from saliency_sanity import data, models
from saliency_sanity.faithfulness import (
    abpc,
    aopc,
    auc,
    deletion,
    gaussian_blur,
    insertion,
    linear_imputation,
    noisy_linear_imputation,
    pixel_flipping,
    region_grid,
    region_perturbation,
    road,
)
from saliency_sanity.faithfulness.imputation import NEIGHBOUR_WEIGHTS

RTOL = 1e-5


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    yield


@pytest.fixture(scope="module")
def mnist():
    ds = data.load("mnist", n_train=8, n_test=8)
    model = models.mnist_cnn(seed=0).eval()
    x = ds.x_test[:4].float()
    with torch.no_grad():
        y = model(x).argmax(1)
    maps = torch.rand(x.shape, generator=torch.Generator().manual_seed(3))
    return model, x, y, maps


@pytest.fixture(scope="module")
def rgb():
    model = zoo._seeded(lambda: zoo.CNN(in_ch=3, size=32), seed=1).eval()
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        y = model(x).argmax(1)
    maps = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    return model, x, y, maps


@pytest.fixture
def quantus():
    return pytest.importorskip("quantus", reason="Quantus comparisons need quantus==0.6.0")


def _rel(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(ours - ref) / np.maximum(np.abs(ref), 1e-12)))


def _quantus_curve(ours: torch.Tensor, q: np.ndarray) -> np.ndarray:
    """Quantus' differences f(x_0) - f(x_k) back to scores f(x_k), with f(x_0) = ours[:, 0]."""
    return ours[:, :1].numpy() - np.asarray(q, dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# exact against Quantus 0.6.0
# ---------------------------------------------------------------------------------------------
CASES_RP = [("mnist", 9, 16, "morf"), ("mnist", 5, 36, "lerf"), ("rgb", 6, 36, "morf"),
            ("rgb", 8, 16, "lerf")]


@pytest.mark.quantus
@pytest.mark.parametrize("case,k,steps,order", CASES_RP)
@pytest.mark.parametrize("baseline,ours_name", [("black", "min"), (0.0, "black")])
def test_region_perturbation_matches_quantus(quantus, request, case, k, steps, order, baseline,
                                             ours_name):
    model, x, y, maps = request.getfixturevalue(case)
    metric = quantus.RegionPerturbation(patch_size=k, regions_evaluation=steps, order=order,
                                        perturb_baseline=baseline, normalise=False, abs=False,
                                        disable_warnings=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=maps.numpy(),
                   channel_first=True, device="cpu")
    ours = region_perturbation(model, x, maps, y, region=k, steps=steps, replacement=ours_name,
                               order=order)
    assert ours.shape == (x.shape[0], steps + 1)
    assert _rel(ours[:, 1:].numpy(), _quantus_curve(ours, q)) < RTOL
    # the differences themselves, on the probability scale
    np.testing.assert_allclose(ours[:, :1] - ours[:, 1:], q, rtol=0, atol=1e-6)


@pytest.mark.quantus
def test_pixel_flipping_matches_quantus(quantus, mnist):
    model, x, y, maps = mnist
    metric = quantus.PixelFlipping(features_in_step=28, perturb_baseline="black",
                                   normalise=False, abs=False, disable_warnings=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = np.asarray(metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(),
                              a_batch=maps.numpy(), channel_first=True, device="cpu"))
    ours = pixel_flipping(model, x, maps, y, pixels_per_step=28, replacement="min")
    assert ours.shape == (4, 29) and q.shape == (4, 28)
    assert _rel(ours[:, 1:].numpy(), q) < RTOL


@pytest.mark.quantus
@pytest.mark.parametrize("case", ["mnist", "rgb"])
@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_imputation_matches_quantus(quantus, request, case, fraction):
    """Quantus' ``noisy_linear_imputation`` (noise 0) on each image, ours on the batch at once."""
    from quantus.functions.perturb_func import noisy_linear_imputation as q_impute

    _, x, _, maps = request.getfixturevalue(case)
    b, c, h, w = x.shape
    order = torch.argsort(-maps.sum(1).flatten(1), dim=1)
    n = int(h * w * fraction)
    removed = torch.zeros(b, h * w, dtype=torch.bool).scatter_(1, order[:, :n], True)
    ours = linear_imputation(x, removed.view(b, h, w)).numpy()
    ref = np.stack([q_impute(arr=x[i].numpy(), indices=order[i, :n].numpy(), noise=0.0)
                    for i in range(b)])
    mask = np.broadcast_to(removed.view(b, 1, h, w).numpy(), x.shape)
    assert _rel(ours[mask], ref[mask]) < RTOL
    np.testing.assert_array_equal(ours[~mask], x.numpy()[~mask])


@pytest.mark.quantus
def test_road_matches_quantus(quantus, mnist):
    model, x, y, maps = mnist
    metric = quantus.ROAD(percentages=[10, 30, 50, 70, 90], noise=0.0, normalise=False,
                          abs=False, disable_warnings=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=maps.numpy(),
                   channel_first=True, device="cpu")
    ours = road(model, x, maps, y, percentages=(0.1, 0.3, 0.5, 0.7, 0.9), noise=0.0,
                score="correct")
    np.testing.assert_array_equal(ours.mean(0).numpy(), np.array(list(q.values())))


@pytest.mark.quantus
def test_quantus_road_fails_on_multichannel_images(quantus, rgb):
    """Quantus bug: ROAD ranks the C*H*W flattened entries but imputes pixels of an (H*W)
    mask, so on RGB images the indices run past the mask (IndexError). Ours ranks pixels."""
    model, x, y, maps = rgb
    metric = quantus.ROAD(percentages=[10], noise=0.0, normalise=False, abs=False,
                          disable_warnings=True)
    with warnings.catch_warnings(), pytest.raises(IndexError):
        warnings.simplefilter("ignore")
        metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=maps.numpy(),
               channel_first=True, device="cpu")
    assert torch.isfinite(road(model, x, maps, y, percentages=(0.1,))).all()


@pytest.mark.quantus
def test_quantus_uniform_baseline_is_one_value_per_step(quantus):
    """Quantus' "uniform" replaces a whole region by ONE uniform value in [0, 1] per sample
    (drawn anew each step), not per-pixel noise in the data range (Samek et al.): ours is."""
    from quantus.functions.perturb_func import batch_baseline_replacement_by_indices

    arr = np.full((2, 16), 5.0)
    out = batch_baseline_replacement_by_indices(arr=arr, indices=np.tile(np.arange(4), (2, 1)),
                                                perturb_baseline="uniform")
    assert all(len(set(row[:4].tolist())) == 1 for row in out)
    x = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0)) * 10 - 5
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    from saliency_sanity.faithfulness._common import replacement_image

    noise = replacement_image(x, "uniform", 0, "t")
    assert len(torch.unique(noise[0])) == 16
    assert bool((noise >= x.amin((1, 2, 3), keepdim=True)).all())
    assert region_perturbation(model, x, x, 0, region=2, steps=4).shape == (2, 5)


# ---------------------------------------------------------------------------------------------
# hand-derived values
# ---------------------------------------------------------------------------------------------
def _linear(d: int, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    w = torch.randn(d, generator=torch.Generator().manual_seed(seed))
    lin = nn.Linear(d, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.stack([w, -w]))
    return nn.Sequential(nn.Flatten(), lin).double(), w.double()


@pytest.mark.parametrize("k", [1, 2, 4])
def test_linear_morf_drops_by_removed_contributions(k):
    """f(x) = w.x, zero replacement: step s removes region r_s, so f drops by sum w_i x_i over
    r_s, regions in decreasing order of sum of the map (here w * x) over the region."""
    model, w = _linear(2 * 36)
    x = torch.randn(3, 2, 6, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    contrib = x * w.view(1, 2, 6, 6)
    ids, n = region_grid(6, 6, k)
    per_region = torch.zeros(3, n, dtype=torch.float64).index_add_(
        1, ids, contrib.sum(1).flatten(1))
    drops = per_region.sort(dim=1, descending=True).values
    expected = contrib.sum((1, 2, 3)).view(-1, 1) - torch.cat(
        [torch.zeros(3, 1, dtype=torch.float64), drops.cumsum(1)], dim=1)
    curves = region_perturbation(model, x, contrib, 0, region=k, steps=n, replacement="black",
                                 score="logit")
    torch.testing.assert_close(curves, expected, rtol=1e-12, atol=1e-12)
    assert curves[:, -1].abs().max() < 1e-12  # everything removed: f(0) = 0


def test_overlapping_windows_by_hand():
    """Samek's overlapping windows: step s replaces the k x k windows around the s centres of
    largest window relevance; k = 1 is pixel flipping."""
    model, w = _linear(25)
    x = torch.rand(1, 1, 5, 5, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    maps = torch.zeros(1, 1, 5, 5, dtype=torch.float64)
    maps[0, 0, 0, 0], maps[0, 0, 4, 4], maps[0, 0, 2, 3] = 5.0, 3.0, 1.0
    curve = region_perturbation(model, x, maps, 0, region=3, steps=2, replacement="black",
                                score="logit", regions="overlapping")
    contrib = (x * w.view(1, 1, 5, 5))[0, 0]
    first = contrib[:2, :2].sum()                      # window of (0, 0), clipped: 5 + 0 + 0
    torch.testing.assert_close(curve[0, 1], contrib.sum() - first)
    # next: (0, 1), (1, 0), (1, 1) tie at 5 (stable: row-major), so (0, 1) adds column 2
    torch.testing.assert_close(curve[0, 2], contrib.sum() - contrib[:2, :3].sum())
    kw = dict(region=1, steps=25, replacement="black", score="logit")
    torch.testing.assert_close(region_perturbation(model, x, x, 0, regions="overlapping", **kw),
                               region_perturbation(model, x, x, 0, **kw))
    with pytest.raises(ValueError, match="odd size"):
        region_perturbation(model, x, x, 0, region=2, steps=1, regions="overlapping")


def test_region_grid_pads_like_quantus():
    ids, n = region_grid(28, 28, 9)  # padded to 36: 4 rows above, 4 below
    assert n == 16
    grid = ids.view(28, 28)
    assert grid[0, 0] == 0 and grid[4, 4] == 0 and grid[5, 5] == 5 and grid[27, 27] == 15
    assert torch.bincount(ids).tolist()[:4] == [25, 45, 45, 25]


def test_lerf_and_random_orders_on_linear_model():
    model, w = _linear(16)
    x = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    contrib = x * w.view(1, 1, 4, 4)
    kw = dict(pixels_per_step=1, replacement="black", score="logit")
    morf = pixel_flipping(model, x, contrib, 0, order="morf", **kw)
    lerf = pixel_flipping(model, x, contrib, 0, order="lerf", **kw)
    rand = pixel_flipping(model, x, contrib, 0, order="random", **kw)
    # removing the k largest contributions leaves the least: MoRF <= any order <= LeRF
    assert (morf <= rand + 1e-12).all() and (rand <= lerf + 1e-12).all()
    assert not torch.equal(rand, morf) and not torch.equal(rand, lerf)
    torch.testing.assert_close(morf[:, -1], lerf[:, -1])
    assert (abpc(morf, lerf) > 0).all()
    torch.testing.assert_close(abpc(morf, lerf), aopc(morf) - aopc(lerf))


def test_insertion_and_deletion_endpoints():
    model, w = _linear(2 * 64)
    x = torch.rand(2, 2, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    full = model(x)[:, 0]
    ins = insertion(model, x, x, 0, pixels_per_step=0.25, score="logit")
    dele = deletion(model, x, x, 0, pixels_per_step=0.25, score="logit")
    assert ins.shape == dele.shape == (2, 5)
    torch.testing.assert_close(ins[:, 0], model(gaussian_blur(x))[:, 0])
    torch.testing.assert_close(ins[:, -1], full)
    torch.testing.assert_close(dele[:, 0], full)
    torch.testing.assert_close(dele[:, -1], torch.zeros(2, dtype=torch.float64))
    zero = insertion(model, x, x, 0, pixels_per_step=0.25, baseline="black", score="logit")
    torch.testing.assert_close(zero[:, 0], torch.zeros(2, dtype=torch.float64))


def test_scores_by_hand():
    c = torch.tensor([[1.0, 0.6, 0.2, 0.0], [0.5, 0.5, 0.5, 0.5]])
    torch.testing.assert_close(aopc(c), torch.tensor([(0 + 0.4 + 0.8 + 1.0) / 4, 0.0]))
    torch.testing.assert_close(auc(c), torch.tensor([(0.8 + 0.4 + 0.1) / 3, 0.5]))
    with pytest.raises(ValueError, match="L >= 1"):
        aopc(torch.ones(2, 1))


def test_imputation_solves_the_neighbour_equations():
    """Each imputed value is the weighted mean of its in-image neighbours (imputed or kept)."""
    x = torch.rand(2, 3, 7, 9, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    removed = torch.rand(2, 7, 9, generator=torch.Generator().manual_seed(7)) < 0.6
    y = linear_imputation(x, removed)
    for b, i, j in torch.nonzero(removed).tolist():
        num, den = torch.zeros(3, dtype=torch.float64), 0.0
        for (dr, dc), wt in NEIGHBOUR_WEIGHTS:
            if 0 <= i + dr < 7 and 0 <= j + dc < 9:
                num += wt * y[b, :, i + dr, j + dc]
                den += wt
        torch.testing.assert_close(y[b, :, i, j], num / den, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(y[~removed.unsqueeze(1).expand_as(x)],
                               x[~removed.unsqueeze(1).expand_as(x)], rtol=0, atol=0)
    noisy = noisy_linear_imputation(x, removed, noise=0.5, seed=1)
    eps = (noisy - y)[removed.unsqueeze(1).expand_as(x)] / 0.5
    assert abs(float(eps.std()) - 1.0) < 0.15 and abs(float(eps.mean())) < 0.15


@pytest.mark.parametrize("blobs", [False, True])
def test_conjugate_gradient_solves_the_same_system(blobs):
    """The batched torch solver (for GPUs) against SuperLU: random masks and large blobs."""
    x = torch.rand(3, 2, 24, 20, generator=torch.Generator().manual_seed(8))
    noise = torch.rand(3, 1, 24, 20, generator=torch.Generator().manual_seed(9))
    if blobs:
        noise = nn.functional.avg_pool2d(noise, 9, 1, 4)
    removed = torch.stack([noise[i, 0] > noise[i, 0].quantile(q) for i, q in
                           enumerate((0.2, 0.5, 0.9))]) if blobs else noise[:, 0] < 0.7
    direct = linear_imputation(x, removed, solver="direct")
    cg = linear_imputation(x, removed, solver="cg")
    torch.testing.assert_close(cg, direct, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="unknown solver 'lu'"):
        road(nn.Sequential(nn.Flatten(), nn.Linear(960, 2)), x, x, solver="lu")


# ---------------------------------------------------------------------------------------------
# model unchanged, determinism
# ---------------------------------------------------------------------------------------------
class _BNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4 * 8 * 8, 5)

    def forward(self, x):
        return self.fc(self.drop(self.bn(self.conv(x)).relu()).flatten(1))


def _snapshot(m: nn.Module):
    return ({k: v.clone() for k, v in m.state_dict().items()},
            [mod.training for mod in m.modules()], [p.requires_grad for p in m.parameters()],
            len(m._forward_hooks))


def _same(a, b):
    assert a[1:] == b[1:]
    assert all(torch.equal(a[0][k], b[0][k]) for k in a[0])


CALLS = {
    "region_perturbation": lambda m, x, a, t: region_perturbation(m, x, a, t, region=2, steps=5),
    "pixel_flipping": lambda m, x, a, t: pixel_flipping(m, x, a, t, pixels_per_step=0.25),
    "insertion": lambda m, x, a, t: insertion(m, x, a, t, pixels_per_step=0.25),
    "deletion": lambda m, x, a, t: deletion(m, x, a, t, pixels_per_step=0.25),
    "road": lambda m, x, a, t: road(m, x, a, t, percentages=(0.2, 0.6)),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_model_left_unchanged_also_after_an_error(name, global_rng_guard):
    model = zoo._seeded(_BNNet, seed=2).train()
    model.conv.weight.requires_grad_(False)
    model.register_forward_hook(lambda *a: None)
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    before = _snapshot(model)
    out = CALLS[name](model, x, x, "predicted")
    assert torch.isfinite(out).all()
    _same(before, _snapshot(model))
    with pytest.raises(ValueError, match="out of range"):
        CALLS[name](model, x, x, torch.tensor([0, 7]))
    _same(before, _snapshot(model))


@pytest.mark.parametrize("name", ["region_perturbation", "road"])
def test_seeded_deterministic_and_batch_size_free(name, rgb, global_rng_guard):
    model, x, y, maps = rgb
    if name == "road":
        def run(**kw):
            return road(model, x, maps, y, percentages=(0.3, 0.7), order="random", **kw)
    else:
        def run(**kw):
            return region_perturbation(model, x, maps, y, region=4, steps=20, order="random",
                                       replacement="uniform", **kw)
    a, b = run(seed=3), run(seed=3, batch_size=7)
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert not torch.allclose(a, run(seed=4))


# ---------------------------------------------------------------------------------------------
# bad inputs
# ---------------------------------------------------------------------------------------------
def test_bad_inputs_are_clear_errors():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"region 5 x 5 is larger than the image \(4 x 4\)"):
        region_perturbation(model, x, x, region=5, steps=1)
    with pytest.raises(ValueError, match="steps must be positive, got 0"):
        region_perturbation(model, x, x, region=2, steps=0)
    with pytest.raises(ValueError, match="more than the 4 steps"):
        region_perturbation(model, x, x, region=2, steps=5)
    with pytest.raises(ValueError, match=r"maps must have x's shape \(2, 1, 4, 4\)"):
        pixel_flipping(model, x, x[:, :, :3], pixels_per_step=4)
    with pytest.raises(ValueError, match=r"unknown replacement 'gray'; known: \['black', 'blur'"):
        deletion(model, x, x, baseline="gray")
    with pytest.raises(ValueError, match="unknown order 'top'"):
        road(model, x, x, order="top")
    for bad in [(0.0, 0.5), (0.5, 1.0), (10, 50)]:
        with pytest.raises(ValueError, match=r"percentages must lie in \(0, 1\)"):
            road(model, x, x, percentages=bad)
    with pytest.raises(ValueError, match="unknown score"):
        insertion(model, x, x, score="prob")


@pytest.mark.parametrize("name", sorted(CALLS))
def test_nan_maps_give_nan_rows_and_a_warning(name):
    model = zoo._seeded(_BNNet, seed=2).eval()
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    maps = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0, 1, 2])
    clean = CALLS[name](model, x, maps, t)
    maps[1, 0, 2, 2] = float("nan")
    with pytest.warns(RuntimeWarning, match=r"samples \[1\] contain NaN"):
        out = CALLS[name](model, x, maps, t)
    assert torch.isnan(out[1]).all()
    keep = [0, 2]
    torch.testing.assert_close(out[keep], clean[keep], rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------------------------
# a trained model: the gradient's MoRF curve falls faster than a random map's
# ---------------------------------------------------------------------------------------------
def test_gradient_morf_falls_faster_than_random_map():
    ds = data.load("mnist", n_train=512, n_test=16)
    net = zoo._seeded(lambda: zoo.CNN(in_ch=1, size=28), seed=0)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(60):
        idx = torch.randint(0, 512, (64,), generator=gen)
        loss = nn.functional.cross_entropy(net(ds.x_train[idx]), ds.y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    x, y = ds.x_test, ds.y_test
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(net(xg).gather(1, y.view(-1, 1)).sum(), xg)
    rand = torch.rand(x.shape, generator=torch.Generator().manual_seed(9))
    kw = dict(region=4, steps=20, replacement="black")
    g_curve = region_perturbation(net, x, grad.abs(), y, **kw)
    r_curve = region_perturbation(net, x, rand, y, **kw)
    assert aopc(g_curve).mean() > aopc(r_curve).mean() + 0.1
    g_road = road(net, x, grad.abs(), y, percentages=(0.1, 0.2, 0.3))
    r_road = road(net, x, rand, y, percentages=(0.1, 0.2, 0.3))
    assert g_road.mean() < r_road.mean()
