"""Devices and precision: the opt-in mixed precision (``dtype``) and the training device. No
GPU here: the paths are exercised on the CPU (bfloat16 autocast exists there too)."""

from __future__ import annotations

import pytest
import torch
import zoo

from saliency_sanity import data, model_randomization_test, training
from saliency_sanity.engine import RunConfig


def test_default_precision_is_exact_and_not_recorded():
    model, x = zoo.make("cnn")
    kw = dict(methods=["gradient"], scores=["spearman_abs"], controls=False, progress=False)
    a = model_randomization_test(model, x, **kw)
    b = model_randomization_test(model, x, dtype="float32", **kw)
    assert "dtype" not in a.settings and "dtype" not in b.settings
    assert a.table.equals(b.table)
    with pytest.raises(ValueError, match="dtype must be one of"):
        RunConfig(dtype="half")


def test_bfloat16_maps_are_autocast_gradients(tmp_path):
    """The maps under dtype="bfloat16" are the input gradients computed by hand under
    torch.autocast(bfloat16), bit for bit; they differ from float32's; the setting is recorded
    and enters the fingerprint (a float32 run directory is not resumed in bfloat16)."""
    model, x = zoo.make("cnn")
    kw = dict(methods=["gradient"], scores=["spearman_abs"], controls=False, progress=False,
              batch_size=len(x), n_examples=len(x))
    fp32 = model_randomization_test(model, x, run_dir=tmp_path / "a", **kw)
    bf16 = model_randomization_test(model, x, dtype="bfloat16", **kw)
    assert bf16.settings["dtype"] == "bfloat16"

    xg = x.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(xg)
        target = logits.detach().argmax(1)
        score = logits.gather(1, target.view(-1, 1)).sum()
    (grad,) = torch.autograd.grad(score, xg)
    ours = torch.from_numpy(bf16.examples["maps"]["gradient"][0])
    assert torch.equal(ours, grad.float())
    exact = torch.from_numpy(fp32.examples["maps"]["gradient"][0])
    assert not torch.equal(ours, exact)
    rel = float((ours - exact).norm() / exact.norm())
    # a loose bound (bfloat16 keeps 8 mantissa bits; ReLU gates near 0 flip): the measured
    # errors are in docs/scaling.md, from benchmarks/bench_scaling.py
    assert 0 < rel < 0.5
    with pytest.raises(ValueError, match="other settings"):
        model_randomization_test(model, x, dtype="bfloat16", run_dir=tmp_path / "a", **kw)


def test_training_device_cpu_is_the_default_and_accelerators_cache_apart():
    ds = data.load("mnist", n_train=64, n_test=16)
    cfg = training.TrainConfig(epochs=1, target_train_acc=None)
    kw = dict(cache_dir=False, progress=False, model_kwargs={"width": 0.05})
    a = training.train("mnist_mlp", ds, cfg, **kw)
    b = training.train("mnist_mlp", ds, cfg, device="cpu", **kw)
    for (n, p), (_, q) in zip(a.model.state_dict().items(), b.model.state_dict().items(),
                              strict=True):
        assert torch.equal(p, q), n
    assert a.key == b.key
    key = training.cache_key("mnist_mlp", ds, cfg, {"width": 0.05})
    assert training.cache_key("mnist_mlp", ds, cfg, {"width": 0.05}, device="cpu") == key
    assert training.cache_key("mnist_mlp", ds, cfg, {"width": 0.05}, device="cuda:0") != key
