"""Localization in controlled settings (Rao, Boehle, Schiele 2022): scores, ML-Att, AggAtt.

- :mod:`.score`: the localization score, channel sums, upsampling, Gaussian smoothing;
- :mod:`.attribution`: every method at a layer (ML-Att) on the heads of a setting;
- :mod:`.aggatt`: AggAtt bins.

The check itself is :func:`saliency_sanity.localization_test`; the grids and settings are in
:mod:`saliency_sanity.grids`.

Example:
    >>> import torch
    >>> m = torch.zeros(1, 1, 4, 4); m[0, 0, 0, 0] = 1.0
    >>> localization(m, k=0, n=2).item()
    1.0
"""

from .aggatt import BINS, aggatt_bins, to_top_left
from .attribution import AT, at_layer, head_maps, setting_layer_maps
from .score import (
                    ABS_METHODS,
                    EPS,
                    cell_mask,
                    channel_sum,
                    gaussian_smooth,
                    localization,
                    masses,
                    smoothing_settings,
                    upsample,
)

__all__ = ["ABS_METHODS", "AT", "BINS", "EPS", "aggatt_bins", "at_layer", "cell_mask",
           "channel_sum", "gaussian_smooth", "head_maps", "localization", "masses",
           "setting_layer_maps", "smoothing_settings", "to_top_left", "upsample"]
