"""Times our batched metrics against a per-pair scipy / scikit-image loop, in one process.

For 64 pairs of 224x224 maps (float32), each metric is timed both ways, interleaved (ours, loop,
ours, loop, ...), and the best of ``--repeats`` runs is reported with the ratio loop / ours.
Run: ``python benchmarks/bench_metrics.py [--pairs 64] [--size 224] [--threads 2] [--device cpu]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import scipy.stats
import torch
from skimage.feature import hog
from skimage.metrics import mean_squared_error, structural_similarity

from saliency_sanity import metrics


def _best(fn: Callable[[], object], sync: Callable[[], None]) -> float:
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--pairs", type=int, default=64)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    rs = np.random.RandomState(0)
    n, s = args.pairs, args.size
    # smooth-ish positive maps in [0, 1], like min-max saliency maps
    a_np = rs.rand(n, s, s).astype(np.float32)
    b_np = rs.rand(n, s, s).astype(np.float32)
    a, b = torch.from_numpy(a_np).to(dev), torch.from_numpy(b_np).to(dev)

    def pairs() -> zip:
        return zip(a_np, b_np, strict=True)

    def loop_spearman() -> list[float]:
        return [scipy.stats.spearmanr(x.ravel(), y.ravel())[0] for x, y in pairs()]

    def loop_pearson() -> list[float]:
        return [scipy.stats.pearsonr(x.ravel(), y.ravel())[0] for x, y in pairs()]

    def loop_ssim() -> list[float]:
        return [
            structural_similarity(
                x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                data_range=1.0,
            )
            for x, y in pairs()
        ]  # fmt: skip

    def loop_hog() -> list[float]:
        out = []
        for x, y in pairs():
            fx = hog(x, pixels_per_cell=(16, 16), cells_per_block=(3, 3))
            fy = hog(y, pixels_per_cell=(16, 16), cells_per_block=(3, 3))
            out.append(scipy.stats.pearsonr(fx, fy)[0])
        return out

    def loop_mse() -> list[float]:
        return [mean_squared_error(x, y) for x, y in pairs()]

    cases: list[tuple[str, Callable[[], object], Callable[[], object]]] = [
        ("spearman", lambda: metrics.spearman(a, b), loop_spearman),
        ("pearson", lambda: metrics.pearson(a, b), loop_pearson),
        ("ssim", lambda: metrics.ssim(a, b, data_range=1.0), loop_ssim),
        ("hog_similarity", lambda: metrics.hog_similarity(a, b), loop_hog),
        ("mse", lambda: metrics.mse(a, b), loop_mse),
    ]
    if dev.type == "cpu":
        cases.insert(
            3,
            ("ssim[torch path]", lambda: metrics.ssim(a, b, data_range=1.0, backend="torch"),
             loop_ssim),
        )  # fmt: skip
    print(
        f"{n} pairs of {s}x{s} float32 maps, device={dev}, torch threads={args.threads}, "
        f"best of {args.repeats} (interleaved)"
    )
    print(f"{'metric':<18}{'ours ms':>10}{'loop ms':>10}{'speedup':>9}")
    for name, ours, loop in cases:
        ours()
        loop()  # warm-up
        t_ours, t_loop = [], []
        for _ in range(args.repeats):
            t_ours.append(_best(ours, sync))
            t_loop.append(_best(loop, lambda: None))
        o, lp = min(t_ours) * 1e3, min(t_loop) * 1e3
        print(f"{name:<18}{o:>10.1f}{lp:>10.1f}{lp / o:>8.1f}x")


if __name__ == "__main__":
    main()
