"""Architectures of the paper: shapes, layer names, width factor, seeded init without global RNG."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from saliency_sanity import models


def test_registry_lists_and_rejects_unknown():
    assert models.list() == ["mnist_cnn", "mnist_mlp"]
    with pytest.raises(KeyError, match="mnist_cnn"):
        models.get("resnet9000")


def test_cnn_layers_match_the_paper():
    net = models.get("mnist_cnn")
    names = [n for n, _ in net.named_children()]
    assert names == ["conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "fc1", "relu3", "fc2"]
    assert (net.conv1.in_channels, net.conv1.out_channels, net.conv1.kernel_size) == (1, 32, (5, 5))
    assert (net.conv2.out_channels, net.conv2.kernel_size) == (64, (5, 5))
    assert (net.fc1.in_features, net.fc1.out_features) == (7 * 7 * 64, 1024)
    assert net.fc2.out_features == 10
    assert all(isinstance(getattr(net, f"relu{i}"), nn.ReLU) for i in (1, 2, 3))
    # hand count: 32*25+32 + 64*32*25+64 + 3136*1024+1024 + 1024*10+10
    expected = 832 + 51264 + 3212288 + 10250
    assert sum(p.numel() for p in net.parameters()) == expected


def test_mlp_layers_match_the_paper():
    net = models.get("mnist_mlp")
    sizes = [(m.in_features, m.out_features) for m in (net.fc1, net.fc2, net.fc3, net.fc4)]
    assert sizes == [(784, 2500), (2500, 1500), (1500, 500), (500, 10)]
    assert [n for n, _ in net.named_children()] == [
        "fc1", "relu1", "fc2", "relu2", "fc3", "relu3", "fc4"
    ]


@pytest.mark.parametrize("name", models.list())
@pytest.mark.parametrize("width", [0.1, 0.5])
def test_forward_shape_and_width(name, width):
    net = models.get(name, width=width, num_classes=7)
    out = net(torch.rand(3, 1, 28, 28))
    assert out.shape == (3, 7)
    first = net.conv1.out_channels if name == "mnist_cnn" else net.fc1.out_features
    assert first == round((32 if name == "mnist_cnn" else 2500) * width)


@pytest.mark.parametrize("name", models.list())
def test_seeded_init_without_global_rng(name, global_rng_guard):
    a = models.get(name, width=0.25, seed=3)
    b = models.get(name, width=0.25, seed=3)
    c = models.get(name, width=0.25, seed=4)
    for (k, va), vb, vc in zip(a.state_dict().items(), b.state_dict().values(),
                               c.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
        assert not torch.equal(va, vc), k
        assert va.device.type == "cpu"


def test_init_follows_torch_default_bounds():
    net = models.get("mnist_cnn", width=0.5)
    for layer in (net.conv1, net.conv2, net.fc1, net.fc2):
        bound = 1 / math.sqrt(layer.weight[0].numel())
        for p in (layer.weight, layer.bias):
            assert p.abs().max() <= bound
            assert p.abs().max() > 0.9 * bound  # uniform, not all near zero
