"""Run directories: results.csv, run.json, examples.npz, figures/ and report.html."""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from pathlib import Path

from ..results import CheckResult


def write_run(result: CheckResult, out: str | os.PathLike,
              command: Sequence[str] | None = None, figures: bool = True,
              report: bool = True) -> Path:
    """Save ``result``, its figures and ``report.html`` into ``out``; return the directory.

    Every file is written atomically; if saving fails part-way (a full disk), the files this call
    created are removed again so no partial run directory is left behind.

    Example:
        >>> import tempfile, pandas as pd
        >>> from saliency_sanity.checks import CheckResult, COLUMNS
        >>> r = CheckResult(check="model_randomization", table=pd.DataFrame(
        ...     [["g", 1, "fc", 0, "spearman_abs", 0.1]], columns=COLUMNS))
        >>> d = write_run(r, tempfile.mkdtemp() + "/run", figures=False)
        >>> sorted(p.name for p in d.iterdir())
        ['report.html', 'results.csv', 'run.json']
    """
    d = Path(out)
    existed = d.exists()
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(f"cannot create the output directory {d}: {err.strerror}") from err
    if not os.access(d, os.W_OK):
        raise PermissionError(f"the output directory {d} is not writable; choose another --out")
    if command is not None:
        result.settings["command"] = shlex.join(command)
    before = _listing(d)
    try:
        result.save(d)
        if figures:
            from .html import save_check_figures

            save_check_figures(result, d / "figures")
        if report:
            from .html import build_report

            build_report(d, result=result)
    except BaseException:
        _remove_new(d, before)
        if not existed:
            try:
                d.rmdir()
            except OSError:
                pass
        raise
    return d


def _listing(d: Path) -> set[Path]:
    return {p for p in d.rglob("*")}


def _remove_new(d: Path, before: set[Path]) -> None:
    """Remove the files and folders under ``d`` that were not there in ``before``."""
    new = sorted(_listing(d) - before, key=lambda p: len(p.parts), reverse=True)
    for p in new:
        try:
            if p.is_dir() and not p.is_symlink():
                p.rmdir()
            else:
                p.unlink()
        except OSError:
            pass
