"""Faithfulness by perturbation: the functional core.

Does removing what a map calls important change the model's output more than removing what it
calls unimportant? Each function takes the model, inputs (B, C, H, W), maps of the input's shape
(or (B, 1, H, W)) and targets, and returns per-sample curves as a float64 tensor:

- :func:`region_perturbation` (Samek et al. 2016), :func:`pixel_flipping`,
  :func:`deletion` / :func:`insertion` (Petsiuk et al. 2018): (B, steps + 1);
- :func:`road` (Rong et al. 2022): (B, len(percentages));
- scores of curves: :func:`aopc`, :func:`abpc`, :func:`auc`.

All perturbed copies go through the model in large batched forward passes; random draws use a
private generator seeded from ``seed``; the model is run in eval mode and left as it was. See
``docs/faithfulness.md`` for the definitions, defaults and differences from Quantus 0.6.0.
"""

from ._common import ORDERS, REPLACEMENTS, SCORES, gaussian_blur
from .curves import (
    deletion,
    insertion,
    perturbation_curve,
    pixel_flipping,
    region_grid,
    region_perturbation,
)
from .imputation import linear_imputation, noisy_linear_imputation, road
from .scores import abpc, aopc, auc

__all__ = [
    "ORDERS", "REPLACEMENTS", "SCORES", "abpc", "aopc", "auc", "deletion", "gaussian_blur",
    "insertion", "linear_imputation", "noisy_linear_imputation", "perturbation_curve",
    "pixel_flipping", "region_grid", "region_perturbation", "road",
]
