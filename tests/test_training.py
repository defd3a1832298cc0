"""The trainer: seeded label permutation, memorization, determinism, cache, resume."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from saliency_sanity import data, models, training
from saliency_sanity.training import TrainConfig

MLP = {"width": 0.1}  # 784-250-150-50-10: memorizes 256 random labels in ~15-30 epochs


@pytest.fixture(scope="module")
def small():
    return data.load("mnist", n_train=256, n_test=200, seed=0)


@pytest.fixture(scope="module")
def tiny():
    return data.load("mnist", n_train=96, n_test=64, seed=1)


def _equal_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------------------- permutation


def test_permuted_labels_is_a_seeded_true_permutation(global_rng_guard):
    y = torch.arange(1000) % 10
    z = training.permuted_labels(y, seed=5)
    assert z.dtype == torch.int64 and z.shape == y.shape
    assert torch.equal(torch.bincount(z), torch.bincount(y))  # same multiset: not resampled
    assert torch.equal(z.sort().values, y.sort().values)
    assert torch.equal(z, training.permuted_labels(y, seed=5))
    assert not torch.equal(z, training.permuted_labels(y, seed=6))
    # labels are shuffled: about 1/10 agree with the original (binomial sd ~ 0.0095)
    assert 0.06 < (z == y).float().mean() < 0.14


def test_permuted_labels_moves_labels_with_a_single_permutation():
    y = torch.arange(50)  # distinct labels: the result is exactly the permutation
    z = training.permuted_labels(y, seed=0)
    assert sorted(z.tolist()) == list(range(50)) and z.tolist() != list(range(50))
    # the same permutation is applied whatever the label values
    w = training.permuted_labels(y * 3 + 1, seed=0)
    assert torch.equal(w, z * 3 + 1)


# ---------------------------------------------------------------------------------- training


def test_memorizes_random_labels(small, global_rng_guard):
    cfg = TrainConfig(epochs=80, lr=3e-3, batch_size=32, target_train_acc=0.95, label_seed=0)
    res = training.train("mnist_mlp", small, cfg, cache_dir=False, progress=False,
                         model_kwargs=MLP)
    assert res.reached_target and res.train_acc >= 0.95
    assert res.epochs < 80 and len(res.history) == res.epochs
    assert res.history[-1]["train_acc"] == res.train_acc
    assert all(h["train_acc"] < 0.95 for h in res.history[:-1])  # stopped at the first hit
    # independent check: accuracy against the permuted labels, test at chance
    y_perm = training.permuted_labels(small.y_train, 0)
    with torch.no_grad():
        pred = res.model(small.x_train).argmax(1)
        test_pred = res.model(small.x_test).argmax(1)
    assert (pred == y_perm).float().mean().item() == pytest.approx(res.train_acc)
    assert (pred == small.y_train).float().mean() < 0.3
    assert (test_pred == small.y_test).float().mean().item() == pytest.approx(res.test_acc)
    assert res.test_acc < 0.25
    assert not res.model.training and not res.from_cache


def test_true_labels_generalize(small):
    cfg = TrainConfig(epochs=15, lr=3e-3, batch_size=32, target_train_acc=0.99)
    res = training.train("mnist_mlp", small, cfg, cache_dir=False, progress=False,
                         model_kwargs=MLP)
    assert res.train_acc >= 0.95 and res.test_acc > 0.6  # chance is 0.1; measured 0.73


def test_runs_all_epochs_without_target(tiny):
    cfg = TrainConfig(epochs=3, target_train_acc=None, label_seed=1)
    res = training.train("mnist_mlp", tiny, cfg, cache_dir=False, progress=False,
                         model_kwargs=MLP)
    assert res.epochs == 3 and [h["epoch"] for h in res.history] == [1, 2, 3]
    assert not res.reached_target
    assert res.history[-1]["loss"] < res.history[0]["loss"]


def test_deterministic_with_seed(tiny, global_rng_guard):
    cfg = TrainConfig(epochs=2, target_train_acc=None, label_seed=3)
    kw = {"cache_dir": False, "progress": False, "model_kwargs": {"width": 0.125}}
    a = training.train("mnist_cnn", tiny, cfg, **kw)
    b = training.train("mnist_cnn", tiny, cfg, **kw)
    c = training.train("mnist_cnn", tiny, TrainConfig(epochs=2, target_train_acc=None,
                                                      label_seed=3, seed=1), **kw)
    assert _equal_state(a.model, b.model)
    assert not _equal_state(a.model, c.model)
    # the trained model starts from the registry's init for config.seed
    init = models.get("mnist_cnn", width=0.125, seed=0)
    assert not _equal_state(a.model, init)


def test_callable_factory_and_progress(tiny, tmp_path, capsys):
    factory = functools.partial(models.mnist_mlp, width=0.05)
    res = training.train(factory, tiny, TrainConfig(epochs=1, target_train_acc=None),
                         cache_dir=tmp_path, progress=True)
    assert res.key.startswith("mnist_mlp-mnist-true-")
    assert res.model.fc1.out_features == 125  # round(2500 * 0.05)
    assert "mnist_mlp" in capsys.readouterr().err  # tqdm bar on stderr


# ------------------------------------------------------------------------------------- cache


def test_cache_reloads_identical_weights(tiny, tmp_path, global_rng_guard):
    cfg = TrainConfig(epochs=2, target_train_acc=None, label_seed=0)
    first = training.train("mnist_mlp", tiny, cfg, cache_dir=tmp_path, progress=False,
                           model_kwargs=MLP)
    assert not first.from_cache and first.checkpoint is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{first.key}.json", f"{first.key}.pt"]
    again = training.train("mnist_mlp", tiny, cfg, cache_dir=tmp_path, progress=False,
                           model_kwargs=MLP)
    assert again.from_cache and again.key == first.key
    assert _equal_state(first.model, again.model)
    assert (again.train_acc, again.test_acc, again.epochs) == (
        first.train_acc, first.test_acc, first.epochs)
    assert again.history == first.history and not again.model.training


def test_unreadable_checkpoint_is_ignored_with_a_warning(tiny, tmp_path):
    cfg = TrainConfig(epochs=1, target_train_acc=None)
    kw = {"progress": False, "model_kwargs": {"width": 0.05}}
    ref = training.train("mnist_mlp", tiny, cfg, cache_dir=False, **kw)
    (tmp_path / f"{ref.key}.pt").write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="unreadable"):
        res = training.train("mnist_mlp", tiny, cfg, cache_dir=tmp_path, **kw)
    assert not res.from_cache and _equal_state(ref.model, res.model)
    assert training.train("mnist_mlp", tiny, cfg, cache_dir=tmp_path, **kw).from_cache


def test_default_cache_dir_env(tmp_path, monkeypatch, tiny):
    monkeypatch.setenv("SALIENCY_SANITY_CACHE", str(tmp_path / "c"))
    assert training.default_cache_dir() == tmp_path / "c"
    res = training.train("mnist_mlp", tiny, TrainConfig(epochs=1, target_train_acc=None),
                         progress=False, model_kwargs={"width": 0.05})
    assert res.checkpoint == tmp_path / "c" / f"{res.key}.pt" and res.checkpoint.is_file()
    monkeypatch.delenv("SALIENCY_SANITY_CACHE")
    assert training.default_cache_dir().parts[-2:] == (".cache", "saliency-sanity")


def test_cache_key_covers_architecture_data_labels_and_settings(tiny):
    base = TrainConfig(label_seed=0)
    key = training.cache_key("mnist_cnn", tiny, base, {"width": 0.5})
    assert key == training.cache_key("mnist_cnn", tiny, base, {"width": 0.5})
    other_data = data.load("mnist", n_train=96, n_test=64, seed=2)
    variants = [
        training.cache_key("mnist_mlp", tiny, base, {"width": 0.5}),
        training.cache_key("mnist_cnn", tiny, base, {"width": 0.25}),
        training.cache_key("mnist_cnn", other_data, base, {"width": 0.5}),
        training.cache_key("mnist_cnn", tiny, TrainConfig(label_seed=1), {"width": 0.5}),
        training.cache_key("mnist_cnn", tiny, TrainConfig(), {"width": 0.5}),
        training.cache_key("mnist_cnn", tiny, TrainConfig(label_seed=0, lr=1e-4), {"width": 0.5}),
        training.cache_key("mnist_cnn", tiny, TrainConfig(label_seed=0, seed=1), {"width": 0.5}),
        training.cache_key("mnist_cnn", tiny, base, {"width": 0.5}, init_hash="abc"),
    ]
    assert len({key, *variants}) == len(variants) + 1
    # same split settings but different content (one pixel changed) -> different key
    changed = data.load("mnist", n_train=96, n_test=64, seed=1)
    changed.x_train[0, 0, 14, 14] += 0.5
    assert training.cache_key("mnist_cnn", changed, base, {"width": 0.5}) != key


# ------------------------------------------------------------------------------------ resume


class _DropoutMLP(nn.Module):
    """Uses the global RNG (dropout) and takes no seed: exercises the fork_rng path."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Dropout(0.3),
                                 nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@pytest.mark.parametrize("factory", ["mnist_cnn", _DropoutMLP], ids=["cnn", "dropout"])
def test_interrupted_run_resumes_bit_identical(factory, tiny, tmp_path, global_rng_guard):
    kwargs = {"width": 0.125} if factory == "mnist_cnn" else {}
    cfg = TrainConfig(epochs=4, batch_size=32, target_train_acc=None, label_seed=7)
    ref = training.train(factory, tiny, cfg, cache_dir=tmp_path / "ref", progress=False,
                         model_kwargs=kwargs)
    with pytest.raises(KeyboardInterrupt):
        training.train(factory, tiny, cfg, cache_dir=tmp_path / "run", progress=False,
                       model_kwargs=kwargs, _stop_after_epochs=2)
    ckpt = torch.load(tmp_path / "run" / f"{ref.key}.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and not ckpt["done"]
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]
    resumed = training.train(factory, tiny, cfg, cache_dir=tmp_path / "run", progress=False,
                             model_kwargs=kwargs)
    assert not resumed.from_cache and resumed.epochs == 4
    assert _equal_state(ref.model, resumed.model)
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in ref.history]
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in resumed.history] == strip
    # sensitivity: resuming with the shuffling generator restarted (a plausible bug) differs
    (tmp_path / "bad").mkdir()
    ckpt["shuffle_rng"] = torch.Generator().manual_seed(cfg.seed).get_state()
    torch.save(ckpt, tmp_path / "bad" / f"{ref.key}.pt")
    wrong = training.train(factory, tiny, cfg, cache_dir=tmp_path / "bad", progress=False,
                           model_kwargs=kwargs)
    assert wrong.epochs == 4 and not _equal_state(ref.model, wrong.model)


@pytest.mark.slow
def test_mnist_cnn_memorization_recipe():
    """Acceptance measurement: random labels memorized (>= 95%), test accuracy near chance."""
    ds = data.load("mnist", n_train=2000, n_test=1000, seed=0)
    res = training.train("mnist_cnn", ds, TrainConfig.random_labels(0), cache_dir=False,
                         progress=False, model_kwargs={"width": 0.5})
    assert res.reached_target and res.train_acc >= 0.95
    assert res.test_acc < 0.16


def test_models_with_batch_norm_train_and_cache(tmp_path):
    """Batch norm's 0-dim num_batches_tracked buffer must not break the cache key."""
    from torch import nn

    from saliency_sanity import data, training

    def bn_net(seed: int = 0) -> nn.Module:
        g = torch.Generator().manual_seed(seed)
        net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
        return net

    ds = data.load("mnist", n_train=32, n_test=16)
    cfg = training.TrainConfig(epochs=1, target_train_acc=None)
    a = training.train(bn_net, ds, cfg, cache_dir=tmp_path, progress=False)
    b = training.train(bn_net, ds, cfg, cache_dir=tmp_path, progress=False)
    assert not a.from_cache and b.from_cache and a.key == b.key
    for (k, t), (_, u) in zip(a.model.state_dict().items(), b.model.state_dict().items(),
                              strict=True):
        assert torch.equal(t, u), k


def test_trained_weights_do_not_depend_on_the_callers_thread_count(tiny, monkeypatch):
    """A CPU kernel's reduction order depends on the intra-op thread count; training pins it
    (``TRAIN_THREADS``), so a model is the same bit for bit whether a test under one thread or
    the CLI under the machine's default trains it (and caches it for the other)."""
    cfg = TrainConfig(epochs=1, target_train_acc=None)
    kw = {"cache_dir": False, "progress": False}
    before = torch.get_num_threads()
    out = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            out.append(training.train("mnist_cnn", tiny, cfg, **kw).model)
            assert torch.get_num_threads() == threads  # the caller's setting is restored
    finally:
        torch.set_num_threads(before)
    assert _equal_state(out[0], out[1])
