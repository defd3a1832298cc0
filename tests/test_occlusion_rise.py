"""Occlusion against Captum's Occlusion; RISE against a NumPy transcription of its formula.

Occlusion: the same patches, strides and fill through ``captum.attr.Occlusion`` (float64
models: equal to 1e-6 relative or better), multi-channel inputs, strides smaller than the
patch, and sizes where the last patch is clipped at the border.

RISE: the masks rebuilt from the exposed grids and shifts with ``skimage.transform.resize``
(order 1, as in the authors' code), and the saliency ``sum_i f(x * M_i) M_i / (N p1)`` computed
here in NumPy, one masked image per forward pass, on the SAME masks.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zoo

from saliency_sanity import methods
from saliency_sanity.methods import occlusion as occ_mod
from saliency_sanity.methods import rise as rise_mod

pytestmark = pytest.mark.usefixtures("one_thread")


def _model(name):
    model, x = zoo.make(name)
    return model.double(), x.double()


# ---------------------------------------------------------------------------------------------
# occlusion
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_name", ["resnet", "cnn"])  # 3 channels, 1 channel
@pytest.mark.parametrize("patch, stride, fill, score", [
    (4, 2, 0.0, "logit"),          # stride smaller than the patch
    (5, 3, 0.0, "logit"),          # 11 / 3 is not whole: the last patch is clipped
    ((6, 3), (2, 3), 0.0, "logit"),
    (16, 8, 0.0, "logit"),         # patch = image: one position
    (4, 4, 0.5, "softmax"),        # another fill, the softmax score
])
def test_occlusion_equals_captum(model_name, patch, stride, fill, score, global_rng_guard):
    CA = pytest.importorskip("captum.attr")
    model, x = _model(model_name)
    t = methods.predicted_targets(model, x)
    snap = zoo.snapshot(model)
    ours = methods.get("occlusion", patch=patch, stride=stride, fill=fill, score=score,
                       internal_batch_size=40)(model, x, t)
    zoo.assert_unchanged(model, snap)
    ph, pw = patch if isinstance(patch, tuple) else (patch, patch)
    sh, sw = stride if isinstance(stride, tuple) else (stride, stride)
    c = x.shape[1]

    def fwd(z):
        out = model(z)
        return torch.softmax(out, dim=1) if score == "softmax" else out

    with torch.no_grad():
        ref = CA.Occlusion(fwd).attribute(x, sliding_window_shapes=(c, ph, pw),
                                          strides=(1, sh, sw), baselines=fill, target=t,
                                          perturbations_per_eval=16)
    zoo.assert_unchanged(model, snap)
    for ch in range(c):  # the patch covers every channel: one value per pixel
        assert torch.equal(ref[:, ch], ref[:, 0])
    assert ours.shape == (4, 1, 16, 16)
    assert float(ref.abs().max()) > 0
    np.testing.assert_allclose(ours.numpy(), ref[:, :1].numpy(), rtol=1e-6,
                               atol=1e-6 * float(ref.abs().max()))


def test_occlusion_float32_and_batching():
    CA = pytest.importorskip("captum.attr")
    model, x = zoo.make("resnet")
    t = methods.predicted_targets(model, x)
    a = methods.get("occlusion", patch=4, stride=2, internal_batch_size=8)(model, x, t)
    b = methods.get("occlusion", patch=4, stride=2, internal_batch_size=None)(model, x, t)
    ref = CA.Occlusion(model).attribute(x, sliding_window_shapes=(3, 4, 4), strides=(1, 2, 2),
                                        target=t)
    scale = float(ref.abs().max())
    torch.testing.assert_close(a, ref[:, :1], rtol=1e-4, atol=1e-5 * scale)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * scale)


def test_occlusion_passes_are_stacked():
    model, x = zoo.make("cnn")
    sizes = []
    h = model.conv1.register_forward_pre_hook(lambda m, i: sizes.append(i[0].shape[0]))
    try:
        methods.get("occlusion", patch=4, stride=4, internal_batch_size=24)(
            model, x, torch.tensor([0, 1, 2, 3]))
    finally:
        h.remove()
    # target check, the clean pass, then 16 positions x 4 images in passes of 6 positions
    assert sizes == [4, 4, 24, 24, 16]


def test_patch_positions_match_captums_shift_counts():
    for length, patch, stride in [(16, 4, 2), (16, 5, 3), (28, 16, 8), (224, 16, 8), (7, 7, 1)]:
        starts = occ_mod.patch_starts(length, patch, stride)
        assert len(starts) == int(np.ceil((length - patch) / stride)) + 1
        assert starts[-1] + patch >= length  # every pixel covered


@pytest.mark.parametrize("kw, call, match", [
    ({"patch": 17}, True, "patch 17x17 is larger than the image 16x16"),
    ({"patch": (4, 20), "stride": 2}, True, "larger than the image"),
    ({"patch": 4, "stride": 5}, False, "must not exceed the patch"),
    ({"patch": 0}, False, "positive int"),
    ({"patch": 2.5}, False, "positive int"),
    ({"fill": float("nan")}, False, "finite"),
    ({"score": "probability"}, False, "score must be one of"),
    ({"internal_batch_size": "big"}, False, "internal_batch_size"),
])
def test_occlusion_errors(kw, call, match):
    model, x = zoo.make("cnn")
    snap = zoo.snapshot(model)
    with pytest.raises(ValueError, match=match):
        methods.get("occlusion", **kw)(model, x) if call else methods.get("occlusion", **kw)
    zoo.assert_unchanged(model, snap)
    mlp, xf = zoo.make("mlp")
    with pytest.raises(ValueError, match="image"):
        methods.get("occlusion", patch=2, stride=1)(mlp, xf)


# ---------------------------------------------------------------------------------------------
# RISE
# ---------------------------------------------------------------------------------------------
def test_rise_masks_are_the_papers_construction():
    """Each mask: the grid resized with skimage (order 1, reflect, no anti-aliasing) to
    (s + 1) * cell, cropped at the shift (Petsiuk et al.'s generate_masks)."""
    resize = pytest.importorskip("skimage.transform").resize
    for size, s, p1 in [((16, 16), 3, 0.5), ((28, 20), 6, 0.1), ((13, 13), 4, 0.3),
                        ((8, 8), 1, 0.5), ((5, 6), 7, 0.5)]:
        grids, shifts, cell = rise_mod.rise_grids(30, s, p1, size, seed=4)
        assert cell == tuple(int(np.ceil(n / s)) for n in size)
        assert set(np.unique(grids.numpy())) <= {0.0, 1.0}
        assert bool((shifts[:, 0] < cell[0]).all() and (shifts[:, 1] < cell[1]).all())
        masks = rise_mod.rise_masks(30, s, p1, size, seed=4, dtype=torch.float64)
        up_size = ((s + 1) * cell[0], (s + 1) * cell[1])
        for i in range(30):
            up = resize(grids[i].numpy(), up_size, order=1, mode="reflect", anti_aliasing=False)
            dy, dx = shifts[i].tolist()
            ref = up[dy:dy + size[0], dx:dx + size[1]]
            np.testing.assert_allclose(masks[i, 0].numpy(), ref, rtol=0, atol=1e-12)
    grids, _, _ = rise_mod.rise_grids(4000, 6, 0.1, (28, 28), seed=0)
    assert abs(float(grids.mean()) - 0.1) < 0.01  # cells kept with probability p1


@pytest.mark.parametrize("model_name, score", [("resnet", "softmax"), ("cnn", "logit")])
def test_rise_equals_the_numpy_formula_on_the_same_masks(model_name, score, global_rng_guard):
    model, x = _model(model_name)
    t = methods.predicted_targets(model, x)
    n, s, p1, seed = 37, 3, 0.3, 5
    snap = zoo.snapshot(model)
    ours = methods.get("rise", n_masks=n, s=s, p1=p1, seed=seed, score=score,
                       internal_batch_size=20)(model, x, t)
    zoo.assert_unchanged(model, snap)
    masks = rise_mod.rise_masks(n, s, p1, (16, 16), seed, dtype=torch.float64).numpy()
    xn = x.numpy()
    sal = np.zeros((4, 16, 16))
    for i in range(n):  # one masked batch per mask
        with torch.no_grad():
            out = model(torch.from_numpy(xn * masks[i][None])).numpy()
        if score == "softmax":
            e = np.exp(out - out.max(axis=1, keepdims=True))
            out = e / e.sum(axis=1, keepdims=True)
        sal += out[np.arange(4), t.numpy()][:, None, None] * masks[i, 0][None]
    sal /= n * p1
    np.testing.assert_allclose(ours[:, 0].numpy(), sal, rtol=1e-10, atol=1e-12)


def test_rise_seed_batching_and_global_rng(global_rng_guard):
    model, x = zoo.make("cnn")
    t = methods.predicted_targets(model, x)
    kw = {"n_masks": 24, "s": 3, "p1": 0.5}
    a = methods.get("rise", seed=1, **kw)(model, x, t)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(99)  # the global RNG's state must not matter
        b = methods.get("rise", seed=1, **kw)(model, x, t)
    finally:
        torch.random.set_rng_state(state)
    assert torch.equal(a, b)
    assert not torch.equal(a, methods.get("rise", seed=2, **kw)(model, x, t))
    assert torch.equal(methods.get("rise", seed=1, **kw).reseeded(2)(model, x, t),
                       methods.get("rise", seed=2, **kw)(model, x, t))
    c = methods.get("rise", seed=1, internal_batch_size=8, **kw)(model, x, t)
    torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-6)
    sizes = []
    h = model.conv1.register_forward_pre_hook(lambda m, i: sizes.append(i[0].shape[0]))
    try:
        methods.get("rise", seed=1, internal_batch_size=40, **kw)(model, x, t)
    finally:
        h.remove()
    assert sizes == [4, 40, 40, 16]  # target check, then 24 masks x 4 images in passes of 10


@pytest.mark.parametrize("kw, match", [
    ({"n_masks": 0}, "n_masks"), ({"n_masks": -5}, "n_masks"), ({"n_masks": 2.0}, "n_masks"),
    ({"p1": 0.0}, r"p1 .* must lie in \(0, 1\)"), ({"p1": 1.0}, "p1"), ({"p1": 1.5}, "p1"),
    ({"s": 0}, "cells per side"), ({"score": "prob"}, "score must be one of"),
])
def test_rise_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        methods.get("rise", **kw)
    mlp, xf = zoo.make("mlp")
    with pytest.raises(ValueError, match="image"):
        methods.get("rise", n_masks=2)(mlp, xf)


def test_defaults_are_rao_et_al_settings():
    assert methods.get("rise").settings() == {
        "name": "rise", "n_masks": 6000, "s": 6, "p1": 0.1, "seed": 0, "score": "softmax",
        "internal_batch_size": "auto"}
    o = methods.get("occlusion").settings()
    assert (o["patch"], o["stride"], o["fill"], o["score"]) == ([16, 16], [8, 8], 0.0, "logit")
    for name in ("occlusion", "rise", "gradcam_plus_plus", "layercam", "ablation_cam",
                 "score_cam"):
        assert name not in methods.defaults()
        m = methods.get(name)
        assert m.needs_image and m.reuse_safe and not m.averages_noise
        assert m.needs_conv == (name not in ("occlusion", "rise"))


def test_occlusion_equals_a_plain_loop_in_float64():
    """One patch at a time, written out (Captum returns float32 even for float64 inputs)."""
    model, x = _model("resnet")
    t = methods.predicted_targets(model, x)
    ours = methods.get("occlusion", patch=5, stride=3)(model, x, t)
    with torch.no_grad():
        base = model(x)[torch.arange(4), t]
        total, count = torch.zeros(4, 16, 16, dtype=x.dtype), torch.zeros(16, 16, dtype=x.dtype)
        for y0 in range(0, 13, 3):  # ceil((16 - 5) / 3) + 1 = 5 positions; the last clipped
            for x0 in range(0, 13, 3):
                z = x.clone()
                z[:, :, y0:y0 + 5, x0:x0 + 5] = 0
                total[:, y0:y0 + 5, x0:x0 + 5] += (base - model(z)[torch.arange(4), t])[:, None,
                                                                                        None]
                count[y0:y0 + 5, x0:x0 + 5] += 1
    np.testing.assert_allclose(ours[:, 0].numpy(), (total / count).numpy(), rtol=1e-12,
                               atol=1e-14)
