"""The sanity checks. Each returns a :class:`CheckResult`."""

from ._result import COLUMNS, CheckResult
from .data_randomization import compare_models, data_randomization_test
from .model_randomization import model_randomization_test

__all__ = [
    "COLUMNS",
    "CheckResult",
    "compare_models",
    "data_randomization_test",
    "model_randomization_test",
]
