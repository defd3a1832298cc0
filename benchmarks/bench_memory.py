"""Peak memory of the model randomization test as the number of images grows 1x, 4x, 16x.

Each case runs in a fresh Python process; the peak resident set size (``ru_maxrss``) is read at
its end. ``tracemalloc`` would not see torch's allocations, hence the processes. A baseline
process (imports, model, inputs, no test) is measured too, so the growth can be read both on the
whole process and net of what any torch process holds anyway. On a GPU (``--device cuda``) the
peak of ``torch.cuda.max_memory_allocated`` is reported instead.

The batch size is fixed, so a test whose memory does not depend on the number of images shows
the same peak at 1x and 16x.

``--stages`` measures the other axis: peak memory of sMPRT, eMPRT and the activation-scale
analysis as the number of randomization stages grows (an MLP of 4, 8 and 16 blocks of 1024 x 1024
linear layers, 4 MiB each, one batch), with the stage models the plan held at once.

Run: ``python benchmarks/bench_memory.py`` (a few minutes on 2 CPU cores), ``--quick``,
``--device cuda``, ``--stages``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import _common as C
import torch


def child(model: str, size: int, n: int, batch_size: int, method: str, device: str,
          threads: int) -> None:
    from saliency_sanity import model_randomization_test

    C.setup_threads(threads)
    dev = torch.device(device)
    case = C.model_case(model, size, num_classes=1000)
    net = case.build().to(dev)
    x = C.make_inputs(max(n, 1), case.input_shape, seed=1).to(dev)
    base = C.peak_rss_mib()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    if n > 0:
        spec = C.method_spec(method, 16, 8)
        model_randomization_test(net, x, methods={method: spec}, scores=["spearman"],
                                 order="cascading", init="paper", seed=0, batch_size=batch_size,
                                 device=dev, controls=False, progress=False,
                                 null_reference=False)
    out = {"n": n, "peak_rss_mib": C.peak_rss_mib(), "rss_before_test_mib": base}
    if dev.type == "cuda":
        out["cuda_peak_mib"] = torch.cuda.max_memory_allocated(dev) / 2**20
    print(json.dumps(out))


def deep_mlp(depth: int, width: int = 1024) -> torch.nn.Module:
    """``depth`` blocks of ``width`` x ``width`` linear layers + ReLU, then a 10-class head."""
    g = torch.Generator().manual_seed(0)
    layers: list[torch.nn.Module] = []
    for _ in range(depth):
        lin = torch.nn.Linear(width, width)
        with torch.no_grad():
            lin.weight.copy_(torch.randn(width, width, generator=g) / width ** 0.5)
            lin.bias.zero_()
        layers += [lin, torch.nn.ReLU()]
    head = torch.nn.Linear(width, 10)
    return torch.nn.Sequential(*layers, head)


def stages_child(check: str, depth: int, threads: int) -> None:
    from saliency_sanity import checks

    C.setup_threads(threads)
    net = deep_mlp(depth) if depth > 0 else deep_mlp(1)
    x = torch.randn(8, 1024, generator=torch.Generator().manual_seed(1))
    base = C.peak_rss_mib()
    held = None
    kw = {"methods": ["gradient"], "controls": False, "progress": False, "batch_size": 8}
    if depth > 0:
        if check == "smprt":
            r = checks.smooth_model_randomization_test(net, x, samples=2, scores=["pearson"], **kw)
            held = r.settings.get("engine", {}).get("stage_models_held_at_most")
        elif check == "emprt":
            r = checks.efficient_model_randomization_test(net, x, **kw)
            held = r.settings.get("engine", {}).get("stage_models_held_at_most")
        else:
            res = checks.activation_scale_analysis(net, x, batch_size=8, progress=False)
            held = res.settings.get("engine", {}).get("stage_models_held_at_most")
    print(json.dumps({"peak_rss_mib": C.peak_rss_mib(), "rss_before_test_mib": base,
                      "held": held}))


def stages_main(args: argparse.Namespace) -> None:
    script = os.path.abspath(__file__)
    print(f"{'check':<8}{'blocks':>7}{'stages':>7}{'model MiB':>10}{'peak MiB':>10}"
          f"{'net MiB':>9}{'held':>6}")
    rows = []
    for check in ("smprt", "emprt", "scales"):
        baseline = C.run_child(script, ["--stages-child", check, "0",
                                        "--threads", str(args.threads)])["peak_rss_mib"]
        for depth in (4, 8, 16):
            r = C.run_child(script, ["--stages-child", check, str(depth),
                                     "--threads", str(args.threads)])
            size = depth * 4.0
            net = r["peak_rss_mib"] - baseline
            rows.append({"check": check, "blocks": depth + 1, "stages": depth + 2,
                         "model_mib": size, "peak_mib": r["peak_rss_mib"], "net_mib": net,
                         "held": r["held"]})
            print(f"{check:<8}{depth + 1:>7}{depth + 2:>7}{size:>10.0f}"
                  f"{r['peak_rss_mib']:>10.0f}{net:>9.0f}{str(r['held']):>6}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": C.machine(), "rows": rows}, fh, indent=1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", nargs=5, metavar=("MODEL", "SIZE", "N", "BATCH", "METHOD"),
                   help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--method", default="gradient")
    p.add_argument("--json", default=None)
    p.add_argument("--stages", action="store_true",
                   help="peak memory of sMPRT / eMPRT / activation scales vs the number of stages")
    p.add_argument("--stages-child", nargs=2, metavar=("CHECK", "DEPTH"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.stages_child:
        stages_child(args.stages_child[0], int(args.stages_child[1]), args.threads)
        return
    if args.stages:
        C.print_machine(torch.device("cpu"))
        stages_main(args)
        return
    if args.child:
        m, s, n, b, meth = args.child
        child(m, int(s), int(n), int(b), meth, args.device, args.threads)
        return
    C.setup_threads(args.threads)
    dev = torch.device(args.device)
    C.print_machine(dev)
    # (model, size, base n, batch size)
    cases = [("cnn", 28, 8, 8)] if args.quick else [("cnn", 28, 8, 8), ("resnet18", 64, 8, 8)]
    script = os.path.abspath(__file__)
    rows = []
    key = "cuda_peak_mib" if dev.type == "cuda" else "peak_rss_mib"
    print(f"{'model':<14}{'method':<12}{'batch':>6}{'n':>6}{'peak MiB':>10}{'baseline':>10}"
          f"{'net MiB':>9}{'growth vs 1x':>14}{'net growth':>12}")
    for model, size, n0, bs in cases:
        common = ["--device", args.device, "--threads", str(args.threads)]
        baseline = C.run_child(script, ["--child", model, str(size), "0", str(bs), args.method,
                                        *common])[key]
        first: dict[str, float] = {}
        for mult in (1, 4, 16):
            n = n0 * mult
            r = C.run_child(script, ["--child", model, str(size), str(n), str(bs), args.method,
                                     *common])
            peak = r[key]
            net = peak - (baseline if dev.type != "cuda" else 0.0)
            if mult == 1:
                first = {"peak": peak, "net": net}
            row = {"model": f"{model}@{size}", "method": args.method, "batch_size": bs, "n": n,
                   "peak_mib": peak, "baseline_mib": baseline, "net_mib": net,
                   "growth": peak / first["peak"], "net_growth": net / first["net"]}
            rows.append(row)
            print(f"{row['model']:<14}{args.method:<12}{bs:>6}{n:>6}{peak:>10.0f}"
                  f"{baseline:>10.0f}{net:>9.0f}{row['growth']:>14.3f}{row['net_growth']:>12.3f}",
                  flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": C.machine(), "rows": rows}, fh, indent=1)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
