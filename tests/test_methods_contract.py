"""The Method contract: registry, model left untouched, determinism, targets, input checks."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
import zoo
from torch import nn

from saliency_sanity import methods

EXPECTED = sorted([
    "ablation_cam", "gradcam_plus_plus", "layercam", "occlusion", "rise", "score_cam",
    "constant", "deconvnet", "edge_sobel", "gradcam", "gradient", "gradient_x_input",
    "guided_backprop", "guided_gradcam", "ig_smoothgrad", "integrated_gradients", "lrp",
    "lrp_epsilon_alpha2_beta1", "lrp_epsilon_gamma_box", "lrp_epsilon_plus",
    "lrp_epsilon_plus_flat", "random_gaussian",
    "random_uniform", "smoothgrad", "vargrad",
])
# small settings so every method runs quickly; the defaults are checked separately
FAST = {"smoothgrad": {"samples": 3}, "vargrad": {"samples": 3},
        "ig_smoothgrad": {"samples": 2, "steps": 3}, "integrated_gradients": {"steps": 5},
        "rise": {"n_masks": 8, "s": 3, "p1": 0.5}, "occlusion": {"patch": 4, "stride": 2},
        "lrp_epsilon_gamma_box": {"low": -4.0, "high": 4.0}}
CAM = {"gradcam", "guided_gradcam", "gradcam_plus_plus", "layercam", "ablation_cam", "score_cam",
       "occlusion", "rise"}  # image-only methods
SPATIAL = CAM - {"guided_gradcam"}  # maps of shape (B, 1, H, W)


pytestmark = pytest.mark.usefixtures("one_thread")


def fast(name: str, **kw) -> methods.Method:
    return methods.get(name, **{**FAST.get(name, {}), **kw})


# ---------------------------------------------------------------------------------------------
# registry and metadata
# ---------------------------------------------------------------------------------------------
def test_registry_lists_every_method_sorted():
    assert methods.list() == EXPECTED


def test_unknown_name_lists_known_names():
    with pytest.raises(KeyError) as err:
        methods.get("saliency")
    for name in EXPECTED:
        assert name in str(err.value)


def test_paper_defaults_and_json_settings():
    s = {name: methods.get(name).settings() for name in EXPECTED}
    assert s["integrated_gradients"]["steps"] == 50
    assert s["integrated_gradients"]["baseline"] is None
    assert s["integrated_gradients"]["rule"] == "riemann_right"
    assert (s["smoothgrad"]["samples"], s["smoothgrad"]["noise"]) == (50, 0.15)
    assert s["smoothgrad"]["base"] == {"name": "gradient"}
    assert methods.get("smoothgrad").mode == "mean"
    assert (s["vargrad"]["samples"], s["vargrad"]["noise"]) == (25, 0.15)
    assert s["ig_smoothgrad"]["base"]["name"] == "integrated_gradients"
    assert s["gradcam"] == {"name": "gradcam", "layer": None, "upsample": "bilinear"}
    for name, settings in s.items():
        assert settings["name"] == name
        json.dumps(settings)
    ig = methods.get("integrated_gradients", baseline=torch.zeros(1, 3, 4, 4)).settings()
    json.dumps(ig)


def test_flags():
    controls = {"edge_sobel", "random_gaussian", "random_uniform", "constant"}
    seeded = {"smoothgrad", "vargrad", "ig_smoothgrad", "random_gaussian", "random_uniform",
              "rise"}
    for name in EXPECTED:
        m = methods.get(name)
        assert m.name == name
        assert m.is_control == (name in controls)
        assert m.needs_model == (name not in controls)
        assert m.seeded == (name in seeded)


def test_reseeded():
    for name in ("gradient", "gradcam", "edge_sobel", "constant"):
        m = methods.get(name)
        assert m.reseeded(5) is m
    x = torch.zeros(2, 3, 5, 5)
    r = methods.get("random_gaussian", seed=1)
    r2 = r.reseeded(2)
    assert r.seed == 1 and r2.seed == 2 and r2.settings()["seed"] == 2
    assert not torch.equal(r(None, x), r2(None, x))
    assert torch.equal(r(None, x), methods.get("random_gaussian", seed=1)(None, x))
    model, xs = zoo.make("mlp")
    sg = fast("smoothgrad", seed=0)
    assert torch.equal(sg.reseeded(9)(model, xs), fast("smoothgrad", seed=9)(model, xs))
    assert not torch.equal(sg.reseeded(9)(model, xs), sg(model, xs))


def test_resolve_accepts_names_methods_callables_and_captum_classes():
    CA = pytest.importorskip("captum.attr")
    model, x = zoo.make("cnn")
    t = methods.predicted_targets(model, x)
    grad = methods.get("gradient")(model, x, t)
    m = methods.get("gradient")
    assert methods.resolve(m) is m
    assert methods.resolve("integrated_gradients", steps=7).settings()["steps"] == 7
    assert isinstance(methods.resolve(methods.Gradient), methods.Gradient)

    def my_grad(model, x, target, scale=1.0):
        return scale * methods.get("gradient")(model, x, target)

    f = methods.resolve(my_grad, scale=2.0)
    assert f.name == "my_grad" and torch.equal(f(model, x, t), 2 * grad)
    snap = zoo.snapshot(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sal = methods.resolve(CA.Saliency, abs=False)
        assert sal.name == "captum.Saliency"
        assert torch.equal(sal(model, x, t), grad)
        cam = methods.resolve(CA.LayerGradCam, layer="conv2", relu_attributions=True)
        ours = methods.get("gradcam", layer="conv2")(model, x, t)
        torch.testing.assert_close(cam(model, x, t), ours)
        gbp = methods.resolve(CA.GuidedBackprop)(model, x, t)  # hooks nn.ReLU, removed after
    torch.testing.assert_close(gbp, methods.get("guided_backprop")(model, x, t))
    zoo.assert_unchanged(model, snap)
    # wrappers accept any spec as base
    sg = methods.get("smoothgrad", base=my_grad, samples=1, noise=0.0)
    assert torch.equal(sg(model, x, t), grad)
    with pytest.raises(TypeError):
        methods.resolve(42)
    with pytest.raises(TypeError):
        methods.resolve(m, steps=3)


# ---------------------------------------------------------------------------------------------
# the model is left exactly as it was
# ---------------------------------------------------------------------------------------------
def _dirty(model: nn.Module) -> list:
    """Train mode, a frozen parameter, an existing .grad and an existing hook: all to keep."""
    model.train()
    params = list(model.parameters())
    params[0].requires_grad_(False)
    params[-1].grad = torch.ones_like(params[-1])
    return [model.register_forward_hook(lambda m, i, o: None)]


@pytest.mark.parametrize("name", methods.list())
@pytest.mark.parametrize("model_name", ["cnn_inplace", "cnn_functional", "resnet", "mlp"])
def test_model_untouched_after_each_method(name, model_name, global_rng_guard):
    model, x = zoo.make(model_name)
    handles = _dirty(model)
    snap = zoo.snapshot(model)
    m = fast(name)
    if (name in CAM or name == "edge_sobel") and x.ndim == 2:
        with pytest.raises(ValueError, match="image"):
            m(model, x)
    else:
        out = m(model, x)
        assert out.requires_grad is False and out.grad_fn is None
        assert out.device == x.device and out.dtype == x.dtype
        assert out.shape == (x.shape if name not in SPATIAL else (4, 1, 16, 16))
        assert torch.isfinite(out).all()
    zoo.assert_unchanged(model, snap)
    assert model.training
    for h in handles:
        h.remove()


class Flaky(nn.Module):
    """Wraps a model; its forward raises on call number ``fail_at`` (1-based)."""

    def __init__(self, inner: nn.Module, fail_at: int):
        super().__init__()
        self.inner, self.fail_at, self.calls = inner, fail_at, 0

    def forward(self, x):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("injected failure")
        return self.inner(x)


def _guided_state_is_clean() -> None:
    z = torch.tensor([1.0, -1.0], requires_grad=True)
    (g,) = torch.autograd.grad((torch.relu(z) * -1.0).sum(), z)
    assert g.tolist() == [-1.0, 0.0], "a guided ReLU leaked out of the call"


@pytest.mark.parametrize("name", [m for m in methods.list() if methods.get(m).needs_model])
def test_model_untouched_after_an_injected_error(name, global_rng_guard):
    inner, x = zoo.make("resnet")
    # call 1 resolves "predicted"; 2 is the default-layer search (cam) or the first pass;
    # fail on the last pass for one-pass methods, mid-way for batched ones
    fail_at = {"gradient": 2, "gradient_x_input": 2, "guided_backprop": 2, "deconvnet": 2,
               "gradcam": 3,
               "guided_gradcam": 4, "score_cam": 5, "ablation_cam": 5,
               **{n: 2 for n in EXPECTED if n.startswith("lrp")}}.get(name, 3)
    model = Flaky(inner, fail_at)
    handles = _dirty(model)
    snap = zoo.snapshot(model)
    batched = {"integrated_gradients", "smoothgrad", "vargrad", "ig_smoothgrad", "rise",
               "occlusion", "score_cam", "ablation_cam"}
    m = fast(name, internal_batch_size=4) if name in batched else fast(name)
    with pytest.raises(RuntimeError, match="injected failure"):
        m(model, x)
    zoo.assert_unchanged(model, snap)
    _guided_state_is_clean()
    for h in handles:
        h.remove()


def test_guard_undoes_a_misbehaving_plugin():
    model, x = zoo.make("resnet")
    snap = zoo.snapshot(model)

    def messy(model, x, target):
        model.layer1.register_forward_hook(lambda m, i, o: None)
        model.train()
        model(x)  # updates batch-norm running statistics
        model(x).sum().backward()  # fills .grad
        model.fc.weight.requires_grad_(False)
        raise RuntimeError("plugin failed")

    with pytest.raises(RuntimeError, match="plugin failed"):
        methods.resolve(messy)(model, x)
    zoo.assert_unchanged(model, snap)


def test_attribution_runs_in_eval_mode(global_rng_guard):
    model = zoo._seeded(lambda: nn.Sequential(
        nn.Linear(6, 20), nn.ReLU(), nn.Dropout(0.5), nn.BatchNorm1d(20), nn.Linear(20, 3)))
    model.train()
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0, 1, 2, 0, 1])
    g = methods.get("gradient")(model, x, t)
    model.eval()
    xg = x.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(model(xg).gather(1, t[:, None]).sum(), xg)
    assert torch.equal(g, ref)


# ---------------------------------------------------------------------------------------------
# determinism and the global RNG
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["smoothgrad", "vargrad", "ig_smoothgrad", "random_gaussian",
                                  "random_uniform"])
def test_same_seed_same_maps_global_rng_untouched(name, global_rng_guard):
    model, x = zoo.make("cnn")
    a = fast(name, seed=11)(model, x)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(123)  # the global RNG's state must not matter
        b = fast(name, seed=11)(model, x)
    finally:
        torch.random.set_rng_state(state)
    c = fast(name, seed=12)(model, x)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_noise_independent_of_internal_batch_size(global_rng_guard):
    model, x = zoo.make("resnet")
    a = methods.get("smoothgrad", samples=6, internal_batch_size=4)(model, x)
    b = methods.get("smoothgrad", samples=6, internal_batch_size=None)(model, x)
    c = methods.get("smoothgrad", samples=6, internal_batch_size=12)(model, x)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-6)
    va = methods.get("vargrad", samples=7, internal_batch_size=8)(model, x)
    vb = methods.get("vargrad", samples=7, internal_batch_size=None)(model, x)
    torch.testing.assert_close(va, vb, rtol=1e-4, atol=1e-7)
    ia = methods.get("integrated_gradients", steps=9, internal_batch_size=4)(model, x)
    ib = methods.get("integrated_gradients", steps=9, internal_batch_size=None)(model, x)
    torch.testing.assert_close(ia, ib, rtol=1e-5, atol=1e-6)


def test_passes_are_bounded_by_internal_batch_size():
    model, x = zoo.make("mlp")
    sizes = []
    h = model.fc1.register_forward_pre_hook(lambda m, i: sizes.append(i[0].shape[0]))
    try:
        methods.get("integrated_gradients", steps=10, internal_batch_size=8)(model, x)
        methods.get("smoothgrad", samples=5, internal_batch_size=12)(model, x)
    finally:
        h.remove()
    # 1 pass to resolve "predicted", then IG: 10 steps x 4 rows in passes of 2 steps;
    # then 1 + smoothgrad: 5 samples in passes of 3 samples (12 rows)
    assert sizes == [4] + [8] * 5 + [4] + [12, 8]


# ---------------------------------------------------------------------------------------------
# targets
# ---------------------------------------------------------------------------------------------
def test_predicted_targets_are_computed_once_on_the_clean_input():
    model, x = zoo.make("cnn")
    seen = []

    def recorder(model, x, target):
        seen.append(target.clone())
        return torch.zeros_like(x)

    pred = methods.predicted_targets(model, x)
    with torch.no_grad():
        assert torch.equal(pred, model(x).argmax(1))
    methods.get("smoothgrad", base=recorder, samples=4, noise=5.0, internal_batch_size=8)(model, x)
    assert [s.tolist() for s in seen] == [pred.repeat(2).tolist()] * 2
    t = torch.tensor([1, 2, 3, 4])
    g = methods.get("gradient")
    assert torch.equal(g(model, x, t), g(model, x, t.to(torch.int32)))
    assert torch.equal(g(model, x, 3), g(model, x, torch.full((4,), 3)))
    assert torch.equal(g(model, x), g(model, x, pred))


def test_works_inside_no_grad_and_in_float64():
    model, x = zoo.make("cnn")
    t = torch.tensor([0, 1, 2, 3])
    ref = methods.get("gradient")(model, x, t)
    with torch.no_grad():
        assert torch.equal(methods.get("gradient")(model, x, t), ref)
    with torch.inference_mode():
        xi = x.clone()
    assert torch.equal(methods.get("gradient")(model, xi, t), ref)
    m64 = model.double()
    out = methods.get("integrated_gradients", steps=4)(m64, x.double(), t)
    assert out.dtype == torch.float64


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------
class ThreeD(nn.Module):
    def forward(self, x):
        return x.flatten(1)[:, :6].view(-1, 2, 3)


@pytest.mark.parametrize("case, exc, match", [
    ("rank3", ValueError, "shape"),
    ("int_x", TypeError, "floating"),
    ("nan", ValueError, "NaN"),
    ("inf", ValueError, "inf"),
    ("list_x", TypeError, "torch.Tensor"),
    ("target_high", ValueError, "out of range"),
    ("target_negative", ValueError, "negative"),
    ("target_len", ValueError, r"shape \(4,\)"),
    ("target_float", TypeError, "integer"),
    ("target_str", ValueError, "predicted"),
    ("output_3d", ValueError, "classes"),
    ("output_batch", ValueError, "classes"),
    ("layer_missing", KeyError, "candidate layers: conv1, conv2"),
    ("cam_flat", ValueError, "image"),
    ("sobel_flat", ValueError, "image"),
    ("bad_rule", ValueError, "riemann_right"),
    ("bad_baseline", ValueError, "broadcast"),
])
def test_bad_input_clear_errors(case, exc, match):
    model, x = zoo.make("cnn")
    flat_model, flat_x = zoo.make("mlp")
    g = methods.get("gradient")
    calls = {
        "rank3": lambda: g(model, x[:, 0]),
        "int_x": lambda: g(model, x.long()),
        "nan": lambda: g(model, x.index_put((torch.tensor([0]),), torch.tensor(float("nan")))),
        "inf": lambda: g(model, torch.where(x > 2, float("inf"), x)),
        "list_x": lambda: g(model, x.tolist()),
        "target_high": lambda: g(model, x, torch.tensor([0, 1, 2, 10])),
        "target_negative": lambda: g(model, x, torch.tensor([0, 1, 2, -1])),
        "target_len": lambda: g(model, x, torch.tensor([0, 1])),
        "target_float": lambda: g(model, x, torch.zeros(4)),
        "target_str": lambda: g(model, x, "true"),
        "output_3d": lambda: g(ThreeD(), x),
        "output_batch": lambda: g(lambda z: z.flatten()[:10].view(1, 10), x),
        "layer_missing": lambda: methods.get("gradcam", layer="conv3")(model, x),
        "cam_flat": lambda: methods.get("gradcam")(flat_model, flat_x),
        "sobel_flat": lambda: methods.get("edge_sobel")(None, flat_x),
        "bad_rule": lambda: methods.get("integrated_gradients", rule="simpson"),
        "bad_baseline": lambda: methods.get("integrated_gradients", baseline=torch.zeros(3))(
            model, x),
    }
    snap = zoo.snapshot(model)
    with pytest.raises(exc, match=match):
        calls[case]()
    zoo.assert_unchanged(model, snap)
    if case == "target_high":  # also caught by the batched passes of every gradient method
        for name in ("integrated_gradients", "smoothgrad", "gradcam", "guided_backprop"):
            with pytest.raises(ValueError, match="out of range"):
                fast(name)(model, x, torch.tensor([0, 1, 2, 10]))


def test_gradcam_layer_that_runs_twice_or_is_not_4d():
    model, x = zoo.make("cnn_shared_relu")
    with pytest.raises(ValueError, match="2 times|3 times"):
        methods.get("gradcam", layer="act")(model, x)
    with pytest.raises(ValueError, match="4-D"):
        methods.get("gradcam", layer="fc1")(model, x)
    mlp, xf = zoo.make("mlp")
    with pytest.raises(ValueError, match="image"):
        methods.get("guided_gradcam")(mlp, xf)
    with pytest.raises(ValueError, match="no convolutional layer"):
        methods.default_layer(zoo._seeded(lambda: nn.Sequential(nn.Flatten(), nn.Linear(256, 2))),
                              x)


def test_bad_settings():
    with pytest.raises(ValueError):
        methods.get("smoothgrad", samples=0)
    with pytest.raises(ValueError):
        methods.get("vargrad", noise=-0.1)
    with pytest.raises(ValueError):
        methods.get("integrated_gradients", steps=0)
    with pytest.raises(ValueError):
        methods.get("gradcam", upsample="area51")
    with pytest.raises(KeyError, match="known methods"):
        methods.get("smoothgrad", base="gradientt")


def test_plugin_output_is_checked():
    model, x = zoo.make("cnn")
    with pytest.raises(ValueError, match="expected x's shape"):
        methods.resolve(lambda m, x, t: x[:, :, :4])(model, x)
    with pytest.raises(TypeError, match="tensor"):
        methods.resolve(lambda m, x, t: 3.0)(model, x)
    out = methods.resolve(lambda m, x, t: x * 2)(model, x.requires_grad_(True))
    assert out.grad_fn is None and not out.requires_grad
