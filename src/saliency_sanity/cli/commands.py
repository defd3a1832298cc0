"""The command line's commands: one function per subcommand (:func:`command`): ``demo``,
``list`` and ``report`` here, each check's from its registered ``Cli.run``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..results.spec import by_command, find, resolve, specs
from . import _method_settings
from ._args import as_flags, critique_options
from ._common import (
    apply_normalize,
    backend_settings,
    csv_list,
    load_model_arg,
    load_model_inputs,
    parse_controls,
    print_outputs,
)
from ._model_inputs import record_inputs

if TYPE_CHECKING:
    from ..critiques import CritiqueOutcome

#: Exit status when the main check succeeded but an extra (--smprt, ...) failed.
EXIT_EXTRA_FAILED = 4


def _cmd_demo(args: argparse.Namespace, argv: list[str]) -> int:
    from ..demo import demo_run
    from ..io_inputs import check_output_dir

    check_output_dir(args.out)
    kw: dict[str, Any] = {"critiques": None} if args.no_critiques else {}
    run = demo_run(args.out, n_samples=args.n_samples, seed=args.seed,
                   cache_dir=args.cache_dir, progress=not args.no_progress,
                   log=lambda s: print(s, file=sys.stderr),
                   localization=not args.no_localization, **kw)
    print_outputs(run.out)
    print(_summary(run.result))
    return _critique_status(run.outcome, run.out)


def _cmd_model_randomization(args: argparse.Namespace, argv: list[str]) -> int:
    from ..checks import model_randomization_test
    from ..io_inputs import check_model_on_inputs, check_output_dir
    from ..report import write_run

    check_output_dir(args.out)
    given = _method_settings.check(args.method_settings, csv_list(args.methods))
    scaling = backend_settings(args)
    options = critique_options(args)
    try:
        options.validate()
    except ValueError as err:  # name the command line's flags, not the API's fields
        raise ValueError(as_flags(str(err))) from None
    model, x, y, desc = load_model_inputs(args)
    boxes: dict[str, Any] = {}
    methods = _method_settings.specs(csv_list(args.methods), given, x, args.normalize, _log, boxes)
    controls = parse_controls(args.controls)
    group_by = args.group_by
    if group_by and group_by != "children":
        group_by = csv_list(group_by)
    model, group_by = apply_normalize(args, model, group_by)
    target = y if (args.target_mode == "fixed" and y is not None and (y >= 0).all()) else None
    check_model_on_inputs(model, x, target)
    result = model_randomization_test(
        model, x, target=target, methods=methods, scores=csv_list(args.scores),
        order=args.order, init=args.init, seed=args.seed, target_mode=args.target_mode,
        batch_size=args.batch_size, device=args.device, controls=controls, group_by=group_by,
        progress=not args.no_progress, run_dir=args.out, **scaling,
    )
    record_inputs(result, args, desc, given, boxes)
    from ..engine import record_accuracy

    record_accuracy(result, model, x, y)
    if options.any():
        result.settings["critiques"] = options.settings()
    out = write_run(result, args.out, command=["saliency-sanity", *argv])
    outcome = None
    if options.any():
        from ..critiques import run_critiques
        from ..report import build_report

        outcome = run_critiques(
            result, out, options, model=model, x=x, target=target, methods=methods,
            scores=csv_list(args.scores), controls=controls, group_by=group_by, device=args.device,
            progress=not args.no_progress, log=lambda s: print(s, file=sys.stderr),
            scaling=scaling)
        build_report(out, result=result)
    print_outputs(out)
    print(_summary(result))
    return _critique_status(outcome, out)


def _log(text: str) -> None:
    print(text, file=sys.stderr)


def _cmd_data_randomization(args: argparse.Namespace, argv: list[str]) -> int:
    from .. import training
    from ..checks import data_randomization_test
    from ..checks.data_randomization import random_label_init_seed
    from ..io_inputs import check_output_dir
    from ..report import write_run

    check_output_dir(args.out)
    given = _method_settings.check(args.method_settings, csv_list(args.methods))
    scaling = backend_settings(args)
    controls = parse_controls(args.controls)
    dataset, methods, boxes = _method_settings.data_randomization_specs(args, given, _log)
    result = data_randomization_test(
        dataset=dataset, architecture=args.architecture, n_train=args.subset,
        n_samples=args.n_samples, label_seed=args.label_seed,
        true_config=training.TrainConfig.true_labels(seed=args.seed, epochs=min(args.epochs, 30)),
        random_config=training.TrainConfig.random_labels(
            args.label_seed, seed=random_label_init_seed(args.seed), epochs=args.epochs),
        model_kwargs={"width": args.width}, methods=methods,
        scores=csv_list(args.scores), seed=args.seed, batch_size=args.batch_size,
        controls=controls, cache_dir=args.cache_dir, progress=not args.no_progress,
        **scaling,
    )
    _method_settings.record(result, given, boxes)
    out = write_run(result, args.out, command=["saliency-sanity", *argv])
    acc = result.settings["accuracies"]
    print(f"true-label model:   train acc {acc['true']['train_acc']:.3f}, "
          f"test acc {acc['true']['test_acc']:.3f}")
    print(f"random-label model: train acc {acc['random']['train_acc']:.3f}, "
          f"test acc {acc['random']['test_acc']:.3f}")
    print_outputs(out)
    if not result.settings["valid"]:
        print(f"INVALID comparison: {result.settings['invalid_reason']}", file=sys.stderr)
        return 3
    return 0


def _smoothing(text: str) -> object:
    if text in ("none", ""):
        return None
    if text == "default":
        return True
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"--smoothing must be 'none', 'default' or a sigma in pixels, got "
                         f"{text!r}") from None


def _cmd_localization(args: argparse.Namespace, argv: list[str]) -> int:
    from ..checks import localization_test
    from ..grids import load_grids, make_grids
    from ..io_inputs import check_output_dir, load_data
    from ..report import write_run
    from ..report.localization import summary_table

    out = check_output_dir(args.out)
    given = _method_settings.check(args.method_settings, csv_list(args.methods))
    smoothing = _smoothing(args.smoothing)
    model = load_model_arg(args)
    if args.grids:
        grids, desc = load_grids(args.grids), f"grids from {args.grids}"
    else:
        x, y, desc = load_data(args.data, n=None, seed=args.seed, size=args.size,
                               channels=args.channels, warn_if_fewer=False)
        if y is None or bool((y < 0).any()):
            raise ValueError(f"--data {args.data}: grids need labelled images (class folders "
                             "or an .npz with y)")
        grids = make_grids(model, x, y, n=args.grid, count=args.count,
                           confidence=args.confidence, seed=args.seed)
    boxes: dict[str, Any] = {}
    methods = _method_settings.specs(csv_list(args.methods), given, grids.images, None, _log, boxes)
    result = localization_test(
        model, grids, methods=methods, settings=csv_list(args.settings) or [],
        layers=csv_list(args.layers) or [], smoothing=smoothing, seed=args.seed,
        run_dir=args.out, split=args.split, batch_size=args.batch_size, device=args.device,
        controls=parse_controls(args.controls), progress=not args.no_progress)
    record_inputs(result, args, desc, given, boxes)
    run = write_run(result, out, command=["saliency-sanity", *argv])
    grids.save(run / "grids.npz")
    print_outputs(run)
    print(f"  grids:   {run / 'grids.npz'}")
    s = summary_table(result)
    for metric, g in s.groupby("metric", sort=False):
        print(f"mean {metric} (chance {result.settings['chance']:.3g}):")
        print(g.pivot_table(index=["setting", "layer"], columns="method", values="mean")
              .round(3).to_string())
    return 0


def _cmd_list(args: argparse.Namespace, argv: list[str]) -> int:
    from .. import data, methods, scores
    from ..randomization import init_schemes, orders

    print("methods:      " + ", ".join(methods.list()))
    print("scores:       " + ", ".join(scores.list()))
    print("orders:       " + ", ".join(orders))
    print("init schemes: " + ", ".join(init_schemes.list()))
    print("data sets:    " + ", ".join(data.list()))
    print("checks:")
    for spec in specs():
        how = f"saliency-sanity {spec.cli.command}" if spec.cli is not None else "API / extra"
        print(f"  {spec.name:<30} {how:<36} {spec.title}")
    return 0


def _cmd_report(args: argparse.Namespace, argv: list[str]) -> int:
    from ..report.html import build_report
    from ..results import CheckResult

    run = Path(args.run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"run directory {run} does not exist; pass a folder written by "
                                "saliency-sanity (it holds results.csv and run.json)")
    result = CheckResult.load(run)
    path = build_report(run, out=args.out, result=result, margin=args.margin)
    print(_summary(result, margin=args.margin))
    print(f"report: {path}")
    return 0


def _critique_status(outcome: CritiqueOutcome | None, out: Path) -> int:
    """0, or :data:`EXIT_EXTRA_FAILED` (with a message on stderr) when an extra failed."""
    if outcome is None or not outcome.failed:
        return 0
    names = ", ".join(outcome.failed)
    print(f"saliency-sanity: error: {len(outcome.failed)} extra check(s) failed ({names}); the "
          f"main results and the other extras in {out} are complete:", file=sys.stderr)
    for name, msg in outcome.failed.items():
        print(f"  {name}: {msg}", file=sys.stderr)
    return EXIT_EXTRA_FAILED


#: The subcommands that are not checks.
_OWN_COMMANDS = {"demo": _cmd_demo, "list": _cmd_list, "report": _cmd_report}
#: Of those, the ones that keep finished work in ``--out`` when interrupted.
OWN_KEEPS_RUN_DIR = ("demo",)


def command(name: str) -> Any:
    """The function of subcommand ``name``: ``run(args, argv) -> exit status`` (a check's
    registered ``Cli.run``).

    Example:
        >>> command("list").__name__, command("localization").__name__
        ('_cmd_list', '_cmd_localization')
    """
    if name in _OWN_COMMANDS:
        return _OWN_COMMANDS[name]
    spec = by_command(name)
    if spec is None or spec.cli is None:
        raise KeyError(f"unknown command {name!r}")
    return resolve(spec.cli.run)


def keeps_run_dir(name: str) -> bool:
    """True when subcommand ``name`` keeps its finished work in ``--out`` after Ctrl-C and the
    same command continues it (the demo's, and each check's ``Cli.keeps_run_dir``).

    Example:
        >>> keeps_run_dir("demo"), keeps_run_dir("model-randomization"), keeps_run_dir("list")
        (True, True, False)
    """
    if name in _OWN_COMMANDS:
        return name in OWN_KEEPS_RUN_DIR
    spec = by_command(name)
    return spec is not None and spec.cli is not None and spec.cli.keeps_run_dir


def _summary(result: Any, margin: float = 0.1) -> str:
    """What the terminal shows after a run: the ``summary`` its check declares (model and data
    randomization: the one verdict per method, for model randomization which randomized blocks
    each method ignores); the result's summary table for a check that is not registered."""
    spec = find(result.check)
    if spec is None:
        return result.summary().round(3).to_string(index=False)
    return "" if spec.summary is None else spec.part("summary")(result, margin=margin)
