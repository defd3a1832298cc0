"""The engine every check runs on: resolve -> plan -> units -> evaluate -> store -> result.

- :mod:`.config`: :class:`RunConfig`, the common settings, recorded the same way everywhere;
- :mod:`.resolve`: input validation, methods and scores from the user's choices;
- :mod:`.evaluator`: units of work, views and pairs, the one evaluator and the row tables;
- :mod:`.reuse`: reuse of the trained model's activations below randomized blocks;
- :mod:`.store`: the run directory's per-unit store (resume) and run fingerprints;
- :mod:`.rows`: the tidy tables assembled from the units' column arrays;
- :mod:`.run`: :func:`execute`, which ties them together for a check;
- :mod:`.accuracy`: the model's accuracy on the explained inputs, for the report's header;
- :mod:`.ray_backend`: units as Ray tasks (``RunConfig(backend="ray")``; imported only then).

Plans of models come from :mod:`saliency_sanity.randomization` (``StagePlan``, ``FixedPlan``).
"""

from .accuracy import model_accuracy, record_accuracy
from .config import RunConfig, check_backend, derive_seed, versions
from .evaluator import (
    Evaluator,
    LocalRunner,
    Pair,
    RunOutput,
    Unit,
    View,
    batch_units,
    evaluate,
)
from .resolve import check_inputs, method_for_call, prepare, resolve_methods, resolve_scores
from .reuse import DEFAULT_BUDGET_BYTES, ActivationReuse
from .run import execute, finished_run, make_runner, progress_bar
from .store import UnitStore, fingerprint

__all__ = [
    "check_backend",
    "DEFAULT_BUDGET_BYTES", "ActivationReuse", "Evaluator", "LocalRunner", "Pair", "RunConfig",
    "RunOutput", "Unit", "UnitStore", "View", "batch_units", "check_inputs", "derive_seed",
    "evaluate", "execute", "finished_run", "fingerprint", "make_runner", "method_for_call",
    "model_accuracy", "prepare", "progress_bar", "record_accuracy",
    "resolve_methods", "resolve_scores", "versions",
]
