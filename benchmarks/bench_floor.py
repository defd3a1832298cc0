"""Ours vs the compute floor of the cascading model parameter randomization test.

The floor is a minimal PyTorch loop that performs only the forward and backward passes the test
needs, in the same batch sizes, and nothing else: for each stage model (the trained one and each
cascading stage, all built BEFORE timing) and each batch, in "predicted" target mode,
- gradient: one forward with grad on x, targets = argmax of that same forward, one backward;
- integrated gradients: one no-grad forward on x for the targets, then ``steps`` forward+backward
  rows on the scaled inputs, chunked as our method chunks them (64 rows per pass);
- SmoothGrad: the same with ``samples`` noisy copies.
No scoring, no copies, no post-processing.

A second floor, "reuse", exploits cascading: the stages below the lowest randomized layer compute
exactly the trained model's activations, so per batch (and per chunk of scaled/noisy rows) the
trained model's forward is run once with its graph kept, and every stage restarts its forward at
its lowest changed segment and back-propagates through its new top and the kept bottom (demo CNN:
4 one-layer segments; ResNet-18: stem, 8 residual blocks, head). Its saving over the naive floor
is printed.

Ours is ``model_randomization_test(..., methods=[one method], scores=["spearman"],
controls=False, null_reference=False, order="cascading", init="paper")`` timed whole (stage
building, scoring and the result table included).

Run: ``python benchmarks/bench_floor.py`` (about 10 minutes on 2 CPU cores), ``--quick`` (about
a minute), ``--device cuda`` on a GPU. On a loaded machine use ``--threads 1``.
"""

from __future__ import annotations

from typing import Any

import _common as C
import torch

from saliency_sanity import model_randomization_test
from saliency_sanity.randomization import discover_blocks


def run_case(case: C.ModelCase, method: str, n: int, batch_size: int, steps: int, samples: int,
             repeats: int, device: torch.device) -> dict[str, Any]:
    model = case.build().to(device)
    x = C.make_inputs(n, case.input_shape, seed=1).to(device)
    blocks = discover_blocks(model, x[:1], group_by="modules")  # the recorded figures: per module
    stage_models, stage_layers = C.stage_models_for(model, x[:batch_size], "paper", 0, blocks)
    spec = C.method_spec(method, steps, samples)
    plan = C.FloorPlan(method, steps=steps, samples=samples)

    def ours(xx: torch.Tensor) -> None:
        model_randomization_test(
            model, xx, methods={method: spec}, scores=["spearman"], order="cascading",
            init="paper", seed=0, batch_size=batch_size, device=device, controls=False,
            blocks=blocks, progress=False, null_reference=False)

    def floor(xx: torch.Tensor) -> None:
        C.floor_run(stage_models, xx, plan, batch_size)

    def reuse(xx: torch.Tensor) -> None:
        C.reuse_floor_run(stage_models, stage_layers, xx, plan, batch_size)

    w = x[: min(2, n)]
    times, _ = C.interleaved(
        {"ours": lambda: ours(x), "floor": lambda: floor(x), "reuse": lambda: reuse(x)},
        repeats, device,
        warmup={"ours": lambda: ours(w), "floor": lambda: floor(w), "reuse": lambda: reuse(w)})
    med = {k: C.median(v) for k, v in times.items()}
    return {
        "model": case.name, "method": method, "n": n, "batch_size": batch_size,
        "passes_per_map": C.passes_per_map(method, steps, samples), "stages": len(stage_models),
        "ours_s": med["ours"], "floor_s": med["floor"], "reuse_s": med["reuse"],
        "ours_over_floor": med["ours"] / med["floor"],
        "ours_over_floor_cpu": med["ours:cpu"] / med["floor:cpu"],
        "reuse_saving_pct": 100.0 * (1.0 - med["reuse"] / med["floor"]),
        "reuse_saving_pct_cpu": 100.0 * (1.0 - med["reuse:cpu"] / med["floor:cpu"]),
        "times": times,
    }


def main() -> None:
    p = C.parser(__doc__, "small sizes, about a minute", threads=2, device=True)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--steps", type=int, default=16, help="IG steps")
    p.add_argument("--samples", type=int, default=8, help="SmoothGrad samples")
    p.add_argument("--full", action="store_true",
                   help="every method on the ResNet at 224x224 (hours on 2 CPU cores)")
    p.add_argument("--json", default=None, help="write the rows here")
    p.add_argument("--tune-allocator", action="store_true",
                   help="saliency_sanity.performance.tune_allocator() first (as the CLI does); "
                        "applies to ours and the floors alike")
    args = p.parse_args()
    tuned = False
    if args.tune_allocator:
        from saliency_sanity.performance import tune_allocator

        tuned = tune_allocator()
    C.setup_threads(args.threads)
    dev = torch.device(args.device)
    C.print_machine(dev)
    print(f"# allocator: {'tuned (glibc mallopt)' if tuned else 'default'}")
    cases, repeats = C.model_ladder(args.quick, args.full, args.repeats)
    print(f"{'model':<14}{'method':<22}{'n':>4}{'passes':>7}{'ours s':>9}{'floor s':>9}"
          f"{'reuse s':>9}{'ours/floor':>11}{'(cpu)':>7}{'reuse saves':>13}{'(cpu)':>8}"
          f"{'ours/reuse':>11}")
    rows = []
    for case, reps, meths, n, bs in cases:
        for meth in meths:
            r = run_case(case, meth, n, bs, args.steps, args.samples, reps, dev)
            rows.append(r)
            print(f"{r['model']:<14}{meth:<22}{n:>4}{r['passes_per_map']:>7}{r['ours_s']:>9.2f}"
                  f"{r['floor_s']:>9.2f}{r['reuse_s']:>9.2f}{r['ours_over_floor']:>11.2f}"
                  f"{r['ours_over_floor_cpu']:>7.2f}{r['reuse_saving_pct']:>12.1f}%"
                  f"{r['reuse_saving_pct_cpu']:>7.1f}%{r['ours_s'] / r['reuse_s']:>11.2f}",
                  flush=True)
    C.print_ladder_end(repeats)
    C.write_rows(args.json, rows, allocator_tuned=tuned)


if __name__ == "__main__":
    main()
