"""The benchmark helpers are right: the ResNet-18-shaped network, the floors, Quantus' weights.

Benchmarks themselves are never run here (no timings are asserted), only the numbers their
helpers compute.
"""

from __future__ import annotations

import copy

import _common as C
import pytest
import torch

from saliency_sanity import methods
from saliency_sanity.randomization import discover_blocks, randomize_blocks

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def resnet() -> C.ResNet18:
    return C.resnet18(num_classes=1000, seed=0)


def test_resnet18_has_torchvision_parameter_count_and_output_shape(resnet):
    assert sum(p.numel() for p in resnet.parameters()) == 11_689_512  # torchvision resnet18
    with torch.no_grad():
        assert resnet(torch.zeros(2, 3, 224, 224)).shape == (2, 1000)
        assert C.resnet18(num_classes=10)(torch.zeros(1, 3, 64, 64)).shape == (1, 10)
    assert not any(isinstance(m, torch.nn.ReLU) and m.inplace for m in resnet.modules())


def test_models_are_seeded_without_the_global_rng():
    state = torch.random.get_rng_state()
    a, b = C.resnet18(10, seed=3), C.resnet18(10, seed=3)
    x = C.make_inputs(2, (3, 32, 32), seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(),
                                                 b.state_dict().values(), strict=True))
    assert not torch.equal(C.resnet18(10, seed=4).fc.weight, a.fc.weight)
    assert torch.equal(x, C.make_inputs(2, (3, 32, 32), seed=5))


def test_quantus_layer_order_equals_our_blocks_top_down(resnet):
    import bench_mprt_quantus as B

    cases = ((resnet, torch.zeros(1, 3, 32, 32)), (C.demo_cnn(), torch.zeros(1, 1, 28, 28)))
    for model, x in cases:
        ours = [b.name for b in reversed(discover_blocks(model, x, group_by="modules"))]
        assert B.quantus_layers(model) == ours


def test_segments_chain_to_the_model(resnet):
    cases = ((resnet, C.make_inputs(2, (3, 32, 32))), (C.demo_cnn(), C.make_inputs(2, (1, 28, 28))))
    for model, x in cases:
        h = x
        for _, f in C.segments(model):
            h = f(h)
        with torch.no_grad():
            torch.testing.assert_close(h.detach(), model(x), rtol=0, atol=0)
        named = {n for n, m in model.named_modules() if any(True for _ in m.parameters(False))}
        assert set().union(*(set(s) for s, _ in C.segments(model))) == named


def test_floor_gradient_equals_our_gradient_method():
    model, x = C.demo_cnn(), C.make_inputs(4, (1, 28, 28))
    (g,) = C.floor_batch(model, x, C.FloorPlan("gradient"))
    torch.testing.assert_close(g, methods.get("gradient")(model, x, "predicted"))


def test_floor_integrated_gradients_passes_give_our_ig_map():
    model, x = C.demo_cnn(), C.make_inputs(3, (1, 28, 28))
    steps = 5
    grads = C.floor_batch(model, x, C.FloorPlan("integrated_gradients", steps=steps,
                                                rows_per_pass=6))  # 2 copies per pass
    assert [g.shape[0] for g in grads] == [6, 6, 3]
    mean = torch.cat(grads).view(steps, *x.shape).mean(0)
    ours = methods.get("integrated_gradients", steps=steps)(model, x, "predicted")
    torch.testing.assert_close(mean * x, ours)


@pytest.mark.parametrize("method", ["gradient", "smoothgrad"])
@pytest.mark.parametrize("name", ["cnn", "resnet"])
def test_reuse_floor_gives_the_naive_floors_gradients(method, name):
    if name == "cnn":
        model, x = C.demo_cnn(), C.make_inputs(4, (1, 28, 28))
    else:
        model, x = C.ResNet18(num_classes=10, width=8).eval(), C.make_inputs(4, (3, 32, 32))
    blocks = discover_blocks(model, x[:1])
    stages, layers = C.stage_models_for(model, x, "paper", 0, blocks)
    assert len(stages) == len(blocks) + 1 and layers[0] == set() and layers[1] == {blocks[-1].name}
    plan = C.FloorPlan(method, samples=3, rows_per_pass=4)
    naive: list[list[torch.Tensor]] = []
    reuse: list[list[torch.Tensor]] = []
    C.floor_run(stages, x, plan, 2, collect=naive)
    C.reuse_floor_run(stages, layers, x, plan, 2, collect=reuse)
    assert len(naive) == len(reuse) == len(stages)
    for a, b in zip(naive, reuse, strict=True):
        torch.testing.assert_close(torch.cat(a), torch.cat(b), rtol=1e-5, atol=1e-7)


def test_quantus_randomizes_to_our_weights():
    pytest.importorskip("quantus")
    import bench_mprt_quantus as B
    from quantus.helpers.model.pytorch_model import PyTorchModel

    model, x = C.demo_cnn(), C.make_inputs(2, (1, 28, 28))
    blocks = discover_blocks(model, x)
    ours = randomize_blocks(copy.deepcopy(model), blocks, B.INIT, 0, dict(B.INIT_SETTINGS))
    q = B.with_our_weights(model, ours)
    seen = []
    for name, m in PyTorchModel(q, channel_first=True).get_random_layer_generator("top_down", 42):
        seen.append(name)
        last = m
    assert seen == [b.name for b in reversed(blocks)]
    for k, v in ours.state_dict().items():
        assert torch.equal(last.state_dict()[k], v), k
    # the model given to Quantus is not changed by its generator (it randomizes a deep copy)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in q.state_dict().items())
