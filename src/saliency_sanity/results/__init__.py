"""Results: the :class:`CheckResult` every check returns, and the run directory's file names.

This layer imports no torch: the report and the plots read results without the engine.
"""

from . import files, spec
from .result import COLUMNS, CheckResult, columns_for, mean_interval
from .spec import CheckSpec

__all__ = ["COLUMNS", "CheckResult", "CheckSpec", "columns_for", "files", "mean_interval",
           "spec"]
