"""Wall and CPU time of the default ``blockmnist`` and ``diffroar`` commands (Shah et al. 2021).

Runs each command in a subprocess and prints its wall time and its CPU time (user + system of
the child). On a machine shared with other jobs the wall time is inflated by the others; the
CPU time of a one-thread run is close to the wall time the same run takes on an idle core, so
both are printed, with the load average before and after.

    python benchmarks/bench_shah.py --out /tmp/bench_shah [--threads 1] [--only blockmnist]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path


def run(cmd: list[str], threads: int) -> tuple[float, float, int]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    rc = subprocess.call(cmd, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, rc


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--only", choices=["blockmnist", "diffroar"], default=None)
    args = p.parse_args()
    out = Path(args.out)
    for name in ("blockmnist", "diffroar"):
        if args.only and name != args.only:
            continue
        load0 = os.getloadavg()[0]
        wall, cpu, rc = run([sys.executable, "-m", "saliency_sanity", name, "--out",
                             str(out / name), "--cache-dir", str(out / f"{name}-cache"),
                             "--no-progress"], args.threads)
        print(f"{name:>10}: wall {wall:7.1f} s, cpu {cpu:7.1f} s, exit {rc}, threads "
              f"{args.threads}, load average {load0:.1f} -> {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
