"""LRP (``methods.get("lrp")``): zennit's maps (stored fixture), identities, canonization on
randomized copies, the model guard and the errors."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import zoo
from torch import nn

from saliency_sanity import methods, models
from saliency_sanity.randomization import randomized_models

pytestmark = pytest.mark.usefixtures("one_thread")

FIXTURE = Path(__file__).parent / "fixtures" / "lrp_reference.npz"
COMPOSITES = ["epsilon_plus_flat", "epsilon_gamma_box", "epsilon_alpha2_beta1", "epsilon_plus"]
RULES = ["zero", "epsilon", "gamma", "zplus", "alpha_beta", "flat", "w_square", "z_box"]
BOUNDS = {"low": 0.0, "high": 1.0}


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


NAMES = ["mnist_cnn", "resnet_mnist", "resnet", "mnist_cnn_signed", "tanh_mlp"]


def _architecture(name: str) -> nn.Module:
    if name in ("mnist_cnn", "mnist_cnn_signed"):
        return models.get("mnist_cnn", width=0.125, seed=0)
    if name == "tanh_mlp":
        return nn.Sequential(nn.Linear(20, 16), nn.Tanh(), nn.Linear(16, 12), nn.Tanh(),
                             nn.Linear(12, 4))
    if name == "resnet_mnist":
        return zoo.resnet_mnist(seed=0)
    return zoo.make("resnet")[0]


@pytest.fixture(scope="module")
def reference():
    data = np.load(FIXTURE)
    out = {}
    for name in NAMES:
        model = _architecture(name)
        prefix = f"{name}/state/"
        state = {k[len(prefix):]: torch.from_numpy(data[k]) for k in data.files
                 if k.startswith(prefix)}
        model.load_state_dict(state)
        maps = {k.split("/map/")[1]: torch.from_numpy(data[k]).double() for k in data.files
                if k.startswith(f"{name}/map/")}
        out[name] = (model.eval(), torch.from_numpy(data[f"{name}/x"]),
                     torch.from_numpy(data[f"{name}/target"]), maps)
    return out


def _method(spec: str, **kw) -> methods.Method:
    if spec.startswith("rule:"):
        return methods.get("lrp", rules=spec[5:], **BOUNDS, **kw)
    return methods.get("lrp", composite=spec, **BOUNDS, **kw)


@pytest.mark.parametrize("name", NAMES)
def test_equals_zennit_float64(reference, name):
    """Every composite and every single rule (on all linear layers) equals zennit 0.5.1's map
    (computed in float64 by tools/make_lrp_reference.py, stored in float32)."""
    model, x, target, maps = reference[name]
    model = copy.deepcopy(model).double()
    for spec in COMPOSITES + [f"rule:{r}" for r in RULES]:
        ours = _method(spec)(model, x.double(), target)
        assert rel(ours, maps[spec]) <= 1e-5, (name, spec, rel(ours, maps[spec]))


@pytest.mark.parametrize("name", NAMES)
def test_composites_equal_zennit_float32(reference, name):
    model, x, target, maps = reference[name]
    for spec in COMPOSITES:
        ours = _method(spec)(model, x, target)
        assert ours.dtype == torch.float32
        # float32 rounding through ~10 layers (measured <= 9.1e-6); exactness: the float64 test
        assert rel(ours.double(), maps[spec]) <= 1e-4, (name, spec, rel(ours.double(), maps[spec]))


def _bias_free_mlp(seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(12, 16, bias=False), nn.ReLU(), nn.Linear(16, 10, bias=False),
                        nn.ReLU(), nn.Linear(10, 3, bias=False)).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    return net.eval()


def test_lrp0_on_bias_free_relu_mlp_is_gradient_times_input():
    net = _bias_free_mlp()
    x = torch.randn(6, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t = torch.tensor([0, 1, 2, 0, 1, 2])
    lrp0 = methods.get("lrp", rules="zero")(net, x, t)
    gxi = methods.get("gradient_x_input")(net, x, t)
    assert float((lrp0 - gxi).abs().max()) <= 1e-12 * float(gxi.abs().max())
    assert float(gxi.abs().max()) > 0


def test_epsilon_conserves_relevance_on_bias_free_nets():
    """Bias-free: the relevance sums to the target logit, up to what epsilon absorbs
    (|sum| shrinks as epsilon grows)."""
    g = torch.Generator().manual_seed(2)
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.ReLU(), nn.AvgPool2d(2),
                        nn.Conv2d(4, 6, 3, padding=1, bias=False), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(6, 3, bias=False)).double().eval()
    with torch.no_grad():
        for p in cnn.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    for net, x in ((_bias_free_mlp(3), torch.randn(5, 12, generator=g, dtype=torch.float64)),
                   (cnn, torch.randn(5, 1, 8, 8, generator=g, dtype=torch.float64))):
        t = torch.zeros(5, dtype=torch.long)
        logit = net(x)[:, 0].detach()
        sums = {}
        for eps in (1e-9, 1e-2, 1.0):
            r = methods.get("lrp", rules="epsilon", epsilon=eps, stabilizer=1e-12)(net, x, t)
            sums[eps] = r.flatten(1).sum(1)
        assert torch.allclose(sums[1e-9], logit, rtol=1e-6, atol=1e-9)
        assert bool((sums[1.0].abs() <= sums[1e-2].abs() + 1e-12).all())
        assert bool((sums[1.0].abs() < logit.abs()).all())


def _hand_merged(model: nn.Module) -> nn.Module:
    """A copy with each batch norm folded into the convolution before it, by hand."""
    twin = copy.deepcopy(model)
    for parent in twin.modules():
        for conv_name, bn_name in (("stem", "bn"), ("conv1", "bn1"), ("conv2", "bn2")):
            conv, bn = getattr(parent, conv_name, None), getattr(parent, bn_name, None)
            if not isinstance(bn, nn.BatchNorm2d):
                continue
            with torch.no_grad():
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                bias = bn.bias - bn.running_mean * scale
                if conv.bias is not None:
                    bias = bias + conv.bias * scale
                conv.weight.mul_(scale.view(-1, 1, 1, 1))
                conv.bias = nn.Parameter(bias)
            setattr(parent, bn_name, nn.Identity())
    return twin.eval()


def test_randomized_copies_are_canonized_with_their_own_batch_norm(global_rng_guard):
    model, x = zoo.make("resnet")
    model, x = model.double(), x.double()
    t = torch.zeros(4, dtype=torch.long)
    stages = list(randomized_models(model, order="cascading", init="paper", example_input=x))
    stage = next(s for s in stages if s.layers and s.layers[-1] == "layer2.bn2")
    snap = zoo.snapshot(stage.model)
    for comp in ("epsilon_plus", "epsilon_gamma_box"):
        m = methods.get("lrp", composite=comp, low=-4.0, high=4.0)
        ours = m(stage.model, x, t)
        ref = m(_hand_merged(stage.model), x, t)  # no batch norm left: nothing to canonize
        assert rel(ours, ref) <= 1e-10, comp
        trained = m(model, x, t)
        assert rel(ours, trained) > 1e-3, "the randomized batch norm changed nothing"
    zoo.assert_unchanged(stage.model, snap)


@pytest.mark.parametrize("name", ["lrp", *(f"lrp_{c}" for c in COMPOSITES)])
@pytest.mark.parametrize("model_name", ["cnn_inplace", "cnn_functional", "resnet", "mlp"])
def test_model_untouched(name, model_name, global_rng_guard):
    model, x = zoo.make(model_name)
    model.train()
    params = list(model.parameters())
    params[0].requires_grad_(False)
    params[-1].grad = torch.ones_like(params[-1])
    handle = model.register_forward_hook(lambda m, i, o: None)
    snap = zoo.snapshot(model)
    out = methods.get(name, **(BOUNDS if "box" in name else {}))(model, x)
    assert out.shape == x.shape and bool(torch.isfinite(out).all())
    assert out.grad_fn is None and not out.requires_grad
    zoo.assert_unchanged(model, snap)
    with pytest.raises(ValueError, match="out of range"):
        methods.get(name, **(BOUNDS if "box" in name else {}))(model, x, torch.full((4,), 99))
    zoo.assert_unchanged(model, snap)
    assert model.training
    handle.remove()


def test_same_maps_for_every_way_of_writing_relu():
    ref_model, x = zoo.make("cnn")
    ref = methods.get("lrp")(ref_model, x, "predicted")
    for name in ("cnn_inplace", "cnn_functional", "cnn_shared_relu"):
        model, _ = zoo.make(name)
        assert torch.equal(methods.get("lrp")(model, x, "predicted"), ref), name


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------
def test_unknown_composite_and_rule():
    with pytest.raises(ValueError, match="unknown LRP composite 'eps_plus'.*epsilon_plus_flat"):
        methods.get("lrp", composite="eps_plus")
    with pytest.raises(ValueError, match="unknown LRP rule 'zbox'.*z_box"):
        methods.get("lrp", rules={"conv": "zbox"})
    with pytest.raises(ValueError, match="unknown layer kinds"):
        methods.get("lrp", rules={"dense": "epsilon"})
    with pytest.raises(ValueError, match="alpha - beta must be 1"):
        methods.get("lrp", rules="alpha_beta", alpha=2, beta=2)


def test_box_bounds_required():
    model, x = zoo.make("cnn")
    snap = zoo.snapshot(model)
    for m in (methods.get("lrp", composite="epsilon_gamma_box"),
              methods.get("lrp_epsilon_gamma_box", high=1.0),
              methods.get("lrp", rules={"first": "z_box", "conv": "gamma", "linear": "zero"})):
        with pytest.raises(ValueError, match="needs the bounds.*low= and high="):
            m(model, x)
    zoo.assert_unchanged(model, snap)
    with pytest.raises(ValueError, match="does not broadcast"):
        methods.get("lrp_epsilon_gamma_box", low=torch.zeros(5), high=1.0)(model, x)


class _Norm(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.norm, self.fc2 = nn.Linear(20, 8), nn.LayerNorm(8), nn.Linear(8, 3)

    def forward(self, x):
        return self.fc2(self.norm(self.fc1(x)))


class _FunctionalNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(20, 8), nn.Linear(8, 3)

    def forward(self, x):
        return self.fc2(torch.nn.functional.layer_norm(self.fc1(x), (8,)))


class _Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(20, 3)
        self.inner = nn.Module()
        self.inner.scale = nn.Parameter(torch.ones(3))

    def forward(self, x):
        return self.fc(x) * self.inner.scale


def test_layers_without_a_rule_are_named():
    x = torch.randn(2, 20)
    cases = [(_Norm(), r"norm \(LayerNorm\)"), (_FunctionalNorm(), r"F\.layer_norm"),
             (_Scaled(), r"inner \(Module\)"),
             (nn.Sequential(nn.Unflatten(1, (5, 2, 2)), nn.ConvTranspose2d(5, 1, 2),
                            nn.Flatten(), nn.Linear(9, 2)), r"1 \(ConvTranspose2d\)")]
    for model, pattern in cases:
        snap = zoo.snapshot(model)
        with pytest.raises(ValueError, match="no LRP rule covers.*" + pattern):
            methods.get("lrp")(model, x)
        zoo.assert_unchanged(model, snap)
    model, x4 = zoo.make("cnn")
    with pytest.raises(ValueError, match=r"no LRP rule given for convolutions.*'conv'"):
        methods.get("lrp", rules={"linear": "epsilon"})(model, x4)


def test_torchscript_refused():
    model, x = zoo.make("mlp")
    with pytest.raises(TypeError, match="TorchScript"):
        methods.get("lrp")(torch.jit.script(model), x)


def test_composite_with_rule_overrides():
    model, x = zoo.make("cnn")
    t = torch.zeros(4, dtype=torch.long)
    mixed = methods.get("lrp", composite="epsilon_plus_flat", rules={"linear": "zero"})
    assert mixed.settings()["rules"] == {"first": "flat", "conv": "zplus", "linear": "zero"}
    same = methods.get("lrp", rules={"first": "flat", "conv": "zplus", "linear": "zero"})
    assert torch.equal(mixed(model, x, t), same(model, x, t))
    assert methods.get("lrp").settings()["composite"] == "epsilon_plus_flat"
    assert methods.get("lrp", rules="zero").settings()["composite"] is None
    with pytest.raises(ValueError, match="uses the composite 'epsilon_plus'"):
        methods.get("lrp_epsilon_plus", composite="epsilon_plus_flat")


def test_settings_are_json():
    import json

    s = methods.get("lrp", composite="epsilon_gamma_box", low=0.0, high=1.0).settings()
    assert s["name"] == "lrp" and s["composite"] == "epsilon_gamma_box"
    assert s["rules"] == {"first": "z_box", "conv": "gamma", "linear": "epsilon"}
    json.dumps(s)
    assert methods.get("lrp_epsilon_plus").settings()["name"] == "lrp_epsilon_plus"
