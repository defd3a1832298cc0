"""Results: the :class:`CheckResult` every check returns, and the run directory's file names.

This layer imports no torch: the report and the plots read results without the engine.
"""

from . import files
from .result import CHECK_COLUMNS, COLUMNS, CheckResult, columns_for, mean_interval

__all__ = ["CHECK_COLUMNS", "COLUMNS", "CheckResult", "columns_for", "files", "mean_interval"]
