"""The MNIST CNN and MLP of Adebayo et al. 2018, built without touching the global RNG."""

from __future__ import annotations

import math

import torch
from torch import nn


def scaled(size: int, width: float) -> int:
    """A layer size times ``width``, rounded, at least 1.

    Example:
        >>> scaled(1024, 0.25), scaled(32, 0.01)
        (256, 1)
    """
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width}")
    return max(1, int(round(size * width)))


@torch.no_grad()
def init_default_(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """PyTorch's default init of Linear/Conv layers, drawn from ``generator`` (in place).

    weight ~ kaiming_uniform(a=sqrt(5)) i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
    bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)); modules are visited in registration order.

    Example:
        >>> lin = nn.Linear(4, 2)
        >>> g = torch.Generator().manual_seed(0)
        >>> bool(init_default_(lin, g).weight.abs().max() <= 0.5)
        True
    """
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
            if module.bias is not None:
                fan_in = module.weight[0].numel()
                bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                nn.init.uniform_(module.bias, -bound, bound, generator=generator)
    return model


def _materialize(model: nn.Module, seed: int) -> None:
    """Allocate a model built on the meta device on the CPU and initialize it from ``seed``."""
    model.to_empty(device="cpu")
    init_default_(model, torch.Generator().manual_seed(int(seed)))


class MnistCNN(nn.Module):
    """conv5x5(32)-ReLU-maxpool2-conv5x5(64)-ReLU-maxpool2-fc(1024)-ReLU-fc(classes).

    'Same' padding as in the TensorFlow MNIST tutorial the paper used: 28 -> 14 -> 7, so fc1
    sees 7 * 7 * 64 features. Every size except the input and output is scaled by ``width``.
    ``input_size`` (H, W) sizes fc1 for other images (BlockMNIST: (56, 28)).

    Example:
        >>> net = MnistCNN(width=0.25, seed=0)
        >>> net(torch.zeros(3, 1, 28, 28)).shape
        torch.Size([3, 10])
    """

    def __init__(self, width: float = 1.0, num_classes: int = 10, seed: int = 0,
                 input_size: tuple[int, int] = (28, 28)) -> None:
        super().__init__()
        c1, c2, h = scaled(32, width), scaled(64, width), scaled(1024, width)
        self.width, self.num_classes = float(width), int(num_classes)
        rows, cols = (int(s) // 4 for s in input_size)  # two 2x2 poolings (56 x 28 -> 14 x 7)
        with torch.device("meta"):  # no RNG use: real init below from a seeded generator
            self.conv1 = nn.Conv2d(1, c1, 5, padding=2)
            self.relu1 = nn.ReLU()
            self.pool1 = nn.MaxPool2d(2)
            self.conv2 = nn.Conv2d(c1, c2, 5, padding=2)
            self.relu2 = nn.ReLU()
            self.pool2 = nn.MaxPool2d(2)
            self.fc1 = nn.Linear(c2 * rows * cols, h)
            self.relu3 = nn.ReLU()
            self.fc2 = nn.Linear(h, num_classes)
        _materialize(self, seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = self.relu3(self.fc1(torch.flatten(x, 1)))
        return self.fc2(x)


class MnistMLP(nn.Module):
    """784-2500-1500-500-classes with ReLUs (hidden sizes scaled by ``width``).

    Takes images (B, 1, 28, 28) and flattens them itself.

    Example:
        >>> net = MnistMLP(width=0.1, seed=0)
        >>> net(torch.zeros(3, 1, 28, 28)).shape
        torch.Size([3, 10])
    """

    def __init__(self, width: float = 1.0, num_classes: int = 10, seed: int = 0) -> None:
        super().__init__()
        h1, h2, h3 = scaled(2500, width), scaled(1500, width), scaled(500, width)
        self.width, self.num_classes = float(width), int(num_classes)
        with torch.device("meta"):
            self.fc1 = nn.Linear(28 * 28, h1)
            self.relu1 = nn.ReLU()
            self.fc2 = nn.Linear(h1, h2)
            self.relu2 = nn.ReLU()
            self.fc3 = nn.Linear(h2, h3)
            self.relu3 = nn.ReLU()
            self.fc4 = nn.Linear(h3, num_classes)
        _materialize(self, seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        x = self.relu1(self.fc1(x))
        x = self.relu2(self.fc2(x))
        x = self.relu3(self.fc3(x))
        return self.fc4(x)
