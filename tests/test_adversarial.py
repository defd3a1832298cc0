"""PGD: a hand-computed one-step case, the bounds, and adversarial training in the trainer."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from saliency_sanity import data, training
from saliency_sanity.training import PGD, robust_accuracy


def _linear() -> nn.Linear:
    lin = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 2.0], [-1.0, 0.5]]))
    return lin


# With W = [[1, 2], [-1, 0.5]], the cross-entropy gradient w.r.t. x for label 0 is
# W^T (p - e_0) = p_1 * (W[1] - W[0]) = p_1 * (-2, -1.5): sign (-1, -1), unit l2 direction
# (-0.8, -0.6), whatever the softmax value p_1 in (0, 1).
@pytest.mark.parametrize(("norm", "x0", "expected"), [
    ("linf", [0.5, 0.5], [0.4, 0.4]),
    ("l2", [0.5, 0.5], [0.42, 0.44]),
    ("linf", [0.05, 0.5], [0.0, 0.4]),     # clamped to the data range [0, 1]
    ("l2", [0.5, 0.03], [0.42, 0.0]),      # clamped after the step
])
def test_one_step_matches_hand_computation(norm, x0, expected):
    atk = PGD(norm, eps=0.1, steps=1, step_size=0.1)
    xa = atk.perturb(_linear(), torch.tensor([x0]), torch.tensor([0]))
    assert torch.allclose(xa, torch.tensor([expected]), atol=1e-6)


def test_large_l2_step_is_projected_onto_the_ball():
    # step 0.3 along (-0.8, -0.6) leaves the ball of radius 0.1: scaled back to (-0.08, -0.06)
    atk = PGD("l2", eps=0.1, steps=1, step_size=0.3)
    xa = atk.perturb(_linear(), torch.tensor([[0.5, 0.5]]), torch.tensor([0]))
    assert torch.allclose(xa, torch.tensor([[0.42, 0.44]]), atol=1e-6)


@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("random_start", [False, True])
def test_perturbation_stays_in_ball_and_data_range(norm, random_start, global_rng_guard):
    with torch.random.fork_rng(devices=[]):  # building the net is the test's own RNG use
        net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    net.train()
    x = torch.rand(20, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    x[:5] = 0.0  # at the lower edge of the data range
    y = torch.arange(20) % 3
    eps = 0.5 if norm == "l2" else 0.05
    atk = PGD(norm, eps=eps, steps=7, step_size=eps / 2, random_start=random_start)
    xa = atk.perturb(net, x, y, torch.Generator().manual_seed(0))
    delta = (xa - x).flatten(1)
    size = delta.norm(dim=1) if norm == "l2" else delta.abs().amax(dim=1)
    assert float(size.max()) <= eps + 1e-6
    assert float(size.max()) > 0.5 * eps  # it did move
    assert float(xa.min()) >= 0.0 and float(xa.max()) <= 1.0
    assert net.training  # mode restored
    assert all(p.grad is None for p in net.parameters())
    # the attack raises the loss
    ce = nn.functional.cross_entropy
    with torch.no_grad():
        assert float(ce(net(xa), y)) > float(ce(net(x), y))


def test_random_start_is_seeded_and_needs_a_generator():
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    x, y = torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 0])
    atk = PGD("linf", eps=0.1, steps=1, random_start=True)
    a = atk.perturb(net, x, y, torch.Generator().manual_seed(3))
    b = atk.perturb(net, x, y, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="Generator"):
        atk.perturb(net, x, y)


@pytest.mark.parametrize("kwargs", [{"norm": "l1"}, {"eps": 0.0}, {"steps": 0},
                                    {"step_size": -1.0}, {"data_range": (1.0, 0.0)}])
def test_bad_settings_are_rejected(kwargs):
    with pytest.raises(ValueError, match="PGD"):
        PGD(**kwargs)


def test_default_step_size():
    assert math.isclose(PGD("linf", eps=0.3, steps=10).alpha, 0.075)


def test_adversarial_training_is_deterministic_resumable_and_reports_robust_acc(
        tmp_path, global_rng_guard):
    ds = data.load("mnist", n_train=64, n_test=32)
    cfg = training.TrainConfig(epochs=2, target_train_acc=None, batch_size=32)
    atk = PGD("linf", eps=0.1, steps=2, random_start=True)
    kw = {"model_kwargs": {"width": 0.05}, "progress": False, "adversarial": atk}
    a = training.train("mnist_mlp", ds, cfg, cache_dir=False, **kw)
    b = training.train("mnist_mlp", ds, cfg, cache_dir=False, **kw)
    assert a.robust_test_acc is not None and 0.0 <= a.robust_test_acc <= 1.0
    assert a.robust_test_acc == b.robust_test_acc and a.test_acc == b.test_acc
    for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(p, q)
    # the attack really changes training: standard training ends elsewhere
    std = training.train("mnist_mlp", ds, cfg, cache_dir=False, progress=False,
                         model_kwargs={"width": 0.05})
    assert std.robust_test_acc is None and std.key != a.key and "pgdlinf" in a.key
    assert not torch.equal(std.model.fc1.weight, a.model.fc1.weight)
    # interrupted after one epoch, resumed: bit-identical
    with pytest.raises(KeyboardInterrupt):
        training.train("mnist_mlp", ds, cfg, cache_dir=tmp_path, _stop_after_epochs=1, **kw)
    c = training.train("mnist_mlp", ds, cfg, cache_dir=tmp_path, **kw)
    assert not c.from_cache and c.robust_test_acc == a.robust_test_acc
    for p, q in zip(a.model.parameters(), c.model.parameters(), strict=True):
        assert torch.equal(p, q)
    d = training.train("mnist_mlp", ds, cfg, cache_dir=tmp_path, **kw)
    assert d.from_cache and d.robust_test_acc == a.robust_test_acc
    with pytest.raises(TypeError, match="PGD"):
        training.train("mnist_mlp", ds, cfg, cache_dir=False, progress=False,
                       model_kwargs={"width": 0.05}, adversarial="pgd")


def test_robust_accuracy_of_a_linear_model_matches_the_closed_form():
    # For a linear 2-class model the l-inf optimum lowers the margin w.x by eps * ||w||_1, with
    # w = W[0] - W[1] = (2, 1.5): points with |margin| <= 0.3 * 3.5 = 1.05 are flipped; PGD's
    # sign steps reach that vertex exactly (the data range is wide enough not to bind).
    lin = _linear()
    x = torch.rand(200, 2, generator=torch.Generator().manual_seed(0)) * 2 - 1
    y = lin(x).argmax(1).detach()
    margin = (x @ torch.tensor([2.0, 1.5])).abs()
    expected = int((margin > 1.05).sum()) / len(x)
    got = robust_accuracy(lin, PGD("linf", eps=0.3, steps=5, data_range=(-10, 10)), x, y)
    assert 0.2 < expected < 0.9 and got == pytest.approx(expected, abs=1e-9)
