"""The face of a run: the self-contained HTML report (``report.html``) and :func:`write_run`,
which saves a result with its figures and report into a run directory.

Example:
    >>> from saliency_sanity.report import build_report
    >>> # build_report("runs/demo")   # writes runs/demo/report.html
"""

from .html import build_report, render_report
from .run_dir import write_run

__all__ = ["build_report", "render_report", "write_run"]
