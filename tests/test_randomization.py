"""Layer discovery, orders and stages of saliency_sanity.randomization, against hand-written
expectations (names of blocks and of the parameters each stage has randomized)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zoo
from test_randomization_toys import TOY_FORWARD, make

from saliency_sanity.randomization import (
    ROOT,
    Block,
    InitScheme,
    Paper,
    Stage,
    block_seed,
    discover_blocks,
    init_schemes,
    orders,
    randomize_blocks,
    randomized_models,
)

INITS = ["paper", "reinit", "permute", "moment_matched"]
TOY_PARAMS = {
    "stem": {"stem.weight", "stem.bias"},
    "bn": {"bn.weight", "bn.bias"},
    "body.0": {"body.0.weight", "body.0.bias"},
    "body.2": {"body.2.weight", "body.2.bias"},
    "head": {"head.weight", "head.bias"},
}


def changed_params(model, trained) -> set[str]:
    ref = dict(trained.named_parameters())
    return {n for n, p in model.named_parameters() if not torch.equal(p, ref[n])}


# ---------------------------------------------------------------- discovery


def test_forward_order_not_registration_order():
    model, x = make("toy")
    blocks = discover_blocks(model, x)
    assert [b.name for b in blocks] == TOY_FORWARD
    assert [b.modules for b in blocks] == [(n,) for n in TOY_FORWARD]
    assert {b.name: set(b.params) for b in blocks} == TOY_PARAMS
    bn = blocks[1]
    assert set(bn.buffers) == {"bn.running_mean", "bn.running_var", "bn.num_batches_tracked"}
    assert all(b.buffers == () for b in blocks if b.name != "bn")
    assert all(b.reached for b in blocks)


def test_zoo_models_forward_order():
    cnn, x = zoo.make("cnn")
    assert [b.name for b in discover_blocks(cnn, x)] == ["conv1", "conv2", "fc1", "fc2"]
    resnet, x = zoo.make("resnet")
    assert [b.name for b in discover_blocks(resnet, x)] == [
        "stem", "bn", "layer1.conv1", "layer1.bn1", "layer1.conv2", "layer1.bn2",
        "layer2.conv1", "layer2.bn1", "layer2.conv2", "layer2.bn2", "fc",
    ]


def test_class_token_forms_root_block_where_first_used():
    model, x = make("token")
    blocks = discover_blocks(model, x)
    assert [b.name for b in blocks] == ["embed", ROOT, "mix", "head"]
    root = blocks[1]
    assert root.modules == ("",)
    assert root.params == ("cls_token", "pos")


def test_shared_modules_and_tied_parameters_appear_once():
    model, x = make("shared")
    blocks = discover_blocks(model, x)
    assert [b.name for b in blocks] == ["fc", "tied", "out"]
    assert [b.params for b in blocks] == [
        ("fc.weight", "fc.bias"), ("tied.bias",), ("out.weight", "out.bias"),
    ]


def test_functionally_used_submodule_is_placed_by_first_use():
    model, x = make("attn")
    blocks = discover_blocks(model, x)
    assert [b.name for b in blocks] == ["attn", "attn.out_proj", "head"]
    assert set(blocks[0].params) == {"attn.in_proj_weight", "attn.in_proj_bias"}


def test_unreached_module_raises_or_goes_last():
    model, x = make("unused")
    with pytest.raises(ValueError, match="spare"):
        discover_blocks(model, x)
    with pytest.warns(UserWarning, match="spare"):
        blocks = discover_blocks(model, x, allow_unused=True)
    assert [(b.name, b.reached) for b in blocks] == [
        ("fc", True), ("out", True), ("spare", False),
    ]


def test_group_by_names_and_children():
    model, x = zoo.make("resnet")
    layer = {
        "layer1.conv1.weight", "layer1.bn1.weight", "layer1.bn1.bias",
        "layer1.conv2.weight", "layer1.bn2.weight", "layer1.bn2.bias",
    }
    for group_by in (["layer1", "layer2"], "children"):
        blocks = discover_blocks(model, x, group_by=group_by)
        assert [b.name for b in blocks] == ["stem", "bn", "layer1", "layer2", "fc"]
        b1 = blocks[2]
        assert set(b1.params) == layer
        assert b1.modules == ("layer1.conv1", "layer1.bn1", "layer1.conv2", "layer1.bn2")
        assert set(b1.buffers) == {
            f"layer1.{bn}.{s}" for bn in ("bn1", "bn2")
            for s in ("running_mean", "running_var", "num_batches_tracked")
        }
    # the first matching entry wins; a name is matched as a dotted prefix only
    blocks = discover_blocks(model, x, group_by=["layer1.bn1", "layer1"])
    assert [b.name for b in blocks][2:5] == ["layer1", "layer1.bn1", "layer2.conv1"]
    pre, xp = make("prefixes")
    assert [b.name for b in discover_blocks(pre, xp, group_by=["blk"])] == ["blk", "blk2"]


def test_group_by_errors():
    model, x = make("toy")
    with pytest.raises(ValueError, match="bod"):
        discover_blocks(model, x, group_by=["bod"])
    with pytest.raises(ValueError, match="children"):
        discover_blocks(model, x, group_by="child")


def test_discovery_leaves_model_untouched(global_rng_guard):
    model, x = zoo.make("resnet")
    model.layer1.train()
    model.fc.weight.requires_grad_(False)
    model.bn.register_forward_hook(lambda *a: None)
    snap = zoo.snapshot(model)
    discover_blocks(model, x)
    zoo.assert_unchanged(model, snap)


# ---------------------------------------------------------------- orders and stages


EXPECTED_LAYERS = {
    "cascading": [(), ("head",), ("head", "body.2"), ("head", "body.2", "body.0"),
                  ("head", "body.2", "body.0", "bn"),
                  ("head", "body.2", "body.0", "bn", "stem")],
    "bottom_up": [(), ("stem",), ("stem", "bn"), ("stem", "bn", "body.0"),
                  ("stem", "bn", "body.0", "body.2"),
                  ("stem", "bn", "body.0", "body.2", "head")],
    "independent": [(), ("head",), ("body.2",), ("body.0",), ("bn",), ("stem",)],
}
EXPECTED_CHANGED = {
    "cascading": [set(), {"head.weight", "head.bias"},
                  {"head.weight", "head.bias", "body.2.weight", "body.2.bias"},
                  {"head.weight", "head.bias", "body.2.weight", "body.2.bias",
                   "body.0.weight", "body.0.bias"},
                  {"head.weight", "head.bias", "body.2.weight", "body.2.bias",
                   "body.0.weight", "body.0.bias", "bn.weight", "bn.bias"},
                  {"head.weight", "head.bias", "body.2.weight", "body.2.bias",
                   "body.0.weight", "body.0.bias", "bn.weight", "bn.bias",
                   "stem.weight", "stem.bias"}],
    "bottom_up": [set(), {"stem.weight", "stem.bias"},
                  {"stem.weight", "stem.bias", "bn.weight", "bn.bias"},
                  {"stem.weight", "stem.bias", "bn.weight", "bn.bias",
                   "body.0.weight", "body.0.bias"},
                  {"stem.weight", "stem.bias", "bn.weight", "bn.bias",
                   "body.0.weight", "body.0.bias", "body.2.weight", "body.2.bias"},
                  {"stem.weight", "stem.bias", "bn.weight", "bn.bias",
                   "body.0.weight", "body.0.bias", "body.2.weight", "body.2.bias",
                   "head.weight", "head.bias"}],
    "independent": [set(), {"head.weight", "head.bias"}, {"body.2.weight", "body.2.bias"},
                    {"body.0.weight", "body.0.bias"}, {"bn.weight", "bn.bias"},
                    {"stem.weight", "stem.bias"}],
}


def test_orders_registry():
    assert tuple(orders) == ("cascading", "bottom_up", "independent")


@pytest.mark.parametrize("order", ["cascading", "bottom_up", "independent"])
def test_stage_sequence_hand_written(order):
    model, x = make("toy")
    stages = list(randomized_models(model, order=order, init="paper", seed=0, example_input=x))
    # checked after the whole iteration: later stages must not have mutated earlier models
    assert [s.index for s in stages] == list(range(6))
    assert [s.layers for s in stages] == EXPECTED_LAYERS[order]
    assert [s.block for s in stages] == [None] + [ls[-1] for ls in EXPECTED_LAYERS[order][1:]]
    assert [changed_params(s.model, model) for s in stages] == EXPECTED_CHANGED[order]
    trained_bufs = dict(model.named_buffers())
    for s in stages:
        assert isinstance(s, Stage)
        assert s.model is not model
        assert not any(m.training for m in s.model.modules())
        for n, b in s.model.named_buffers():  # "paper" keeps the running statistics
            assert torch.equal(b, trained_bufs[n])
        assert (s.order, s.init, s.seed) == (order, "paper", 0)
        assert s.init_settings == {"std": 0.01, "mean": 0.0, "truncation": 2.0, "bias": None}
    assert len({id(s.model) for s in stages}) == len(stages)


@pytest.mark.parametrize("order", ["cascading", "bottom_up", "independent"])
def test_number_of_stages(order):
    model, x = zoo.make("resnet")
    it = randomized_models(model, order=order, example_input=x, group_by="children")
    assert len(it) == 6 and len(list(it)) == 6
    assert [b.name for b in it.blocks] == ["stem", "bn", "layer1", "layer2", "fc"]


def test_cascading_on_class_token_model():
    model, x = make("token")
    stages = list(randomized_models(model, example_input=x))
    assert [s.block for s in stages] == [None, "head", "mix", ROOT, "embed"]
    assert changed_params(stages[3].model, model) == {
        "head.weight", "head.bias", "mix.weight", "mix.bias", "cls_token", "pos",
    }


def test_explicit_blocks_and_next():
    model, x = make("toy")
    blocks = [Block("top", ("head", "body.2"), ("head.weight", "body.2.weight"))]
    it = randomized_models(model, order="cascading", example_input=x, blocks=blocks)
    assert next(it).index == 0
    s1 = next(it)
    assert s1.layers == ("top",)
    assert changed_params(s1.model, model) == {"head.weight", "body.2.weight"}
    with pytest.raises(StopIteration):
        next(it)


@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize("order", ["cascading", "bottom_up", "independent"])
def test_user_model_bit_identical_after_full_iteration(order, init, global_rng_guard):
    model, x = zoo.make("resnet")
    model.layer2.train()
    model.stem.weight.requires_grad_(False)
    model.fc.register_forward_hook(lambda *a: None)
    model.bn.register_forward_pre_hook(lambda *a: None)
    model.fc.weight.grad = torch.ones_like(model.fc.weight)
    snap = zoo.snapshot(model)
    for stage in randomized_models(model, order=order, init=init, seed=1, example_input=x,
                                   group_by="children"):
        assert stage.model is not model
    zoo.assert_unchanged(model, snap)


def test_user_model_bit_identical_after_error_mid_run(global_rng_guard):
    model, x = zoo.make("resnet")
    model.layer1.train()
    model.fc.register_forward_hook(lambda *a: None)
    snap = zoo.snapshot(model)

    # an error raised by the consumer between stages
    with pytest.raises(RuntimeError, match="consumer"):
        for stage in randomized_models(model, init="reinit", example_input=x):
            if stage.index == 2:
                raise RuntimeError("consumer")
    zoo.assert_unchanged(model, snap)

    # an error raised inside the randomization itself (third block)
    class Boom(InitScheme):
        name = "boom"
        calls = 0

        def __call__(self, model, block, generator):
            Boom.calls += 1
            if Boom.calls == 3:
                raise RuntimeError("boom")
            Paper()(model, block, generator)

    seen = []
    with pytest.raises(RuntimeError, match="boom"):
        for stage in randomized_models(model, init=Boom(), example_input=x):
            seen.append(stage.index)
    assert seen == [0, 1, 2]
    zoo.assert_unchanged(model, snap)


@pytest.mark.parametrize("init", INITS)
def test_same_seed_same_weights_different_seed_different(init, global_rng_guard):
    model, x = make("toy")

    def states(seed):
        return [s.model.state_dict() for s in randomized_models(
            model, order="cascading", init=init, seed=seed, example_input=x)]

    a, b, c = states(5), states(5), states(6)
    for sa, sb in zip(a, b, strict=True):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    last_a, last_c = a[-1], c[-1]
    assert not torch.equal(last_a["head.weight"], last_c["head.weight"])


@pytest.mark.parametrize("init", INITS)
def test_same_shaped_blocks_get_different_weights(init):
    model, x = make("toy")
    with torch.no_grad():  # identical trained tensors: only the block seeds can tell them apart
        model.body[2].weight.copy_(model.body[0].weight)
        model.body[2].bias.copy_(model.body[0].bias)
    last = list(randomized_models(model, init=init, example_input=x))[-1].model
    assert not torch.equal(last.body[0].weight, last.body[2].weight)
    assert not torch.equal(last.body[0].bias, last.body[2].bias)


@pytest.mark.parametrize("init", INITS)
def test_block_weights_same_in_every_order(init):
    model, x = make("toy")
    runs = {o: list(randomized_models(model, order=o, init=init, seed=2, example_input=x))
            for o in orders}
    for name in TOY_FORWARD:
        got = []
        for stages in runs.values():
            stage = next(s for s in stages if s.block == name)
            got.append({p: t for p, t in stage.model.named_parameters() if p in TOY_PARAMS[name]})
        for other in got[1:]:
            assert all(torch.equal(got[0][p], other[p]) for p in TOY_PARAMS[name])


def test_randomize_blocks_in_place_matches_stages():
    import copy

    model, x = make("toy")
    blocks = discover_blocks(model, x)
    twin = copy.deepcopy(model)
    out = randomize_blocks(twin, blocks[-2:], "moment_matched", seed=4)
    assert out is twin
    assert changed_params(twin, model) == TOY_PARAMS["body.2"] | TOY_PARAMS["head"]
    stage = list(randomized_models(model, init="moment_matched", seed=4, example_input=x))[2]
    for n, p in twin.named_parameters():
        assert torch.equal(p, dict(stage.model.named_parameters())[n])
    # the block's generator is seeded from (seed, block name) only
    g = torch.Generator().manual_seed(block_seed(4, "head"))
    ref = copy.deepcopy(model)
    init_schemes.get("moment_matched")(ref, blocks[-1], g)
    assert torch.equal(ref.head.weight, twin.head.weight)


def test_output_change_and_unchanged_flag():
    model, x = make("dead")
    with pytest.warns(UserWarning, match="bit-identical") as rec:
        stages = list(randomized_models(model, order="independent", example_input=x))
    assert len([w for w in rec if "bit-identical" in str(w.message)]) == 1
    assert [(s.block, s.unchanged) for s in stages] == [
        (None, False), ("out", False), ("aux", True), ("fc", False),
    ]
    assert stages[0].output_change == {
        "logit_correlation": 1.0, "max_abs_logit_diff": 0.0, "prediction_agreement": 1.0,
    }
    assert stages[2].output_change["max_abs_logit_diff"] == 0.0
    with torch.no_grad():
        trained = model(x).numpy().astype(np.float64)
        for s in stages[1:]:
            out = s.model(x).numpy().astype(np.float64)
            oc = s.output_change
            assert oc["logit_correlation"] == pytest.approx(
                np.corrcoef(trained.ravel(), out.ravel())[0, 1], abs=1e-9)
            assert oc["max_abs_logit_diff"] == pytest.approx(np.abs(trained - out).max(), abs=1e-6)
            assert oc["prediction_agreement"] == pytest.approx(
                np.mean(trained.argmax(1) == out.argmax(1)))


def test_bad_names_list_known_ones():
    model, x = make("toy")
    with pytest.raises(ValueError, match="bottom_up"):
        randomized_models(model, order="top_down", example_input=x)
    with pytest.raises(KeyError, match="moment_matched"):
        randomized_models(model, init="xavier", example_input=x)
    with pytest.raises(TypeError):
        randomized_models(model, init="paper", init_settings={"sd": 0.1}, example_input=x)


def test_device_argument_cpu():
    model, x = make("toy")
    stages = list(randomized_models(model, example_input=x, device="cpu"))
    assert all(p.device.type == "cpu" for p in stages[-1].model.parameters())
