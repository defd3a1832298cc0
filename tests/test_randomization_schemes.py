"""Init schemes and block seeds: invariants over the whole registry, then each scheme's
distribution against hand-derived values."""

from __future__ import annotations

import copy
import math
import os
import subprocess
import sys

import pytest
import torch
import zoo
from test_randomization_toys import make
from torch import nn

from saliency_sanity.randomization import (
    ROOT,
    Block,
    MomentMatched,
    Paper,
    Permute,
    Reinit,
    block_seed,
    discover_blocks,
    init_schemes,
    randomized_models,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def whole(prefix: str, module: nn.Module) -> Block:
    """A block holding all of `module`'s own parameters and buffers."""
    p = f"{prefix}." if prefix else ""
    return Block(prefix or ROOT, (prefix,), tuple(p + n for n, _ in module.named_parameters()),
                 tuple(p + n for n, _ in module.named_buffers()))


def test_registry_names():
    assert init_schemes.list() == ["moment_matched", "paper", "permute", "reinit"]
    with pytest.raises(KeyError, match="paper"):
        init_schemes.get("truncated")


@pytest.mark.parametrize("name", init_schemes.list())
def test_every_scheme_changes_its_block_only(name, global_rng_guard):
    model, x = zoo.make("resnet")
    blocks = {b.name: b for b in discover_blocks(model, x)}
    target = blocks["layer1.bn1"]
    out = copy.deepcopy(model)
    init_schemes.get(name)(out, target, gen(1))
    before, after = model.state_dict(), out.state_dict()
    for k in before:
        same = torch.equal(before[k], after[k])
        assert same != (k in target.params), k
    # deterministic given the generator's seed
    again = copy.deepcopy(model)
    init_schemes.get(name)(again, target, gen(1))
    assert all(torch.equal(again.state_dict()[k], after[k]) for k in after)


@pytest.mark.parametrize("name", init_schemes.list())
def test_every_scheme_records_its_settings(name):
    scheme = init_schemes.get(name)
    rec = scheme.record()
    assert rec["init"] == name == scheme.name
    assert {k: v for k, v in rec.items() if k != "init"} == scheme.settings()


def test_paper_truncated_normal():
    lin = nn.Linear(256, 256)
    Paper()(lin, whole("", lin), gen())
    w = lin.weight.detach().double()
    assert w.abs().max() <= 0.02  # truncated at 2 std
    # std of N(0, s) truncated at +-2s: s * sqrt(1 - 2*2*phi(2) / (Phi(2) - Phi(-2)))
    phi2 = math.exp(-2.0) / math.sqrt(2 * math.pi)
    mass = math.erf(2 / math.sqrt(2))
    expected_std = 0.01 * math.sqrt(1 - 4 * phi2 / mass)  # 0.008796
    assert w.std().item() == pytest.approx(expected_std, rel=0.02)
    assert abs(w.mean().item()) < 3 * expected_std / 256
    b = lin.bias.detach()
    assert b.abs().max() <= 0.02 and b.std() > 0.005  # biases are re-drawn too


def test_paper_authors_code_settings():
    lin = nn.Linear(64, 32)
    Paper(std=0.1, bias=0.1)(lin, whole("", lin), gen())
    assert torch.equal(lin.bias.detach(), torch.full((32,), 0.1))
    assert lin.weight.abs().max() <= 0.2 and lin.weight.std() > 0.08


def test_paper_randomizes_batchnorm_affine_keeps_running_stats():
    model, x = zoo.make("resnet")
    out = copy.deepcopy(model)
    Paper()(out, whole("bn", out.bn), gen())
    assert not torch.equal(out.bn.weight, model.bn.weight)
    assert not torch.equal(out.bn.bias, model.bn.bias)
    assert out.bn.weight.abs().max() <= 0.02
    assert torch.equal(out.bn.running_mean, model.bn.running_mean)
    assert torch.equal(out.bn.running_var, model.bn.running_var)


def test_permute_keeps_values_moves_them():
    lin = nn.Linear(16, 16)
    trained = lin.weight.detach().clone()
    Permute()(lin, whole("", lin), gen())
    w = lin.weight.detach()
    assert torch.equal(w.flatten().sort().values, trained.flatten().sort().values)
    assert (w != trained).float().mean() > 0.9


def test_moment_matched_matches_mean_and_std():
    lin = nn.Linear(256, 256)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(256, 256, generator=gen(9)) * 0.05 + 0.3)
        lin.bias.fill_(2.0)  # std 0: the bias stays constant
    MomentMatched()(lin, whole("", lin), gen())
    w = lin.weight.detach().double()
    assert w.mean().item() == pytest.approx(0.3, abs=0.001)
    assert w.std().item() == pytest.approx(0.05, rel=0.02)
    assert torch.equal(lin.bias.detach(), torch.full((256,), 2.0))


def test_reinit_uses_module_initializer(global_rng_guard):
    lin = zoo._seeded(lambda: nn.Linear(30, 10))  # built without touching the global RNG
    with torch.no_grad():
        lin.weight.fill_(5.0)
        lin.bias.fill_(5.0)
    Reinit()(lin, whole("", lin), gen())
    bound = 1 / math.sqrt(30)  # kaiming_uniform(a=sqrt(5)) and the bias: U(-1/sqrt(fan_in), ..)
    assert lin.weight.abs().max() <= bound and lin.bias.abs().max() <= bound
    assert lin.weight.std() > bound / 3


def test_reinit_keeps_or_resets_running_stats(global_rng_guard):
    model, x = zoo.make("resnet")
    kept = copy.deepcopy(model)
    Reinit()(kept, whole("bn", kept.bn), gen())
    assert torch.equal(kept.bn.weight, torch.ones(8)) and torch.equal(kept.bn.bias, torch.zeros(8))
    assert torch.equal(kept.bn.running_mean, model.bn.running_mean)
    assert torch.equal(kept.bn.running_var, model.bn.running_var)
    reset = copy.deepcopy(model)
    Reinit(reset_running_stats=True)(reset, whole("bn", reset.bn), gen())
    assert torch.equal(reset.bn.running_mean, torch.zeros(8))
    assert torch.equal(reset.bn.running_var, torch.ones(8))
    assert reset.bn.num_batches_tracked.item() == 0


class Parent(nn.Module):
    """Owns `scale`; its reset_parameters also resets its child (which is another block)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((4,), 3.0))
        self.lin = nn.Linear(4, 4)

    def reset_parameters(self) -> None:
        nn.init.ones_(self.scale)
        self.lin.reset_parameters()

    def forward(self, x):
        return self.lin(x) * self.scale


def test_reinit_touches_only_the_block():
    model = nn.Sequential(Parent(), nn.Linear(4, 2))
    trained = copy.deepcopy(model)
    blocks = discover_blocks(model, torch.randn(3, 4, generator=gen()))
    assert [b.name for b in blocks] == ["0.lin", "0", "1"]  # scale is used after lin
    Reinit()(model, blocks[1], gen())
    assert torch.equal(model[0].scale, torch.ones(4))
    assert torch.equal(model[0].lin.weight, trained[0].lin.weight)
    assert torch.equal(model[0].lin.bias, trained[0].lin.bias)


def test_reinit_without_initializer_draws_token_parameters():
    # the root owns cls_token and pos but has no reset_parameters: both are drawn from
    # N(0, 0.02) truncated at +-0.04 (the ViT convention), nothing else in the block changes
    model, x = make("token")
    stages = list(randomized_models(model, init="reinit", example_input=x))
    root = next(s for s in stages if s.block == "<root>").model
    for name in ("cls_token", "pos"):
        new, old = getattr(root, name), getattr(model, name)
        assert not torch.equal(new, old)
        assert float(new.abs().max()) <= 0.04
    assert 0.01 < float(root.pos.std()) < 0.03  # 32 draws of a TN(0, 0.02) cut at 2 sd: ~0.0176
    assert torch.equal(root.embed.weight, model.embed.weight)


def test_reinit_stage_weights_global_rng_untouched(global_rng_guard):
    model, x = zoo.make("cnn")
    stages = list(randomized_models(model, init="reinit", example_input=x, seed=3))
    assert not torch.equal(stages[-1].model.conv1.weight, model.conv1.weight)


def test_block_seed_stable_across_processes():
    code = ("from saliency_sanity.randomization import block_seed; "
            "print(block_seed(0, 'Mixed_7c'), block_seed(1, 'Mixed_7c'), block_seed(0, '<root>'))")
    # another process with another string-hash salt than this one
    env = dict(os.environ, PYTHONHASHSEED=str(hash("salt") % 1000 + 1))
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert res.stdout.split() == [str(block_seed(0, "Mixed_7c")), str(block_seed(1, "Mixed_7c")),
                                  str(block_seed(0, "<root>"))]

def test_block_seed_values():
    seeds = {block_seed(s, n) for s in range(3) for n in ("fc1", "fc2", "conv1", "")}
    assert len(seeds) == 12
    assert all(0 <= s < 2**63 for s in seeds)
    assert block_seed(0, "fc1") == block_seed(0, "fc1")
