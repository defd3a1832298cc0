"""``saliency-sanity faithfulness``: perturbation curves of a user's model's maps, written as a run
directory (results.csv, run.json, figures/, report.html) like the other commands."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from . import _method_settings
from ._common import (
    add_common,
    apply_normalize,
    csv_list,
    load_model_inputs,
    parse_controls,
    print_outputs,
)
from ._model_inputs import add_model_inputs, record_inputs

#: Metric settings on the command line: flag -> (setting, metrics it applies to).
_SETTING_FLAGS = {
    "region": ("region", ("region_perturbation",)),
    "steps": ("steps", ("region_perturbation",)),
    "replacement": ("replacement", ("region_perturbation", "pixel_flipping", "insertion",
                                    "deletion")),
    "pixels_per_step": ("pixels_per_step", ("pixel_flipping", "insertion", "deletion")),
    "percentages": ("percentages", ("road",)),
    "noise": ("noise", ("road",)),
}


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """The ``faithfulness`` subcommand's arguments."""
    f = sub.add_parser(
        "faithfulness",
        help="perturbation curves (region perturbation, pixel flipping, insertion, deletion, "
             "ROAD): does removing what a map calls important hurt the model most?")
    add_model_inputs(f)
    f.add_argument("--controls", default="default",
                   help="comma-separated controls, 'none', or 'default' (random maps and the "
                        "edge detector: a random map should sit on the random-order curve)")
    f.add_argument("--metrics", default="region_perturbation,pixel_flipping,insertion,deletion,"
                   "road", help="comma-separated, from: region_perturbation, pixel_flipping, "
                   "insertion, deletion, road (default: all)")
    f.add_argument("--score", choices=["softmax", "logit"], default="softmax",
                   help="the explained class's probability (default) or logit")
    f.add_argument("--region", type=int, default=None,
                   help="region perturbation: region side in pixels (default: 9 at 224 x 224, "
                        "scaled to the image, at least 2)")
    f.add_argument("--steps", type=int, default=None,
                   help="region perturbation: steps (default: every region, up to 100)")
    f.add_argument("--replacement", default=None,
                   help="what removed pixels become: uniform, black (0), min, mean, blur, or a "
                        "number (default: uniform for region perturbation, black for pixel "
                        "flipping and deletion, blur for insertion's start image)")
    f.add_argument("--pixels-per-step", type=float, default=None,
                   help="pixel flipping, insertion, deletion: pixels per step, a fraction of the "
                        "image (0.01) or a count (>= 1)")
    f.add_argument("--percentages", default=None,
                   help="ROAD: comma-separated fractions removed, each in (0, 1) (default "
                        "0.1,...,0.9)")
    f.add_argument("--noise", type=float, default=None,
                   help="ROAD: noise added to the imputed pixels (0.01)")
    f.add_argument("--no-random-order", action="store_true",
                   help="skip the random-order baseline curves")
    f.add_argument("--target-mode", choices=["predicted", "fixed"], default="predicted",
                   help="explain the model's predicted class (default) or the labels")
    f.add_argument("--batch-size", type=int, default=16, help="inputs per unit of work (16)")
    f.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: the model's)")
    f.add_argument("--normalize", default=None, metavar="MEAN,STD|MEANS/STDS",
                   help="for models trained on normalized inputs: explain model((x - mean) / "
                        "std), x in the data's own units")
    f.add_argument("--out", required=True, help="run directory to write (rerun to resume)")
    add_common(f)
    return f


def _number(text: str) -> float | int:
    v = float(text)
    return int(v) if v.is_integer() and v >= 1 else v


def metric_settings(args: argparse.Namespace, metrics: list[str]) -> dict[str, dict[str, Any]]:
    """The per-metric settings given by flags; an error for a flag none of ``metrics`` uses.

    Example:
        >>> a = argparse.Namespace(region=3, steps=None, replacement="0", pixels_per_step=None,
        ...                        percentages="0.2,0.5", noise=None)
        >>> s = metric_settings(a, ["region_perturbation", "road"])
        >>> s["region_perturbation"], s["road"]
        ({'region': 3, 'replacement': 0.0}, {'percentages': [0.2, 0.5]})
    """
    out: dict[str, dict[str, Any]] = {m: {} for m in metrics}
    for flag, (name, applies) in _SETTING_FLAGS.items():
        value = getattr(args, flag)
        if value is None:
            continue
        used = [m for m in applies if m in metrics]
        if not used:
            raise ValueError(f"--{flag.replace('_', '-')} applies to {', '.join(applies)}, "
                             f"which --metrics ({', '.join(metrics)}) does not include")
        if flag == "percentages":
            try:
                value = [float(t) for t in csv_list(value) or []]
            except ValueError:
                raise ValueError(f"--percentages must be comma-separated fractions in (0, 1), "
                                 f"got {args.percentages!r}") from None
        elif flag == "replacement":
            try:
                value = _number(value)
            except ValueError:
                pass  # a name
        elif flag == "pixels_per_step":
            value = _number(str(value))
        for m in used:
            out[m][name] = value
    return {m: s for m, s in out.items() if s}


def run(args: argparse.Namespace, argv: list[str]) -> int:
    """Run the faithfulness check and write the run directory."""
    from ..checks import faithfulness_test
    from ..critiques.options import check_faithfulness_metrics
    from ..engine import record_accuracy
    from ..io_inputs import check_model_on_inputs, check_output_dir
    from ..report import write_run
    from ..report.faithfulness import format_faithfulness_summary

    check_output_dir(args.out)
    metrics = check_faithfulness_metrics(args.metrics, "--metrics")
    settings = metric_settings(args, metrics)
    given = _method_settings.check(args.method_settings, csv_list(args.methods))
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be a positive integer, got {args.batch_size}")
    model, x, y, desc = load_model_inputs(args)
    if x.dim() != 4:
        raise ValueError(f"the faithfulness check perturbs images (N, C, H, W); {args.data} "
                         f"gives inputs of shape {tuple(x.shape)}")
    model, _ = apply_normalize(args, model, None)
    target = y if (args.target_mode == "fixed" and y is not None and (y >= 0).all()) else None
    if args.target_mode == "fixed" and target is None:
        raise ValueError("--target-mode fixed needs labels 0 .. classes - 1 with the data; "
                         f"{args.data} has none: use --target-mode predicted")
    check_model_on_inputs(model, x, target)
    boxes: dict[str, Any] = {}
    methods = _method_settings.specs(csv_list(args.methods), given, x, args.normalize,
                                     lambda s: print(s, file=sys.stderr), boxes)
    result = faithfulness_test(
        model, x, target=target, methods=methods, metrics=metrics,
        settings=settings, score=args.score, random_order=not args.no_random_order,
        seed=args.seed, batch_size=args.batch_size, device=args.device,
        controls=parse_controls(args.controls), progress=not args.no_progress, run_dir=args.out)
    record_inputs(result, args, desc, given, boxes)
    record_accuracy(result, model, x, y)
    out = write_run(result, args.out, command=["saliency-sanity", *argv])
    print_outputs(out)
    print(format_faithfulness_summary(result))
    print("(the random order is the baseline: a map no better than chance scores like it)",
          file=sys.stderr)
    return 0
