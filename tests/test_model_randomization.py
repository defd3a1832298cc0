"""The model randomization check end to end, on tiny models (numbers recomputed by hand)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import zoo

from saliency_sanity import methods, model_randomization_test, randomized_models, scores
from saliency_sanity.checks import COLUMNS, CheckResult
from saliency_sanity.engine import derive_seed, method_for_call

SCORES = ["spearman_abs", "spearman", "ssim", "pearson"]


def _run(model, x, **kw):
    kw.setdefault("methods", ["gradient", "smoothgrad"])
    kw.setdefault("scores", SCORES)
    kw.setdefault("progress", False)
    kw.setdefault("batch_size", 3)
    return model_randomization_test(model, x, **kw)


def test_table_schema_and_stages():
    model, x = zoo.make("cnn")
    res = _run(model, x)
    assert list(res.table.columns) == COLUMNS
    n_blocks = len(res.settings["blocks"])
    assert n_blocks == 4  # conv1, conv2, fc1, fc2
    assert [s["index"] for s in res.stages] == list(range(n_blocks + 1))
    # cascading: stage k names the k-th block from the top
    assert [s["block"] for s in res.stages[1:]] == ["fc2", "fc1", "conv2", "conv1"]
    labels = ["gradient", "smoothgrad", *methods.defaults(control=True)]
    assert sorted(res.table["method"].unique()) == sorted(labels)
    # one row per method, stage >= 1, sample, metric
    assert len(res.table) == len(labels) * n_blocks * x.shape[0] * len(SCORES)
    assert set(res.table["stage"]) == set(range(1, n_blocks + 1))
    for k, block in [(s["index"], s["block"]) for s in res.stages[1:]]:
        assert set(res.table.loc[res.table["stage"] == k, "layer"]) == {block}


def test_every_row_recomputed_by_hand():
    """Maps from randomized_models stages and scores called directly reproduce every row."""
    model, x = zoo.make("cnn")
    res = _run(model, x, methods=["gradient", "smoothgrad"], controls=["random_gaussian"],
               seed=3, batch_size=4, target_mode="predicted")
    stages = list(randomized_models(model, order="cascading", init="paper", seed=3,
                                    example_input=x))
    meths = {"gradient": methods.get("gradient"), "smoothgrad": methods.get("smoothgrad"),
             "random_gaussian": methods.get("random_gaussian")}
    ref = {}
    for st in stages:
        for label, m in meths.items():
            call = method_for_call(m, label, 3, st.index, 0)
            t = methods.predicted_targets(st.model, x)
            maps = call(st.model, x, t)
            if st.index == 0:
                ref[label] = maps
                continue
            for sname in SCORES:
                want = scores.get(sname)(ref[label], maps).double().numpy()
                got = (res.table.query("method == @label and stage == @st.index and "
                                       "metric == @sname").sort_values("sample")["value"]
                       .to_numpy())
                np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, equal_nan=True)


def test_controls_behave_as_defined():
    model, x = zoo.make("cnn")
    res = _run(model, x, methods=["gradient"], controls=["edge_sobel", "random_gaussian"])
    t = res.table
    edge = t[(t.method == "edge_sobel") & (t.metric == "spearman_abs")]["value"]
    # the edge detector ignores the model: its map is identical at every stage
    np.testing.assert_array_equal(edge.to_numpy(), np.ones(len(edge)))
    # random maps are redrawn per stage: independent of the stage-0 map
    rnd = t[(t.method == "random_gaussian") & (t.metric == "spearman")]["value"]
    assert rnd.abs().max() < 0.5 and abs(rnd.mean()) < 0.15
    assert derive_seed(0, "random_gaussian", "stage", 1) != derive_seed(0, "random_gaussian",
                                                                        "stage", 2)


def test_model_untouched_and_global_rng(global_rng_guard):
    for name in ["cnn_inplace", "resnet", "mlp"]:
        model, x = zoo.make(name)
        model.train()  # the user's mode must survive
        snap = zoo.snapshot(model)
        _run(model, x, methods=["gradient"], scores=["spearman_abs", "pearson"])
        zoo.assert_unchanged(model, snap)


def test_model_untouched_after_error_mid_run():
    model, x = zoo.make("resnet")
    snap = zoo.snapshot(model)
    calls = {"n": 0}

    def flaky(m, xb, target):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("injected failure")
        return methods.get("gradient")(m, xb, target)

    with pytest.raises(RuntimeError, match="injected failure"):
        _run(model, x, methods=[flaky], scores=["spearman_abs"], controls=False)
    zoo.assert_unchanged(model, snap)
    assert calls["n"] == 3


def test_same_seed_same_table_other_seed_differs():
    model, x = zoo.make("cnn")
    a = _run(model, x, seed=7).table
    b = _run(model, x, seed=7).table
    pd.testing.assert_frame_equal(a, b)
    c = _run(model, x, seed=8).table
    assert not np.allclose(a["value"].to_numpy(), c["value"].to_numpy(), equal_nan=True)


def test_target_modes():
    model, x = zoo.make("cnn")
    given = torch.tensor([1, 2, 3, 4])
    fixed = _run(model, x, target=given, methods=["gradient"], controls=False)
    assert fixed.settings["target_mode"] == "fixed"
    for k, t in fixed.examples["targets"].items():
        np.testing.assert_array_equal(t, given.numpy()), k
    pred = _run(model, x, methods=["gradient"], controls=False)
    stages = list(randomized_models(model, seed=0, example_input=x))
    for st in stages:
        want = st.model(x).argmax(1).numpy()
        np.testing.assert_array_equal(pred.examples["targets"][st.index], want)
    with pytest.raises(ValueError, match="target_mode='fixed'"):
        _run(model, x, target=given, target_mode="predicted")


def test_independent_and_bottom_up_orders():
    model, x = zoo.make("mlp")
    ind = _run(model, x, order="independent", methods=["gradient"], scores=["spearman"])
    assert [s["layers"] for s in ind.stages[1:]] == [["fc3"], ["fc2"], ["fc1"]] or \
        [s["layers"] for s in ind.stages[1:]] == [["fc1"], ["fc2"], ["fc3"]]
    bu = _run(model, x, order="bottom_up", methods=["gradient"], scores=["spearman"])
    assert [s["block"] for s in bu.stages[1:]] == ["fc1", "fc2", "fc3"]
    assert bu.stages[-1]["layers"] == ["fc1", "fc2", "fc3"]


def test_flat_inputs_skip_image_only_scores():
    model, x = zoo.make("mlp")
    res = _run(model, x, methods=["gradient"], scores=None)
    assert "ssim" not in set(res.table["metric"]) and "spearman" in set(res.table["metric"])
    with pytest.raises(ValueError, match="needs image maps"):
        _run(model, x, methods=["gradient"], scores=["ssim"])


def test_save_load_roundtrip(tmp_path):
    model, x = zoo.make("cnn")
    res = _run(model, x)
    res.save(tmp_path / "run")
    back = CheckResult.load(tmp_path / "run")
    pd.testing.assert_frame_equal(back.table, res.table, check_dtype=False)
    assert back.settings["blocks"] == res.settings["blocks"]
    for label, per_stage in res.examples["maps"].items():
        for k, arr in per_stage.items():
            np.testing.assert_array_equal(back.examples["maps"][label][k], arr)
    assert sorted(back.summary()["method"].unique()) == sorted(res.table["method"].unique())


def test_summary_interval_matches_scipy():
    from scipy import stats

    model, x = zoo.make("cnn")
    res = _run(model, x, methods=["gradient"], controls=False, scores=["spearman_abs"])
    summ = res.summary().set_index(["method", "stage"])
    for k in (1, 4):
        v = res.table.query("stage == @k")["value"].to_numpy()
        lo, hi = stats.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=stats.sem(v))
        row = summ.loc[("gradient", k)]
        assert row["mean"] == pytest.approx(v.mean(), abs=1e-12)
        assert row["lo"] == pytest.approx(lo, abs=1e-9) and row["hi"] == pytest.approx(hi, abs=1e-9)


@pytest.mark.parametrize("bad, match", [
    (lambda x: x.long(), "float"),
    (lambda x: x[0], "shape"),
    (lambda x: x.masked_fill(x > 1, float("nan")), "NaN"),
    (lambda x: x[:0], "empty"),
])
def test_bad_inputs(bad, match):
    model, x = zoo.make("cnn")
    x = x.abs() + 0.5 * (x > 1)
    with pytest.raises((ValueError, TypeError), match=match):
        _run(model, bad(x))


def test_unknown_names_list_known_ones():
    model, x = zoo.make("cnn")
    with pytest.raises(KeyError, match="gradient"):
        _run(model, x, methods=["gradiant"])
    with pytest.raises(KeyError, match="spearman_abs"):
        _run(model, x, scores=["spearmann"])


def test_null_reference_recomputed_by_hand():
    """At stage k the null compares the stage's maps with maps of a second copy whose same
    blocks are randomized with the null seed."""
    from saliency_sanity.randomization import discover_blocks, randomize_blocks

    model, x = zoo.make("cnn")
    res = _run(model, x, methods=["gradient"], controls=False, scores=["spearman_abs"], seed=2,
               batch_size=4)
    assert res.null is not None and list(res.null.columns) == COLUMNS
    blocks = {b.name: b for b in discover_blocks(model, x)}
    null_seed = derive_seed(2, "null-reference")
    g = methods.get("gradient")
    for st in randomized_models(model, seed=2, example_input=x):
        if st.index == 0:
            continue
        twin = randomize_blocks(zoo.make("cnn")[0], [blocks[n] for n in st.layers],
                                seed=null_seed)
        a = g(st.model, x, "predicted")
        b = g(twin, x, "predicted")
        want = scores.get("spearman_abs")(a, b).double().numpy()
        got = res.null.query("stage == @st.index").sort_values("sample")["value"].to_numpy()
        np.testing.assert_allclose(got, want, atol=1e-12)


def test_null_band_of_unused_block_equals_trained_similarity():
    """Randomizing a block the forward pass never uses changes nothing: the similarity to the
    trained maps and the null reference are both exactly 1."""
    import torch.nn as nn

    from saliency_sanity.randomization import discover_blocks

    class WithUnusedHead(zoo.CNN):
        def __init__(self):
            super().__init__()
            self.unused = nn.Linear(3, 3)

    torch_state = torch.random.get_rng_state()
    model = WithUnusedHead().eval()
    torch.random.set_rng_state(torch_state)
    _, x = zoo.make("cnn")
    with pytest.warns(UserWarning):
        blocks = discover_blocks(model, x, allow_unused=True)
    assert blocks[-1].name == "unused"
    res = _run(model, x, methods=["gradient"], controls=False, scores=["spearman", "ssim"],
               blocks=blocks, order="cascading")
    first = res.table[res.table.stage == 1]
    null1 = res.null[res.null.stage == 1]
    assert set(first["layer"]) == {"unused"}
    np.testing.assert_allclose(first["value"].to_numpy(), 1.0, atol=1e-6)
    np.testing.assert_allclose(null1["value"].to_numpy(), first["value"].to_numpy(), atol=1e-6)
    # once real blocks are randomized, two random models share much less than the trained one
    last = res.summary(null=True).query("stage == 5 and metric == 'spearman'")["mean"].item()
    assert abs(last) < 0.9


def test_shared_copy_shares_only_what_is_not_fresh():
    from torch import nn

    from saliency_sanity.randomization import shared_copy

    model, x = zoo.make("resnet")
    model.fc2 = model.fc  # the same module under two names
    fresh = {"layer2.bn2.weight", "layer2.bn2.running_mean", "fc.weight"}
    twin = shared_copy(model, fresh)
    ours = dict(twin.named_parameters(remove_duplicate=False))
    theirs = dict(model.named_parameters(remove_duplicate=False))
    for name, p in theirs.items():
        assert (ours[name] is p) == (name not in fresh and name != "fc2.weight"), name
        assert torch.equal(ours[name], p)
    assert twin.fc2 is twin.fc and twin.fc is not model.fc  # still one module, copied once
    assert twin.layer2.bn2.running_mean is not model.layer2.bn2.running_mean
    assert twin.layer1.bn1.running_mean is model.layer1.bn1.running_mean
    # copy-on-write: only modules above a fresh tensor are new objects
    assert twin.layer1 is model.layer1 and twin.stem is model.stem
    assert twin.layer2 is not model.layer2 and twin.layer2.conv1 is model.layer2.conv1
    assert torch.equal(twin(x), model(x))
    handle = twin.layer2.register_forward_hook(lambda *a: None)
    assert len(model.layer2._forward_hooks) == 0  # copied modules have their own hooks
    handle.remove()
    with torch.no_grad():
        twin.fc.weight.add_(1.0)
    assert not torch.equal(twin.fc.weight, model.fc.weight)
    assert isinstance(twin.fc.weight, nn.Parameter)
