"""Grad-CAM++, LayerCAM, Ablation-CAM and Score-CAM against the formulas written out here.

The references capture the layer's activations and gradients with their own hooks and compute
each published formula in NumPy (float64 models, so the comparison is tight); channels are
ablated or used as masks one at a time, one forward pass each. The models are checked to be
bit-identical after every call.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import zoo

from saliency_sanity import methods, model_randomization_test
from saliency_sanity.methods import cam_family

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ["gradcam_plus_plus", "layercam", "ablation_cam", "score_cam"]
# (model, layer): the default layer (None) and a middle layer of each
CASES = [("cnn", None), ("cnn", "relu1"), ("cnn", "pool1"), ("resnet", None),
         ("resnet", "layer1"), ("resnet", "layer1.conv1")]


def _model(name):
    model, x = zoo.make(name)
    return model.double(), x.double()


def _capture(model, x, layer):
    """Activations A (B, K, h, w), gradients of the target logits, logits: numpy float64."""
    store = {}
    module = dict(model.named_modules())[layer]
    h = module.register_forward_hook(lambda m, i, o: store.setdefault("a", o))
    try:
        logits = model(x)
    finally:
        h.remove()
    t = logits.argmax(1)
    (g,) = torch.autograd.grad(logits[torch.arange(len(t)), t].sum(), store["a"])
    return (store["a"].detach().numpy(), g.numpy(), logits.detach().numpy(), t)


def _forward_with(model, x, layer, edit):
    """Logits with the layer's output replaced by ``edit(output)`` (numpy)."""
    module = dict(model.named_modules())[layer]
    h = module.register_forward_hook(lambda m, i, o: edit(o))
    try:
        with torch.no_grad():
            return model(x).numpy()
    finally:
        h.remove()


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def reference(name, model, x, layer):
    """The method's map at the layer's resolution (B, 1, h, w), from the paper's formula."""
    a, g, logits, t = _capture(model, x, layer)
    b, k = a.shape[:2]
    if name == "gradcam_plus_plus":  # Chattopadhay et al. 2018, eq. 19 with exp(y) left out
        num = g ** 2
        den = 2 * g ** 2 + a.sum(axis=(2, 3), keepdims=True) * g ** 3
        alpha = np.divide(num, den, out=np.zeros_like(num), where=den != 0)
        w = (alpha * np.maximum(g, 0)).sum(axis=(2, 3))
        cam = np.einsum("bk,bkhw->bhw", w, a)
    elif name == "layercam":  # Jiang et al. 2021, eq. 5-6
        cam = (np.maximum(g, 0) * a).sum(axis=1)
    elif name == "ablation_cam":  # Desai & Ramaswamy 2020, eq. 4
        y = logits[np.arange(b), t]
        w = np.zeros((b, k))
        for c in range(k):
            def zero(o, c=c):
                o = o.clone()
                o[:, c] = 0
                return o
            yk = _forward_with(model, x, layer, zero)[np.arange(b), t]
            w[:, c] = (y - yk) / y
        w[np.abs(a).reshape(b, k, -1).max(axis=2) == 0] = 0  # zero channels: term is 0 anyway
        cam = np.einsum("bk,bkhw->bhw", w, a)
    elif name == "score_cam":  # Wang et al. 2020, alg. 1 (authors' code: softmax, skip flat)
        w = np.zeros((b, k))
        for i in range(b):
            for c in range(k):
                up = F.interpolate(torch.from_numpy(a[i:i + 1, c:c + 1]), size=x.shape[2:],
                                   mode="bilinear", align_corners=False).numpy()
                if up.max() == up.min():
                    continue
                m = (up - up.min()) / (up.max() - up.min())
                with torch.no_grad():
                    out = model(x[i:i + 1] * torch.from_numpy(m)).numpy()
                w[i, c] = _softmax(out)[0, t[i]]
        cam = np.einsum("bk,bkhw->bhw", w, a)
    else:
        raise KeyError(name)
    return np.maximum(cam, 0)[:, None], t


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("model_name, layer", CASES)
def test_matches_the_written_out_formula(name, model_name, layer, global_rng_guard):
    model, x = _model(model_name)
    snap = zoo.snapshot(model)
    m = methods.get(name, layer=layer, **({"internal_batch_size": 7}
                                          if name in ("ablation_cam", "score_cam") else {}))
    used = m.layer_name(model, x)
    assert m.resolved_settings(model, x)["resolved_layer"] == used
    ref, t = reference(name, model, x, used)
    zoo.assert_unchanged(model, snap)
    out = m(model, x, t)
    zoo.assert_unchanged(model, snap)
    layer_map = m.layer_map(model, x, t, used)
    zoo.assert_unchanged(model, snap)
    np.testing.assert_allclose(layer_map.numpy(), ref, rtol=1e-9, atol=1e-12 * np.abs(ref).max())
    assert np.abs(ref).max() > 0  # a map that is not all zero
    up = F.interpolate(torch.from_numpy(ref), size=x.shape[2:], mode="bilinear",
                       align_corners=False)
    np.testing.assert_allclose(out.numpy(), up.numpy(), rtol=1e-9, atol=1e-12 * up.abs().max())


def test_default_layer_is_gradcams_and_recorded():
    for model_name in ("cnn", "cnn_functional", "resnet"):
        model, x = zoo.make(model_name)
        expected = methods.get("gradcam").layer_name(model, x)
        for name in NAMES:
            s = methods.get(name).resolved_settings(model, x)
            assert (s["layer"], s["resolved_layer"]) == ("auto", expected)
    s = methods.get("score_cam").settings()
    assert s == {"name": "score_cam", "layer": None, "upsample": "bilinear",
                 "internal_batch_size": "auto", "score": "softmax"}


def test_in_place_relu_after_the_layer_changes_nothing():
    a, xa = zoo.make("cnn")
    b, _ = zoo.make("cnn_inplace")
    for name in NAMES:
        m = methods.get(name, layer="conv2")
        torch.testing.assert_close(m(a, xa), m(b, xa), rtol=1e-5, atol=1e-6)


def test_score_cam_logit_score_and_batching_change_only_what_they_should():
    model, x = _model("cnn")
    t = methods.predicted_targets(model, x)
    a = methods.get("score_cam", internal_batch_size=3)(model, x, t)
    b = methods.get("score_cam", internal_batch_size=None)(model, x, t)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # logit scores: the same formula with the logit of the masked image as weight
    acts = {}
    h = model.relu2.register_forward_hook(lambda m, i, o: acts.setdefault("a", o.detach()))
    with torch.no_grad():
        model(x)
    h.remove()
    lo = cam_family.layer_score_cam(model, x, t, "relu2", score="logit")
    a2 = acts["a"]
    w = torch.zeros(a2.shape[:2], dtype=x.dtype)
    for i in range(len(x)):
        for c in range(a2.shape[1]):
            up = F.interpolate(a2[i:i + 1, c:c + 1], size=(16, 16), mode="bilinear")
            if up.max() > up.min():
                with torch.no_grad():
                    w[i, c] = model(x[i:i + 1] * (up - up.min()) / (up.max() - up.min()))[0, t[i]]
    torch.testing.assert_close(lo, torch.relu((w[:, :, None, None] * a2).sum(1, keepdim=True)))


def test_perturbation_cams_batch_their_passes():
    """Ablation-CAM and Score-CAM run (image, channel) rows in passes of internal_batch_size
    rows, never one image at a time."""
    model, x = zoo.make("cnn")  # relu2 has 8 channels: up to 32 rows for 4 images
    sizes = []
    h = model.conv1.register_forward_pre_hook(lambda m, i: sizes.append(i[0].shape[0]))
    try:
        for name in ("ablation_cam", "score_cam"):
            sizes.clear()
            methods.get(name, internal_batch_size=12)(model, x, torch.tensor([0, 1, 2, 3]))
            # the target check, the layer search and the clean pass, then the rows
            rows = sizes[3:]
            assert sizes[:3] == [4, 1, 4] and max(rows) == 12
            assert len(rows) == -(-sum(rows) // 12) and sum(rows) > 12
            sizes.clear()
            methods.get(name, internal_batch_size=None)(model, x, torch.tensor([0, 1, 2, 3]))
            assert len(sizes) == 4 and sizes[3] > 12
    finally:
        h.remove()


@pytest.mark.parametrize("case, match", [
    ("unknown_layer", "no layer named 'conv9'.*candidate layers: conv1, conv2"),
    ("linear_layer", "4-D tensor"),
    ("flat_input", "image"),
    ("no_conv", "no convolutional layer"),
    ("shared", "ran 3 times"),
    ("bad_score", "score must be one of"),
    ("bad_batch", "internal_batch_size"),
])
@pytest.mark.parametrize("name", NAMES)
def test_clear_errors(name, case, match):
    model, x = zoo.make("cnn")
    mlp, xf = zoo.make("mlp")
    shared, _ = zoo.make("cnn_shared_relu")
    no_conv = zoo._seeded(lambda: torch.nn.Sequential(torch.nn.Flatten(),
                                                      torch.nn.Linear(256, 3)))
    calls = {
        "unknown_layer": lambda: methods.get(name, layer="conv9")(model, x),
        "linear_layer": lambda: methods.get(name, layer="fc1")(model, x),
        "flat_input": lambda: methods.get(name)(mlp, xf),
        "no_conv": lambda: methods.get(name)(no_conv, x),
        "shared": lambda: methods.get(name, layer="act")(shared, x),
        "bad_score": lambda: methods.get("score_cam", score="prob"),
        "bad_batch": lambda: methods.get("ablation_cam", internal_batch_size=-2),
    }
    snap = zoo.snapshot(model)
    exc = KeyError if case == "unknown_layer" else ValueError
    with pytest.raises(exc, match=match):
        calls[case]()
    zoo.assert_unchanged(model, snap)


@pytest.mark.parametrize("name", NAMES + ["occlusion", "rise"])
def test_tiny_model_randomization(name):
    model, x = zoo.make("cnn")
    snap = zoo.snapshot(model)
    kw = {"occlusion": {"patch": 8, "stride": 4}, "rise": {"n_masks": 20, "s": 3, "p1": 0.5},
          "ablation_cam": {"internal_batch_size": 16}}.get(name, {})
    res = model_randomization_test(model, x[:3], methods={name: methods.get(name, **kw)},
                                   scores=["spearman_abs"], order="cascading", seed=0,
                                   batch_size=3, controls=[], progress=False)
    zoo.assert_unchanged(model, snap)
    s = res.summary()
    assert set(s.method) == {name}
    assert sorted(set(s.stage)) == list(range(1, len(res.stages)))
    assert s["mean"].notna().all()
    recorded = res.settings["methods"][name]
    assert recorded["name"] == name
    if name not in ("occlusion", "rise"):
        assert recorded["resolved_layer"] == "relu2"


def test_usable_in_every_check():
    """One small run of each check with all six methods (small settings)."""
    from saliency_sanity import checks

    model, x = zoo.make("cnn")
    other, _ = zoo.make("cnn", seed=3)
    snap = zoo.snapshot(model)
    specs = {"occlusion": {"patch": 8, "stride": 4}, "rise": {"n_masks": 6, "s": 3, "p1": 0.5},
             "ablation_cam": {}, "score_cam": {}, "gradcam_plus_plus": {}, "layercam": {}}
    ms = {name: methods.get(name, **kw) for name, kw in specs.items()}
    common = {"seed": 0, "batch_size": 3, "controls": [], "progress": False}
    x3 = x[:3]
    results = {
        "smprt": checks.smooth_model_randomization_test(model, x3, methods=ms, samples=2,
                                                        scores=["spearman"], **common),
        "emprt": checks.efficient_model_randomization_test(model, x3, methods=ms, **common),
        "random_logit": checks.random_logit_test(model, x3, methods=ms, scores=["spearman"],
                                                 **common),
        "compare_models": checks.compare_models(model, other, x3, methods=ms,
                                                scores=["spearman"], **common),
        "faithfulness": checks.faithfulness_test(model, x3, methods=ms, **common),
    }
    zoo.assert_unchanged(model, snap)
    for check, res in results.items():
        assert set(res.table.method) - {"(random order)"} == set(specs), check
        for name in specs:
            assert res.table[res.table.method == name].value.notna().any(), (check, name)
