"""Deconvnet: a hand-derived reference on a tiny net, Captum's Deconvolution on module ReLUs,
every ReLU flavour caught, the same clear error as guided backprop for other activations."""

from __future__ import annotations

import pytest
import torch
import zoo
from torch import nn

from saliency_sanity import methods

CA = pytest.importorskip("captum.attr")
pytestmark = pytest.mark.usefixtures("one_thread")


def test_hand_derived_two_layer_net():
    """f(x) = v . relu(W x): Deconvnet's map is W^T relu(v) whatever the hidden signs; the
    gradient is W^T (v * [W x > 0])."""
    w = torch.tensor([[1.0, -2.0, 0.5], [0.0, 1.0, 1.0], [-1.0, 0.5, 2.0]])
    v = torch.tensor([2.0, -1.0, 3.0])
    lin, head = nn.Linear(3, 3, bias=False), nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(w)
        head.weight.copy_(v[None])
    model = nn.Sequential(lin, nn.ReLU(), head)
    x = torch.tensor([[1.0, 1.0, -1.0], [-2.0, 0.5, 0.0]])
    t = torch.zeros(2, dtype=torch.long)
    got = methods.get("deconvnet")(model, x, t)
    want = (w.T @ v.clamp(min=0)).expand(2, 3)
    assert torch.equal(got, want)
    grad = methods.get("gradient")(model, x, t)
    assert not torch.equal(got, grad)  # a hidden unit is off: the rules differ


@pytest.mark.parametrize("name", ["cnn", "resnet", "mlp"])
def test_equals_captum_deconvolution(name, global_rng_guard):
    model, x = zoo.make(name)
    snap = zoo.snapshot(model)
    t = methods.predicted_targets(model, x)
    ours = methods.get("deconvnet")(model, x, t)
    ref = CA.Deconvolution(model).attribute(x.clone(), target=t).detach()
    assert (ours - ref).abs().max() <= 1e-5 * ref.abs().max()
    zoo.assert_unchanged(model, snap)


@pytest.mark.parametrize("name", ["cnn_inplace", "cnn_functional", "cnn_shared_relu"])
def test_every_relu_flavour_is_caught(name):
    """In-place, functional and shared ReLUs give the same map as the plain module ReLUs."""
    plain, x = zoo.make("cnn")
    other, _ = zoo.make(name)
    other.load_state_dict(plain.state_dict())
    t = methods.predicted_targets(plain, x)
    assert torch.equal(methods.get("deconvnet")(other, x, t),
                       methods.get("deconvnet")(plain, x, t))


def test_other_activations_are_refused_by_name():
    model = nn.Sequential(nn.Linear(3, 4), nn.GELU(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"deconvnet defines its backward rule for ReLUs only.*"
                                         r"GELU"):
        methods.get("deconvnet")(model, torch.randn(2, 3))
