"""Activation reuse across cascading stages changes no number, and does reuse."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
import zoo
from torch import nn

from saliency_sanity import methods, model_randomization_test
from saliency_sanity.engine import ActivationReuse

# few passes (chunked: several passes per map) to keep the tests short
SMALL = {"internal_batch_size": 5}
FAST = {"integrated_gradients": {"steps": 4, **SMALL}, "smoothgrad": {"samples": 3, **SMALL},
        "vargrad": {"samples": 3, **SMALL}, "ig_smoothgrad": {"samples": 2, "steps": 3, **SMALL},
        "rise": {"n_masks": 6, "s": 3, "p1": 0.5, **SMALL}, "occlusion": {"patch": 8, "stride": 4,
                                                                       **SMALL},
        "score_cam": SMALL, "ablation_cam": SMALL}
#: every registered method that calls the model and declares itself safe under reuse
BUILTIN = [m for m in methods.list()
           if methods.get(m).needs_model and methods.get(m).reuse_safe]


def _methods(name: str) -> dict:
    model, x = zoo.make(name)
    return {m: methods.get(m, **FAST.get(m, {})) for m in BUILTIN
            if methods.get(m).applies(model, x)}  # flat inputs: no Grad-CAM


def test_every_model_calling_builtin_is_covered():
    assert {"gradient", "guided_backprop", "gradcam", "smoothgrad"} <= set(BUILTIN)
    assert set(FAST) <= set(BUILTIN)


def _pair(model, x, **kw):
    kw = {"scores": ["spearman", "pearson"], "progress": False, "batch_size": 3,
          "controls": ["random_gaussian"], **kw}
    on = model_randomization_test(model, x, **kw)
    kw["reuse_activations"] = False
    off = model_randomization_test(model, x, **kw)
    return on, off


def _assert_identical(on, off) -> None:
    pd.testing.assert_frame_equal(on.table, off.table, check_exact=True)
    pd.testing.assert_frame_equal(on.null, off.null, check_exact=True)
    for label, per_stage in off.examples["maps"].items():
        for k, maps in per_stage.items():
            assert (on.examples["maps"][label][k] == maps).all(), (label, k)


@pytest.mark.parametrize("name", [n if n == "cnn" else pytest.param(n, marks=pytest.mark.slow)
                                  for n in zoo.ALL])
@pytest.mark.parametrize("order", ["cascading", "independent"])
def test_reuse_changes_no_number(name, order):
    """Every builtin method, every zoo model (in-place, functional and shared ReLUs, residual
    blocks with batch norm, an MLP), null twins included: bit-identical tables and maps with
    reuse on and off, and operations were in fact reused."""
    model, x = zoo.make(name)
    snap = zoo.snapshot(model)
    on, off = _pair(model, x, methods=_methods(name), order=order, seed=2)
    _assert_identical(on, off)
    zoo.assert_unchanged(model, snap)
    assert on.settings["activation_reuse"]["reused_operations"] > 0
    assert off.settings["activation_reuse"] == {"budget_bytes": 0, "reused_operations": 0}


def test_budget_caps_what_is_kept():
    model, x = zoo.make("resnet")
    on, off = _pair(model, x, methods=["gradient", "smoothgrad"], reuse_activations=1)
    _assert_identical(on, off)
    assert on.settings["activation_reuse"]["reused_operations"] == 0
    big, _ = _pair(model, x, methods=["gradient", "smoothgrad"], reuse_activations=2**30)
    assert big.settings["activation_reuse"]["reused_operations"] > 0


def test_bottom_up_does_not_reuse():
    model, x = zoo.make("cnn")
    on, off = _pair(model, x, methods=["gradient"], order="bottom_up")
    _assert_identical(on, off)
    assert on.settings["activation_reuse"]["budget_bytes"] == 0


def test_plugins_that_differentiate_twice_run_without_reuse():
    """A plug-in method's second derivative would not pass through a reused operation's
    backward: plug-ins are called outside the reuse mode and get the same numbers."""

    curvature = zoo.curvature
    model, x = zoo.make("mlp")
    model.relu = nn.Tanh()  # a smooth net: the second derivative is not zero
    on, off = _pair(model, x, methods={"curvature": curvature, "gradient": "gradient"})
    _assert_identical(on, off)
    assert on.table.loc[on.table["method"] == "curvature", "value"].notna().all()


def test_bad_budget_is_refused():
    model, x = zoo.make("cnn")
    with pytest.raises(ValueError, match="reuse_activations must be"):
        model_randomization_test(model, x, methods=["gradient"], reuse_activations=-1,
                                 progress=False)


def test_mode_reuses_only_same_weights_and_inputs():
    """Unit level: a different input, a different weight tensor or a weight changed in place is
    computed afresh; an output a caller modifies in place (an in-place ReLU right after the
    conv) is detected and handed out as a copy from the next recording on; gradients through a
    reused op equal the plain ones."""
    g = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(2, 3, 3)
    fc = nn.Linear(48, 2)
    x = torch.randn(2, 2, 6, 6, generator=g)
    reuse = ActivationReuse()

    def run(inp, *, inplace=False):
        xg = inp.clone().requires_grad_(True)
        h = conv(xg)
        h = torch.relu_(h) if inplace else torch.relu(h)
        y = fc(h.flatten(1))
        (gx,) = torch.autograd.grad(y.square().sum(), xg)
        return y.detach(), gx

    def replay(inp, **kw):
        reuse.rewind()
        with reuse.replay():
            return run(inp, **kw)

    plain = run(x)
    with reuse.record():
        first = run(x)
    assert torch.equal(first[0], plain[0]) and torch.equal(first[1], plain[1])
    for _ in range(2):
        again = replay(x)
        assert torch.equal(again[0], plain[0]) and torch.equal(again[1], plain[1])
    assert reuse.hits == 4  # conv and fc, twice
    replay(x + 1.0)  # another input: conv computed, fc's input differs too
    assert reuse.hits == 4
    with torch.no_grad():
        conv.weight.add_(1.0)  # changed in place: its version differs
    changed = replay(x)
    with torch.no_grad():
        conv.weight.sub_(1.0)
    assert reuse.hits == 4 and not torch.equal(changed[0], plain[0])

    # in place on the handed-out alias: detected, computed afresh, copied after re-recording
    reuse.clear()
    plain = run(x, inplace=True)
    with reuse.record():
        run(x, inplace=True)  # the trained forward itself changes the conv output in place
    hits = reuse.hits
    out = replay(x, inplace=True)
    assert torch.equal(out[0], plain[0]) and torch.equal(out[1], plain[1])
    assert reuse.hits == hits + 1  # fc reused, conv not
    reuse.clear()
    with reuse.record():
        run(x, inplace=True)
    for _ in range(2):
        out = replay(x, inplace=True)
        assert torch.equal(out[0], plain[0]) and torch.equal(out[1], plain[1])
    assert reuse.hits == hits + 5
    reuse.clear()
    assert reuse.entries == {} and reuse.used == 0
