"""saliency-sanity: sanity checks for saliency maps (Adebayo et al. 2018 and follow-ups).

Example:
    >>> import saliency_sanity as ss
    >>> "gradient" in ss.methods.list()
    True
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "model_randomization_test": ("saliency_sanity.checks", "model_randomization_test"),
    "data_randomization_test": ("saliency_sanity.checks", "data_randomization_test"),
    "compare_models": ("saliency_sanity.checks", "compare_models"),
    "faithfulness_test": ("saliency_sanity.checks", "faithfulness_test"),
    "localization_test": ("saliency_sanity.checks", "localization_test"),
    "make_grids": ("saliency_sanity.grids", "make_grids"),
    "CheckResult": ("saliency_sanity.checks", "CheckResult"),
    "randomized_models": ("saliency_sanity.randomization", "randomized_models"),
    "discover_blocks": ("saliency_sanity.randomization", "discover_blocks"),
}
_SUBMODULES = {"methods", "metrics", "postprocess", "scores", "randomization", "checks", "plots",
               "models", "data", "training", "performance",
               "faithfulness", "verdicts", "engine", "results", "grids", "localization"}

__all__ = sorted([*_LAZY, *_SUBMODULES, "__version__"])


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    if name in _SUBMODULES:
        return importlib.import_module(f"saliency_sanity.{name}")
    raise AttributeError(f"module 'saliency_sanity' has no attribute {name!r}")
