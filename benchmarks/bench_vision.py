"""Model randomization with the gradient on torchvision's ResNet-18 (224 x 224, 8 images, CPU):
ours vs the compute floor.

The model is torchvision's own ``resnet18`` definition (random weights, 1000 classes; nothing is
downloaded), its blocks the default ones (conv1, bn1, the eight basic blocks, fc: 11 blocks, 12
cascading stages). The floor is ``bench_floor``'s: for each pre-built stage model and batch, one
forward with grad and one backward, targets from that same forward; nothing else. Ours is
``model_randomization_test(..., methods=["gradient"], scores=["spearman"], controls=False,
null_reference=False)`` timed whole (stage building, scoring, the table). Both in one process,
interleaved; wall and CPU times.

Needs the ``vision`` extra (torchvision). Run:
``python benchmarks/bench_vision.py [--threads 1] [--repeats 1] [--n 8] [--size 224]``.
"""

from __future__ import annotations

import argparse

import _common as C
import torch

from saliency_sanity import model_randomization_test
from saliency_sanity.randomization import discover_blocks


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--size", type=int, default=224)
    args = p.parse_args()
    import torchvision

    C.setup_threads(args.threads)
    dev = torch.device("cpu")
    C.print_machine(dev)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = torchvision.models.resnet18(num_classes=1000).eval()
    x = C.make_inputs(args.n, (3, args.size, args.size), seed=1)
    blocks = discover_blocks(model, x[:1])
    print(f"# blocks ({len(blocks)}): {', '.join(b.name for b in blocks)}")
    stage_models, _ = C.stage_models_for(model, x[:args.batch_size], "paper", 0, blocks)
    plan = C.FloorPlan("gradient")

    def ours(xx: torch.Tensor) -> None:
        model_randomization_test(
            model, xx, methods=["gradient"], scores=["spearman"], order="cascading",
            init="paper", seed=0, batch_size=args.batch_size, device=dev, controls=False,
            progress=False, null_reference=False)

    def floor(xx: torch.Tensor) -> None:
        C.floor_run(stage_models, xx, plan, args.batch_size)

    w = x[:2]
    times, _ = C.interleaved({"ours": lambda: ours(x), "floor": lambda: floor(x)}, args.repeats,
                             dev, warmup={"ours": lambda: ours(w), "floor": lambda: floor(w)})
    med = {k: C.median(v) for k, v in times.items()}
    print(f"{'model':<22}{'n':>4}{'stages':>8}{'ours s':>9}{'floor s':>9}{'ours/floor':>12}"
          f"{'(cpu)':>7}")
    print(f"{'torchvision resnet18':<22}{args.n:>4}{len(stage_models):>8}{med['ours']:>9.2f}"
          f"{med['floor']:>9.2f}{med['ours'] / med['floor']:>12.2f}"
          f"{med['ours:cpu'] / med['floor:cpu']:>7.2f}")
    print(f"# repeats: {args.repeats}, medians; machine load at end: "
          f"{C.machine()['load_avg_1_5_15']}")


if __name__ == "__main__":
    main()
