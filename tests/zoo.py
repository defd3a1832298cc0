"""Small models shared by the tests: each kind of ReLU, a residual net with batch norm, an MLP."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _seeded(factory, seed: int = 0):
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        return factory()
    finally:
        torch.random.set_rng_state(gen_state)


class CNN(nn.Module):
    """conv-relu-pool-conv-relu-pool-fc-relu-fc with nn.ReLU modules (optionally in-place)."""

    def __init__(self, in_ch: int = 1, classes: int = 10, inplace: bool = False, size: int = 16):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, 6, 3, padding=1)
        self.relu1 = nn.ReLU(inplace=inplace)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.relu2 = nn.ReLU(inplace=inplace)
        self.pool2 = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(8 * (size // 4) ** 2, 20)
        self.relu3 = nn.ReLU(inplace=inplace)
        self.fc2 = nn.Linear(20, classes)

    def forward(self, x):
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = self.relu3(self.fc1(x.flatten(1)))
        return self.fc2(x)


class FunctionalCNN(CNN):
    """Same layers, ReLUs as F.relu, torch.relu and Tensor.relu."""

    def forward(self, x):
        x = self.pool1(F.relu(self.conv1(x)))
        x = self.pool2(torch.relu(self.conv2(x)))
        x = self.fc1(x.flatten(1)).relu()
        return self.fc2(x)


class SharedReluCNN(CNN):
    """One nn.ReLU module reused at every activation."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.act = nn.ReLU()

    def forward(self, x):
        x = self.pool1(self.act(self.conv1(x)))
        x = self.pool2(self.act(self.conv2(x)))
        x = self.act(self.fc1(x.flatten(1)))
        return self.fc2(x)


class Block(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(ch)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(ch)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + x)


class ResNet(nn.Module):
    """A tiny residual network with batch norm (non-trivial running statistics)."""

    def __init__(self, in_ch: int = 3, classes: int = 5, ch: int = 8):
        super().__init__()
        self.stem = nn.Conv2d(in_ch, ch, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(ch)
        self.relu = nn.ReLU()
        self.layer1 = Block(ch)
        self.layer2 = Block(ch)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(ch, classes)
        g = torch.Generator().manual_seed(1)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)

    def forward(self, x):
        x = self.relu(self.bn(self.stem(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(self.pool(x).flatten(1))


class MLP(nn.Module):
    def __init__(self, d: int = 20, classes: int = 4):
        super().__init__()
        self.fc1 = nn.Linear(d, 16)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(16, 12)
        self.fc3 = nn.Linear(12, classes)

    def forward(self, x):
        return self.fc3(self.relu(self.fc2(self.relu(self.fc1(x)))))


def make(name: str, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """A model by name with a matching input batch of 4 (built with a private seed)."""
    g = torch.Generator().manual_seed(seed + 100)

    def img(c: int = 1) -> torch.Tensor:
        return torch.randn(4, c, 16, 16, generator=g)

    if name == "cnn":
        return _seeded(lambda: CNN(), seed).eval(), img()
    if name == "cnn_inplace":
        return _seeded(lambda: CNN(inplace=True), seed).eval(), img()
    if name == "cnn_functional":
        return _seeded(lambda: FunctionalCNN(), seed).eval(), img()
    if name == "cnn_shared_relu":
        return _seeded(lambda: SharedReluCNN(), seed).eval(), img()
    if name == "resnet":
        return _seeded(lambda: ResNet(), seed).eval(), img(3)
    if name == "mlp":
        return _seeded(lambda: MLP(), seed).eval(), torch.randn(4, 20, generator=g)
    raise KeyError(name)


ALL = ["cnn", "cnn_inplace", "cnn_functional", "cnn_shared_relu", "resnet", "mlp"]


def snapshot(model: nn.Module) -> dict:
    """Everything about a model that a call must leave unchanged."""
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()},
        "modes": [m.training for m in model.modules()],
        "flags": [p.requires_grad for p in model.parameters()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "hooks": [
            (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks),
             len(getattr(m, "_backward_pre_hooks", {})))
            for m in model.modules()
        ],
    }


def assert_unchanged(model: nn.Module, snap: dict) -> None:
    now = snapshot(model)
    assert now["state"].keys() == snap["state"].keys()
    for k in snap["state"]:
        assert torch.equal(now["state"][k], snap["state"][k]), f"{k} changed"
    assert now["modes"] == snap["modes"], "train/eval modes changed"
    assert now["flags"] == snap["flags"], "requires_grad flags changed"
    assert now["hooks"] == snap["hooks"], "hooks left behind"
    for a, b in zip(now["grads"], snap["grads"], strict=True):
        assert (a is None) == (b is None) and (a is None or torch.equal(a, b)), ".grad changed"


def assert_png(path) -> None:
    """The file decodes as a PNG image that is not blank (more than one colour)."""
    import matplotlib.image as mpimg
    import numpy as np

    img = mpimg.imread(str(path), format="png")
    assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50, (path, img.shape)
    assert float(np.std(img[..., :3])) > 0.01, f"{path} is blank"


class ResNetMNIST(nn.Module):
    """A small residual CNN with batch norm for 1x28x28 inputs (a second architecture beside the
    paper's MNIST CNN): stem conv + BN + ReLU + max-pool, two residual blocks, global average
    pooling, a linear head. He-normal init from a private generator."""

    def __init__(self, ch: int = 16, num_classes: int = 10, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.stem = nn.Conv2d(1, ch, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(ch)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.layer1 = Block(ch)
        self.layer2 = Block(ch)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(ch, num_classes)
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    fan = m.weight[0].numel()
                    m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2 / fan) ** 0.5)
                    if m.bias is not None:
                        m.bias.zero_()

    def forward(self, x):
        x = self.pool(self.relu(self.bn(self.stem(x))))
        x = self.layer2(self.layer1(x))
        return self.fc(self.gap(x).flatten(1))


def resnet_mnist(seed: int = 0, num_classes: int = 10) -> nn.Module:
    return ResNetMNIST(num_classes=num_classes, seed=seed)


def curvature(model, x, target):
    """A plug-in that differentiates twice: d/dx of |d logit / dx|^2 (a curvature map)."""
    xg = x.detach().clone().requires_grad_(True)
    score = model(xg).gather(1, target.view(-1, 1)).sum()
    (g,) = torch.autograd.grad(score, xg, create_graph=True)
    (h,) = torch.autograd.grad((g * g).sum(), xg)
    return h
