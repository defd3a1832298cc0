"""The paper's networks (torchvision VGG-11 and ResNet-18, random weights): the layers and split
points the localization check finds, GridPG's converted head, the split network at a layer."""

from __future__ import annotations

import pytest
import torch

from saliency_sanity.grids import Head, Setting, layout

pytestmark = [pytest.mark.vision, pytest.mark.slow]
torchvision = pytest.importorskip("torchvision")


@pytest.mark.parametrize("name, middle, final, split, head", [
    ("vgg11", "features.12", "features.19", "features", "classifier.0"),
    ("resnet18", "layer2", "layer4", "layer4", None),
])
def test_paper_layers_and_gridpg(name, middle, final, split, head):
    net = getattr(torchvision.models, name)(weights=None).eval()
    g = torch.Generator().manual_seed(0)
    cell = torch.rand(1, 3, 224, 224, generator=g)
    lay = layout(net, cell)
    assert (lay.middle, lay.final, lay.split, lay.head) == (middle, final, split, head)
    s = Setting(net, "gridpg", 2, cell, lay=lay)  # checks the converted head on one cell
    with torch.no_grad():
        assert float((s.gridpg(cell) - net(cell)).abs().max()) <= 1e-5
    grid = torch.rand(1, 3, 448, 448, generator=g)
    hooked = Setting(net, "gridpg", 2, cell, lay=lay)
    hooked._rest[final] = None
    a = s.front(final, grid)
    assert tuple(a.shape[2:]) == ((28, 28) if name == "vgg11" else (14, 14))
    with torch.no_grad():
        torch.testing.assert_close(Head(s, 0, final, grid)(a), Head(hooked, 0, final, grid)(a))
