"""The self-contained HTML report of a run directory (``report.html``).

Example:
    >>> from saliency_sanity.report import build_report
    >>> # build_report("runs/demo")   # writes runs/demo/report.html
"""

from .html import build_report, render_report

__all__ = ["build_report", "render_report"]
