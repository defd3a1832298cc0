"""Process-level allocator settings: applied where glibc is, and by the CLI only."""

from __future__ import annotations

import subprocess
import sys

import pytest

from saliency_sanity import cli

SCRIPT = """
import resource
import numpy as np
from saliency_sanity.performance import tune_allocator
tuned = {tuned}
if tuned:
    assert tune_allocator()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
keep = [np.ones(2**20, dtype=np.uint8) for _ in range(8)]  # live memory below the churn
f0 = faults()
for i in range(40):  # a stage: allocate activations of growing size, touch, free
    acts = [np.ones((4 + i % 4) * 2**20, dtype=np.uint8) for _ in range(6)]
    del acts
print(faults() - f0)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc only")
def test_tuned_allocator_stops_page_fault_churn():
    """The number the setting exists for, counted: page faults of repeated allocate-and-free
    cycles, in fresh processes with and without it."""
    counts = []
    for tuned in (False, True):
        out = subprocess.run([sys.executable, "-c", SCRIPT.format(tuned=tuned)],
                             capture_output=True, text=True, check=True)
        counts.append(int(out.stdout.strip()))
    default, tuned = counts
    assert tuned * 5 < default, counts


def test_cli_tunes_its_own_process_unless_told_not_to(monkeypatch):
    calls = []
    monkeypatch.setattr("saliency_sanity.performance.tune_allocator",
                        lambda: calls.append(1) or True)
    assert cli.main(["list"]) == 0
    monkeypatch.setenv("SALIENCY_SANITY_DEFAULT_MALLOC", "1")
    assert cli.main(["list"]) == 0
    assert calls == [1]
