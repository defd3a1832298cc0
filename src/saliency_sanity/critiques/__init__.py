"""The critiques of a model randomization run (sMPRT, eMPRT, random logit, activation scales,
the method ranking), computed beside it in the same run directory.

- :mod:`.options`: :class:`CritiqueOptions` (which extras, their settings; no torch import);
- :mod:`.run`: :func:`run_critiques`, the orchestration (atomic, reusable, failures isolated).

The checks themselves live in :mod:`saliency_sanity.checks`, the ranking maths in
:mod:`saliency_sanity.checks.ranking`, the file names in :mod:`saliency_sanity.results.files`.
"""

from .options import CritiqueOptions, load_data_randomization_run
from .run import (
           CritiqueOutcome,
           run_critiques,
           select_methods,
           without_noise_methods,
)

__all__ = ["CritiqueOptions", "CritiqueOutcome", "load_data_randomization_run",
           "run_critiques", "select_methods", "without_noise_methods"]
