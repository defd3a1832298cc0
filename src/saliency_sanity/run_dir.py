"""Run directories: results.csv, run.json, examples.npz and figures/."""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from pathlib import Path

from .checks._result import CheckResult


def write_run(result: CheckResult, out: str | os.PathLike,
              command: Sequence[str] | None = None, figures: bool = True) -> Path:
    """Save ``result`` and its figures into ``out``; return the directory.

    Example:
        >>> # write_run(result, "runs/mine")  # doctest: +SKIP
    """
    d = Path(out)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(f"cannot create the output directory {d}: {err.strerror}") from err
    if not os.access(d, os.W_OK):
        raise PermissionError(f"the output directory {d} is not writable; choose another --out")
    if command is not None:
        result.settings["command"] = shlex.join(command)
    result.save(d)
    if figures:
        from .plots import save_figures

        save_figures(result, d / "figures")
    return d
