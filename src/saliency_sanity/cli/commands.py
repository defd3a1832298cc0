"""The command line's commands: one function per subcommand (``_COMMANDS``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _method_settings
from ._args import _as_flags, _controls, _csv, backend_settings, critique_options
from .shah import COMMANDS as _SHAH_COMMANDS

if TYPE_CHECKING:
    from ..critiques import CritiqueOutcome

#: Exit status when the main check succeeded but an extra (--smprt, ...) failed.
EXIT_EXTRA_FAILED = 4


def apply_normalize(args: argparse.Namespace, model: Any, group_by: Any) -> tuple[Any, Any]:
    """``--normalize``: the model wrapped in :class:`~saliency_sanity.io_inputs.Normalized`, and
    ``--group-by`` names moved under the wrapper's ``model.`` prefix (``children`` becomes the
    wrapped model's children). Unchanged without ``--normalize``.

    Example:
        >>> from torch import nn
        >>> a = argparse.Namespace(normalize="0.5,0.25")
        >>> net, g = apply_normalize(a, nn.Sequential(nn.Linear(2, 2)), "children")
        >>> type(net).__name__, g
        ('Normalized', ['model.0'])
    """
    if not getattr(args, "normalize", None):
        return model, group_by
    from ..io_inputs import Normalized, parse_normalize

    means, stds = parse_normalize(args.normalize)
    wrapped = Normalized(model, means, stds).eval()
    if group_by == "children":
        group_by = [f"model.{name}" for name, _ in model.named_children()]
    elif group_by:
        group_by = [f"model.{g}" for g in group_by]
    return wrapped, group_by


def load_model_arg(args: argparse.Namespace) -> Any:
    """``--device`` checked, then the model of :func:`~saliency_sanity.cli._args.add_model`'s
    options (``--model``, ``--model-kwargs``, ``--weights``, ``--unsafe-load``).

    Example:
        >>> a = argparse.Namespace(device="cpu", model="torch.nn:Identity", model_kwargs=None,
        ...                        weights=None, unsafe_load=False)
        >>> type(load_model_arg(a)).__name__
        'Identity'
    """
    from ..io_inputs import check_device, load_model, parse_kwargs

    check_device(args.device)
    return load_model(args.model, weights=args.weights, unsafe_load=args.unsafe_load,
                      kwargs=parse_kwargs(args.model_kwargs))


def load_model_inputs(args: argparse.Namespace) -> tuple[Any, Any, Any, str]:
    """:func:`load_model_arg`, then the inputs of
    :func:`~saliency_sanity.cli._args.add_model_inputs`'s options: ``(model, x, y,
    description)``, 16 inputs unless ``--n-samples`` says otherwise (a warning when the data
    hold fewer than asked for).

    Example:
        >>> a = argparse.Namespace(device="cpu", model="torch.nn:Identity", model_kwargs=None,
        ...                        weights=None, unsafe_load=False, data="mnist", n_samples=2,
        ...                        seed=0, size=None, channels=None)
        >>> model, x, y, desc = load_model_inputs(a)
        >>> tuple(x.shape), desc
        ((2, 1, 28, 28), 'mnist (test split, seed 0)')
    """
    from ..io_inputs import load_data

    model = load_model_arg(args)
    x, y, desc = load_data(args.data, n=16 if args.n_samples is None else args.n_samples,
                           seed=args.seed, size=args.size, channels=args.channels,
                           warn_if_fewer=args.n_samples is not None)
    return model, x, y, desc


def record_inputs(result: Any, args: argparse.Namespace, desc: str,
                  given: Mapping[str, Any], boxes: Mapping[str, Any]) -> None:
    """What ``run.json`` records of the inputs: the model (``--model``, ``--weights``, and
    ``--normalize`` when given), the data's description ``desc`` and the method settings."""
    result.settings["model"] = {"spec": args.model, "weights": args.weights}
    if getattr(args, "normalize", None):
        result.settings["model"]["normalize"] = args.normalize
    result.settings["data"] = desc
    _method_settings.record(result, given, boxes)


def _os_message(err: BaseException) -> object:
    """A clear message for file-system errors (a full disk, no permission); others unchanged."""
    import errno

    if isinstance(err, OSError) and not isinstance(err, FileNotFoundError):
        where = f" ({err.filename})" if getattr(err, "filename", None) else ""
        if err.errno == errno.ENOSPC:
            return (f"no space left on the device{where}: no incomplete file was kept (batches "
                    "already finished stay in the run directory, complete); free some space "
                    "and rerun the same command to continue, or choose another --out")
        if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return f"{err.strerror or err}{where}: choose a writable --out"
    return err


def _cmd_demo(args: argparse.Namespace, argv: list[str]) -> int:
    from ..demo import demo_run
    from ..io_inputs import check_output_dir

    check_output_dir(args.out)
    kw: dict[str, Any] = {"critiques": None} if args.no_critiques else {}
    run = demo_run(args.out, n_samples=args.n_samples, seed=args.seed,
                   cache_dir=args.cache_dir, progress=not args.no_progress,
                   log=lambda s: print(s, file=sys.stderr),
                   localization=not args.no_localization, **kw)
    _print_outputs(run.out)
    print(_summary(run.result))
    return _critique_status(run.outcome, run.out)


def _cmd_model_randomization(args: argparse.Namespace, argv: list[str]) -> int:
    from ..checks import model_randomization_test
    from ..io_inputs import check_model_on_inputs, check_output_dir
    from ..report import write_run

    check_output_dir(args.out)
    given = _method_settings.check(args.method_settings, _csv(args.methods))
    scaling = backend_settings(args)
    options = critique_options(args)
    try:
        options.validate()
    except ValueError as err:  # name the command line's flags, not the API's fields
        raise ValueError(_as_flags(str(err))) from None
    model, x, y, desc = load_model_inputs(args)
    boxes: dict[str, Any] = {}
    methods = _method_settings.specs(_csv(args.methods), given, x, args.normalize, _log, boxes)
    controls = _controls(args.controls)
    group_by = args.group_by
    if group_by and group_by != "children":
        group_by = _csv(group_by)
    model, group_by = apply_normalize(args, model, group_by)
    target = y if (args.target_mode == "fixed" and y is not None and (y >= 0).all()) else None
    check_model_on_inputs(model, x, target)
    result = model_randomization_test(
        model, x, target=target, methods=methods, scores=_csv(args.scores),
        order=args.order, init=args.init, seed=args.seed, target_mode=args.target_mode,
        batch_size=args.batch_size, device=args.device, controls=controls, group_by=group_by,
        progress=not args.no_progress, run_dir=args.out, **scaling,
    )
    record_inputs(result, args, desc, given, boxes)
    from ..demo import record_accuracy

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
            scores=_csv(args.scores), controls=controls, group_by=group_by, device=args.device,
            progress=not args.no_progress, log=lambda s: print(s, file=sys.stderr),
            scaling=scaling)
        build_report(out, result=result)
    _print_outputs(out)
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
    given = _method_settings.check(args.method_settings, _csv(args.methods))
    scaling = backend_settings(args)
    controls = _controls(args.controls)
    dataset, methods, boxes = _method_settings.data_randomization_specs(args, given, _log)
    result = data_randomization_test(
        dataset=dataset, architecture=args.architecture, n_train=args.subset,
        n_samples=args.n_samples, label_seed=args.label_seed,
        true_config=training.TrainConfig.true_labels(seed=args.seed, epochs=min(args.epochs, 30)),
        random_config=training.TrainConfig.random_labels(
            args.label_seed, seed=random_label_init_seed(args.seed), epochs=args.epochs),
        model_kwargs={"width": args.width}, methods=methods,
        scores=_csv(args.scores), seed=args.seed, batch_size=args.batch_size,
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
    _print_outputs(out)
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
    given = _method_settings.check(args.method_settings, _csv(args.methods))
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
    methods = _method_settings.specs(_csv(args.methods), given, grids.images, None, _log, boxes)
    result = localization_test(
        model, grids, methods=methods, settings=_csv(args.settings) or [],
        layers=_csv(args.layers) or [], smoothing=smoothing, seed=args.seed,
        run_dir=args.out, split=args.split, batch_size=args.batch_size, device=args.device,
        controls=_controls(args.controls), progress=not args.no_progress)
    record_inputs(result, args, desc, given, boxes)
    run = write_run(result, out, command=["saliency-sanity", *argv])
    grids.save(run / "grids.npz")
    _print_outputs(run)
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


def _print_outputs(out: Path) -> None:
    from ..results.files import EXTRA_DIRS, RANKING_CSV, RANKING_TAU_CSV, SCALES_CSV

    print(f"run directory: {out}")
    print(f"  report:  {out / 'report.html'}")
    print(f"  table:   {out / 'results.csv'}")
    print(f"  run:     {out / 'run.json'}")
    for sub in EXTRA_DIRS.values():
        if (out / sub / "results.csv").is_file():
            print(f"  extra:   {out / sub / 'results.csv'}")
    for f in (SCALES_CSV, RANKING_CSV, RANKING_TAU_CSV):
        if (out / f).is_file():
            print(f"  extra:   {out / f}")
    figs = sorted((out / "figures").glob("*.png"))
    for f in figs:
        print(f"  figure:  {f}")


def _cmd_faithfulness(args: argparse.Namespace, argv: list[str]) -> int:
    from ._faithfulness import run

    return run(args, argv)


_COMMANDS = {
    "demo": _cmd_demo,
    "faithfulness": _cmd_faithfulness,
    "model-randomization": _cmd_model_randomization,
    "data-randomization": _cmd_data_randomization,
    "localization": _cmd_localization,
    "list": _cmd_list,
    "report": _cmd_report,
    **_SHAH_COMMANDS,
}


def _summary(result: Any, margin: float = 0.1) -> str:
    """What the terminal shows after a run: the one verdict per method (for model
    randomization: which randomized blocks each method ignores), or the check's summary."""
    from ..verdicts import format_verdict, has_verdict

    if result.check == "faithfulness":
        from ..report.faithfulness import format_faithfulness_summary

        return format_faithfulness_summary(result)
    if result.check == "localization":
        from ..report.localization import summary_table

        return summary_table(result).round(3).to_string(index=False)
    if not has_verdict(result.check):
        return result.summary().round(3).to_string(index=False)
    return format_verdict(result, margin=margin)
