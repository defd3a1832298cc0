"""The engine: method metadata, the double-backward plug-in under activation reuse, stage models
held at once, units and the store (resume, damaged unit files), the common settings."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
import zoo

from saliency_sanity import checks, methods
from saliency_sanity.engine import RunConfig, batch_units
from saliency_sanity.randomization import StagePlan, discover_blocks

curvature = zoo.curvature


def test_metadata_replaces_name_tables():
    assert methods.get("gradient").reuse_safe and methods.get("smoothgrad").reuse_safe
    plug = methods.resolve(curvature)
    assert not plug.reuse_safe
    assert not methods.get("smoothgrad", base=curvature).reuse_safe  # a wrapper of a plug-in
    assert methods.resolve(curvature, reuse_safe=True).reuse_safe  # unless it says so
    assert methods.get("smoothgrad").averages_noise and methods.get("vargrad").averages_noise
    assert not methods.get("integrated_gradients").averages_noise
    assert methods.get("gradcam").needs_conv and methods.get("guided_gradcam").needs_conv
    assert methods.get("gradient").input_gradient_map
    assert not methods.get("guided_backprop").input_gradient_map


def test_double_backward_plugin_runs_with_default_settings(global_rng_guard):
    """A wrapper around a twice-differentiating plug-in used to be taken for a built-in, run
    under activation reuse and fail ('element 0 of tensors does not require grad')."""
    model, x = zoo.make("cnn")
    snap = zoo.snapshot(model)
    spec = {"sg_curv": ("smoothgrad", {"base": curvature, "samples": 2}), "curv": curvature}
    kw = {"methods": spec, "scores": ["spearman", "pearson"], "controls": False,
          "progress": False, "batch_size": 3}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        on = checks.model_randomization_test(model, x, **kw)
        off = checks.model_randomization_test(model, x, reuse_activations=False, **kw)
    pd.testing.assert_frame_equal(on.table, off.table, check_exact=True)
    zoo.assert_unchanged(model, snap)
    # and the map itself is the hand-written second derivative
    t = methods.predicted_targets(model, x[:2])
    assert torch.equal(methods.resolve(curvature)(model, x[:2], t), curvature(model, x[:2], t))


@pytest.mark.parametrize("check", ["smprt", "emprt", "scales", "mprt"])
def test_stage_models_held_at_once_do_not_grow_with_stages(check):
    """With one unit of work, a plan holds at most two stage models at once (four with null
    twins): the one being evaluated and the one it is built from."""
    model, x = zoo.make("resnet")
    n_stages = len(discover_blocks(model, x)) + 1
    kw = {"progress": False, "batch_size": len(x), "controls": False}
    if check == "smprt":
        r = checks.smooth_model_randomization_test(model, x, methods=["gradient"], samples=2,
                                                   scores=["pearson"], **kw)
        held = r.settings["engine"]["stage_models_held_at_most"]
    elif check == "emprt":
        r = checks.efficient_model_randomization_test(model, x, methods=["gradient"], **kw)
        held = r.settings["engine"]["stage_models_held_at_most"]
    elif check == "scales":
        res = checks.activation_scale_analysis(model, x, batch_size=len(x), progress=False)
        held = res.settings["engine"]["stage_models_held_at_most"]
    else:
        r = checks.model_randomization_test(model, x, methods=["gradient"], scores=["pearson"],
                                            **kw)
        held = r.settings["engine"]["stage_models_held_at_most"]
    assert n_stages >= 8
    assert held <= (4 if check == "mprt" else 2), held


def test_plan_builds_each_stage_from_the_nearest_held_one():
    model, x = zoo.make("cnn")
    plan = StagePlan(model, discover_blocks(model, x), "cascading", seed=0, cache_bytes=0)
    direct = StagePlan(model, plan.blocks, "cascading", seed=0, cache_bytes=0)
    last = len(plan) - 1
    for pos in range(len(plan)):
        plan.model(pos)  # incremental: each stage from the one before
    a, b = plan.model(last), direct.model(last)  # direct: every block at once
    for (k, ta), (_, tb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(ta, tb), k
    assert plan.peak_held <= 2
    with pytest.raises(ValueError, match="null"):
        plan.model(1, twin=True)


def test_units_have_stable_keys():
    units = batch_units(7, 3)
    assert [u.key for u in units] == ["batch-000000", "batch-000001", "batch-000002"]
    assert [(u.start, u.stop) for u in units] == [(0, 3), (3, 6), (6, 7)]
    with pytest.raises(ValueError, match="batch_size"):
        batch_units(3, 0)


def test_damaged_unit_file_is_recomputed(tmp_path):
    model, x = zoo.make("cnn")
    kw = {"methods": ["gradient"], "scores": ["pearson"], "controls": False,
          "progress": False, "batch_size": 2, "run_dir": tmp_path / "run"}
    full = checks.model_randomization_test(model, x, **kw)
    # a run stopped after its units were written, one of them then damaged
    (tmp_path / "run" / "run.json").unlink()
    store = tmp_path / "run" / "partial"
    store.mkdir()
    (store / "fingerprint.json").write_text(
        json.dumps({"fingerprint": full.settings["fingerprint"], "run": {}}))
    (store / "batch-000000.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.warns(RuntimeWarning, match="damaged"):
        again = checks.model_randomization_test(model, x, **kw)
    pd.testing.assert_frame_equal(full.table, again.table, check_exact=True)


def test_every_check_records_the_common_settings_alike():
    model, x = zoo.make("cnn")
    kw = {"methods": ["gradient"], "controls": False, "progress": False, "seed": 3,
          "batch_size": 4}
    results = [
        checks.model_randomization_test(model, x, scores=["pearson"], **kw),
        checks.smooth_model_randomization_test(model, x, scores=["pearson"], samples=2, **kw),
        checks.efficient_model_randomization_test(model, x, **kw),
        checks.random_logit_test(model, x, scores=["pearson"], **kw),
        checks.compare_models(model, model, x, scores=["pearson"], **kw),
    ]
    common = set(RunConfig().record(x, None, x.device, "predicted", {}, {}))
    for r in results:
        assert common <= set(r.settings), (r.check, common - set(r.settings))
        assert r.settings["seed"] == 3 and r.settings["batch_size"] == 4
    with pytest.raises(TypeError, match="unknown setting 'batchsize'"):
        checks.random_logit_test(model, x, batchsize=3)
    assert np.isfinite(results[0].table["value"]).any()
