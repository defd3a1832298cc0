"""Killing a run part-way through, for the resume tests."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def kill_midway(cmd: list[str], env: dict[str, str], out: Path, units: int = 8,
                at_least: int = 2, wait: float = 240) -> int:
    """Start ``cmd``, a run writing its units to ``out / "partial"``, and SIGKILL it once
    ``at_least`` of its ``units`` are saved (or after ``wait`` seconds). Fails unless it was
    killed while still running, with ``at_least`` or more but not all units saved and no
    results table; returns the number of units saved."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = out / "partial"
    deadline = time.time() + wait
    while time.time() < deadline and len(list(partial.glob("batch-*.npz"))) < at_least:
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    killed_midway = proc.poll() is None
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert killed_midway, "the run ended before it could be killed"
    n_done = len(list(partial.glob("batch-*.npz")))
    assert at_least <= n_done < units
    assert not (out / "results.csv").exists()
    return n_done
