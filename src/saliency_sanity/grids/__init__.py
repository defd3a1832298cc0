"""Grid images and the three controlled settings of Rao, Boehle, Schiele 2022.

- :func:`make_grids`, :class:`GridSet`, :func:`load_grids`: n x n grids of confidently
  classified images of distinct classes (:mod:`.data`);
- :class:`Setting` (``"gridpg"``, ``"difull"``, ``"dipart"``) and :class:`Head`: a model on a
  grid, one logit vector per cell, also from a layer's activations (:mod:`.settings`);
- :func:`layout`, :func:`resolve_layer`: the split point, the head and the ``middle`` /
  ``final`` layers found from one traced pass (:mod:`.layout`).

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(),
    ...                     nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3)).eval()
    >>> Setting(net, "difull", n=2, cell=torch.zeros(1, 1, 6, 6))(torch.zeros(5, 1, 12, 12)).shape
    torch.Size([5, 4, 3])
"""

from .data import GridSet, load_grids, make_grids
from .layout import LAYER_ALIASES, Layout, layout, resolve_layer
from .settings import SETTINGS, Head, Setting, cell_slice, stitch

__all__ = ["LAYER_ALIASES", "SETTINGS", "GridSet", "Head", "Layout", "Setting", "cell_slice",
           "layout", "load_grids", "make_grids", "resolve_layer", "stitch"]
