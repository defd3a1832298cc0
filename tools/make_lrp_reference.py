"""zennit's LRP maps as a fixture for the main environment (where zennit cannot be imported).

Run in an environment with zennit 0.5.1 (and torchvision, which zennit imports):

    PYTHONPATH=src:tests python tools/make_lrp_reference.py

writes ``tests/fixtures/lrp_reference.npz``: for three small models (the demo MNIST CNN's
architecture at width 0.125, ``zoo.ResNetMNIST`` and ``zoo.ResNet`` with non-trivial batch-norm
statistics), their state dicts, four inputs, the targets (the predicted classes), and zennit's
maps (computed in float64, stored in float32) for the four composites (``epsilon_gamma_box``
with low=0, high=1: the inputs lie in [0, 1]) and for each single rule on every linear layer.
``tests/test_lrp.py`` loads the weights into the same architectures and compares
``methods.get("lrp", ...)`` with these maps.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

import lrp_zennit as lz  # noqa: E402  (after the path set-up: a script, not a module)
import zoo  # noqa: E402

from saliency_sanity import models  # noqa: E402

OUT = ROOT / "tests" / "fixtures" / "lrp_reference.npz"
COMPOSITES = ["epsilon_plus_flat", "epsilon_gamma_box", "epsilon_alpha2_beta1", "epsilon_plus"]
RULES = ["zero", "epsilon", "gamma", "zplus", "alpha_beta", "flat", "w_square", "z_box"]
BOUNDS = {"low": 0.0, "high": 1.0}


def _with_bn_stats(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


def tanh_mlp(seed: int = 0) -> torch.nn.Module:
    """An MLP with tanh activations: its hidden layers get inputs of both signs."""
    g = torch.Generator().manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(20, 16), torch.nn.Tanh(), torch.nn.Linear(16, 12),
                              torch.nn.Tanh(), torch.nn.Linear(12, 4))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return net.eval()


def build() -> dict[str, tuple[torch.nn.Module, torch.Tensor]]:
    """The models (by the names the test uses) and their inputs: in [0, 1], and signed
    (standard normal) for ``mnist_cnn_signed`` and ``tanh_mlp``, whose first (and, for the MLP,
    hidden) layers then take the rules' branches for negative inputs."""
    g = torch.Generator().manual_seed(7)
    mnist = torch.rand(4, 1, 28, 28, generator=g)
    return {
        "mnist_cnn": (models.get("mnist_cnn", width=0.125, seed=3).eval(), mnist),
        "resnet_mnist": (_with_bn_stats(zoo.resnet_mnist(seed=2), 5), mnist),
        "resnet": (_with_bn_stats(zoo.make("resnet")[0], 6),
                   torch.rand(4, 3, 16, 16, generator=g)),
        "mnist_cnn_signed": (models.get("mnist_cnn", width=0.125, seed=4).eval(),
                             torch.randn(4, 1, 28, 28, generator=g)),
        "tanh_mlp": (tanh_mlp(1), torch.randn(4, 20, generator=g)),
    }


def main() -> None:
    out: dict[str, np.ndarray] = {}
    for name, (model, x) in build().items():
        model = model.double()
        xd = x.double()
        target = model(xd).argmax(1)
        out[f"{name}/x"] = x.numpy()
        out[f"{name}/target"] = target.numpy()
        for key, value in model.state_dict().items():
            out[f"{name}/state/{key}"] = value.float().numpy()
        model = model.float().double()  # the stored float32 weights, exactly
        for spec in COMPOSITES + [f"rule:{r}" for r in RULES]:
            comp = lz.composite(spec, model, **BOUNDS)
            out[f"{name}/map/{spec}"] = lz.attribute(model, xd, target, comp).float().numpy()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **out)
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KiB, {len(out)} arrays)")


if __name__ == "__main__":
    main()
