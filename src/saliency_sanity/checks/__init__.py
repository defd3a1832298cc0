"""The sanity checks. Each returns a :class:`CheckResult`."""

from ._result import COLUMNS, CheckResult
from .model_randomization import model_randomization_test

__all__ = ["COLUMNS", "CheckResult", "model_randomization_test"]
