"""Perturbation methods (Occlusion, RISE, Score-CAM, Ablation-CAM): ours vs the compute floor,
and Occlusion vs Captum's Occlusion, in one process.

The floor of a method is the forward passes it needs and nothing else: the same number of rows
(perturbed images) in passes of the same sizes, on a tensor built beforehand, without gradients
(for Score-CAM and Ablation-CAM plus the one clean pass that gives the activations). Ours is
``methods.get(name, ...)(model, x, target)`` timed whole: input checks, model guard, the
default-layer search, mask building, scores and the weighted sums included. Targets are given
(no "predicted" pass on either side beyond the target check).

Captum's ``Occlusion`` runs the same patches with ``perturbations_per_eval`` equal to our
positions per pass, so both run the same passes.

Run: ``python benchmarks/bench_cam_methods.py`` (a few minutes on 2 CPU cores), ``--quick``,
``--device cuda`` on a GPU. On a loaded machine use ``--threads 1`` and read the CPU-time ratios.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

import _common as C
import torch
from torch import nn

from saliency_sanity import methods


def _counting(model: nn.Module) -> tuple[list[int], Callable[[], None]]:
    """Rows of every forward pass of ``model`` (a pre-hook on its first submodule)."""
    first = next(m for _, m in model.named_modules() if not list(m.children()))
    sizes: list[int] = []
    h = first.register_forward_pre_hook(lambda m, i: sizes.append(int(i[0].shape[0])))
    return sizes, h.remove


def floor_fn(model: nn.Module, x: torch.Tensor, sizes: list[int]) -> Callable[[], None]:
    """Forward passes of the given row counts on a prebuilt input, no gradients."""
    big = C.make_inputs(max(sizes), tuple(x.shape[1:]), seed=7).to(x.device)

    def run() -> None:
        with torch.no_grad():
            for n in sizes:
                model(big[:n])
    return run


def run_case(case: C.ModelCase, n: int, settings: dict[str, dict[str, Any]], repeats: int,
             device: torch.device) -> list[dict[str, Any]]:
    model = case.build().to(device)
    x = C.make_inputs(n, case.input_shape, seed=1).to(device)
    with torch.no_grad():
        t = model(x).argmax(1)
    rows = []
    for name, kw in settings.items():
        m = methods.get(name, **kw)
        sizes, remove = _counting(model)
        m(model, x, t)  # records the passes: [target check, (layer search,) ... ]
        remove()
        # leave out the target check and the default-layer search (a pass of one row)
        skip = 2 if name in ("score_cam", "ablation_cam") and "layer" not in kw else 1
        passes = sizes[skip:]
        cases = {"ours": lambda m=m: m(model, x, t), "floor": floor_fn(model, x, passes)}
        captum = None
        if name == "occlusion":
            from captum.attr import Occlusion

            per = passes[1] // n if len(passes) > 1 else 1
            p, s = m.patch, m.stride
            win, strides = (x.shape[1], *p), (1, *s)

            def captum(per: int = per, win: tuple = win, strides: tuple = strides) -> Any:
                with torch.no_grad():
                    return Occlusion(model).attribute(
                        x, sliding_window_shapes=win, strides=strides, target=t,
                        perturbations_per_eval=per)
            cases["captum"] = captum
        times, outs = C.interleaved(cases, repeats, device)
        row = {"case": case.name, "n": n, "method": name, "settings": kw,
               "passes": len(passes), "rows": sum(passes)}
        for k in cases:
            row[k] = C.median(times[k])
            row[k + "_cpu"] = C.median(times[k + ":cpu"])
        if captum is not None:
            ref = outs["captum"][:, :1]
            row["agree"] = float((outs["ours"] - ref).abs().max() / ref.abs().max())
        rows.append(row)
        ratio = (f"ours/floor {row['ours_cpu'] / row['floor_cpu']:.2f} CPU "
                 f"({row['ours'] / row['floor']:.2f} wall)")
        if captum is not None:
            ratio += (f"  ours/captum {row['ours_cpu'] / row['captum_cpu']:.2f} CPU "
                      f"({row['ours'] / row['captum']:.2f} wall), agree {row['agree']:.1e}")
        print(f"{case.name:16s} {name:13s} {row['passes']:4d} passes {row['rows']:6d} rows  "
              f"ours {row['ours_cpu']:.3f}s CPU  floor {row['floor_cpu']:.3f}s  {ratio}",
              flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller settings, 1 repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", type=int, default=64, help="ResNet-18 input size")
    ap.add_argument("--json", default=None, help="write the rows to this file")
    args = ap.parse_args(argv)
    C.setup_threads(args.threads)
    device = torch.device(args.device)
    C.print_machine(device)
    repeats = 1 if args.quick else args.repeats
    masks = 100 if args.quick else 500
    plans = [
        (C.model_case("cnn"), 8, {
            "occlusion": {"patch": 5, "stride": 2},
            "rise": {"n_masks": masks * 2, "s": 6, "p1": 0.1},
            "score_cam": {}, "ablation_cam": {}}),
        (C.model_case("resnet18", args.size), 2, {
            "occlusion": {"patch": 16, "stride": 8},
            "rise": {"n_masks": masks, "s": 6, "p1": 0.1},
            "score_cam": {"layer": "layer3"} if args.quick else {},
            "ablation_cam": {"layer": "layer3"} if args.quick else {}}),
    ]
    rows = []
    for case, n, settings in plans:
        rows += run_case(case, n, settings, repeats, device)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": C.machine(), "rows": rows}, fh, indent=1, default=str)


if __name__ == "__main__":
    main()
