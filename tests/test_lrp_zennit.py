"""LRP against zennit 0.5.1 itself (the vision environment; skipped where zennit is missing)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zoo

pytest.importorskip("zennit")
pytestmark = pytest.mark.vision

import lrp_zennit as lz  # noqa: E402  (needs zennit)

from saliency_sanity import methods, models  # noqa: E402

COMPOSITES = ["epsilon_plus_flat", "epsilon_gamma_box", "epsilon_alpha2_beta1", "epsilon_plus"]
RULES = ["zero", "epsilon", "gamma", "zplus", "alpha_beta", "flat", "w_square", "z_box"]
BOUNDS = {"low": 0.0, "high": 1.0}


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


def _ours(spec):
    if spec.startswith("rule:"):
        return methods.get("lrp", rules=spec[5:], **BOUNDS)
    return methods.get("lrp", composite=spec, **BOUNDS)


def _demo_and_resnet():
    g = torch.Generator().manual_seed(11)
    x = torch.rand(4, 1, 28, 28, generator=g)
    resnet = zoo.resnet_mnist(seed=1)
    with torch.no_grad():
        for m in resnet.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return {"demo_cnn": (models.get("mnist_cnn", seed=0).eval(), x),
            "resnet_mnist": (resnet.eval(), x)}


@pytest.mark.parametrize("name", ["demo_cnn", "resnet_mnist"])
def test_composites_equal_zennit(name):
    model, x = _demo_and_resnet()[name]
    t = model(x).argmax(1)
    for spec in COMPOSITES:
        ref = lz.attribute(model, x, t, lz.composite(spec, model, **BOUNDS))
        assert rel(_ours(spec)(model, x, t), ref) <= 1e-5, spec


@pytest.mark.parametrize("name", ["demo_cnn", "resnet_mnist"])
def test_single_rules_equal_zennit_float64(name):
    model, x = _demo_and_resnet()[name]
    model, x = model.double(), x.double()
    t = model(x).argmax(1)
    for spec in [f"rule:{r}" for r in RULES] + ["first:flat:gamma", "first:w_square:zplus"]:
        if spec.startswith("first:"):
            _, first, other = spec.split(":")
            ours = methods.get("lrp", rules={"first": first, "conv": other, "linear": other})
        else:
            ours = _ours(spec)
        ref = lz.attribute(model, x, t, lz.composite(spec, model, **BOUNDS))
        assert rel(ours(model, x, t), ref) <= 1e-5, spec


def test_zennit_merge_keeps_the_batch_norm_eps():
    """Why the reference patches zennit's merge: unpatched, its canonized model is not the
    original model (each merged batch norm still divides by sqrt(1 + eps))."""
    model, x = _demo_and_resnet()["resnet_mnist"]
    model, x = model.double(), x.double()
    t = model(x).argmax(1)
    spec = "epsilon_plus"
    ours = _ours(spec)(model, x, t)
    exact = lz.attribute(model, x, t, lz.composite(spec, model))
    plain = lz.attribute(model, x, t, lz.composite(spec, model, exact=False))
    assert rel(ours, exact) <= 1e-10
    assert rel(ours, plain) > 1e-7


def test_stored_fixture_is_zennits_current_output():
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "tools"))
    try:
        import make_lrp_reference as mk
    finally:
        sys.path.pop(0)
    data = np.load(root / "tests" / "fixtures" / "lrp_reference.npz")
    for name, (model, x) in mk.build().items():
        model = model.double()
        t = torch.from_numpy(data[f"{name}/target"])
        for spec in ("epsilon_plus_flat", "epsilon_gamma_box"):
            ref = lz.attribute(model, x.double(), t, lz.composite(spec, model, **mk.BOUNDS))
            stored = torch.from_numpy(data[f"{name}/map/{spec}"]).double()
            assert rel(stored, ref) <= 1e-6, (name, spec)
