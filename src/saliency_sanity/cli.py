"""The ``saliency-sanity`` command line."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .critiques import CritiqueOptions, CritiqueOutcome

#: Exit status when the main check succeeded but an extra (--smprt, ...) failed.
EXIT_EXTRA_FAILED = 4
#: Exit status after Ctrl-C (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130


def _csv(text: str | None) -> list[str] | None:
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    return items or None


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="seed for everything random (default 0)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _add_critiques(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "critiques (Binder et al. 2023, Hedstroem et al. 2023)",
        "extra checks computed with the same model, inputs, methods, seed and device and saved "
        "in the same run directory; a failing extra leaves the main results intact (exit 4)")
    g.add_argument("--smprt", action="store_true",
                   help="smooth MPRT: maps averaged over noisy inputs (bottom-up), in smprt/")
    g.add_argument("--smprt-samples", type=int, default=50, metavar="N",
                   help="noisy copies per sMPRT map (50)")
    g.add_argument("--smprt-noise", type=float, default=0.1, metavar="F",
                   help="sMPRT noise, a fraction of each input's max - min (0.1)")
    g.add_argument("--smprt-normalize", choices=["second_moment", "none"],
                   default="second_moment",
                   help="post-processing of both sMPRT maps before scoring (second_moment)")
    g.add_argument("--emprt", action="store_true",
                   help="efficient MPRT: entropy increase trained -> fully random, in emprt/")
    g.add_argument("--emprt-bins", type=int, default=100, metavar="N",
                   help="histogram bins of eMPRT (100)")
    g.add_argument("--random-logit", action="store_true",
                   help="map of the explained class vs a random other class, in random_logit/")
    g.add_argument("--activation-scales", action="store_true",
                   help="per-channel activation scales trained vs randomized, in "
                        "activation_scales.csv")
    g.add_argument("--critiques", action="store_true",
                   help="all four: --smprt --emprt --random-logit --activation-scales")
    g.add_argument("--data-randomization-run", default=None, metavar="DIR",
                   help="a data-randomization run directory whose results join the method "
                        "ranking (ranking.csv)")


def critique_options(args: argparse.Namespace) -> CritiqueOptions:
    """The :class:`~saliency_sanity.critiques.CritiqueOptions` asked for on the command line.

    Example:
        >>> a = build_parser().parse_args(["model-randomization", "--model", "m", "--data", "d",
        ...                                "--out", "o", "--critiques", "--smprt-samples", "5"])
        >>> o = critique_options(a)
        >>> o.smprt, o.emprt, o.random_logit, o.activation_scales, o.smprt_samples
        (True, True, True, True, 5)
    """
    from .critiques import CritiqueOptions

    every = bool(getattr(args, "critiques", False))
    return CritiqueOptions(
        smprt=every or args.smprt, emprt=every or args.emprt,
        random_logit=every or args.random_logit,
        activation_scales=every or args.activation_scales,
        smprt_samples=args.smprt_samples, smprt_noise=args.smprt_noise,
        smprt_normalize=args.smprt_normalize, emprt_bins=args.emprt_bins,
        data_randomization_run=args.data_randomization_run,
    )


def _as_flags(message: str) -> str:
    """A :class:`CritiqueOptions` error with its field names written as the CLI's flags.

    Example:
        >>> _as_flags("smprt_samples must be a positive integer, got 0")
        '--smprt-samples must be a positive integer, got 0'
    """
    import dataclasses
    import re

    from .critiques import CritiqueOptions

    names = sorted((f.name for f in dataclasses.fields(CritiqueOptions) if "_" in f.name),
                   key=len, reverse=True)
    pattern = re.compile(r"\b(" + "|".join(names) + r")\b")
    return pattern.sub(lambda m: "--" + m.group(1).replace("_", "-"), message)


def build_parser() -> argparse.ArgumentParser:
    from . import methods, scores
    from .randomization import init_schemes, orders

    parser = argparse.ArgumentParser(
        prog="saliency-sanity",
        description="Sanity checks for saliency maps (Adebayo et al. 2018 and follow-ups).",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"saliency-sanity {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="run the built-in demo (MNIST CNN, cascading randomization)")
    d.add_argument("--out", default="saliency-sanity-demo", help="run directory to write")
    d.add_argument("--n-samples", type=int, default=16, help="test images to explain (16)")
    d.add_argument("--cache-dir", default=None, help="where the trained model is cached")
    d.add_argument("--no-critiques", action="store_true",
                   help="skip the critiques (sMPRT, eMPRT, random logit, activation scales, "
                        "ranking)")
    _add_common(d)

    m = sub.add_parser("model-randomization", help="run the model parameter randomization test")
    m.add_argument("--model", required=True,
                   help="'package.module:factory', 'file.py:factory' or a TorchScript file")
    m.add_argument("--model-kwargs", default=None, help="JSON keyword arguments for the factory")
    m.add_argument("--weights", default=None, help="state_dict file (loaded weights_only)")
    m.add_argument("--unsafe-load", action="store_true",
                   help="allow pickled checkpoints (runs code from the file: trusted files only)")
    m.add_argument("--data", required=True,
                   help="a built-in data set name, a folder of images (one sub-folder per class), "
                        "or an .npz with arrays x and y")
    m.add_argument("--n-samples", type=int, default=None,
                   help="inputs to explain (16, or all when the data hold fewer; a larger "
                        "number than the data hold warns and uses all)")
    m.add_argument("--size", type=int, default=None, help="resize folder images to SIZE x SIZE")
    m.add_argument("--channels", type=int, choices=(1, 3), default=None,
                   help="convert folder images to 1 or 3 channels")
    m.add_argument("--methods", default=None,
                   help=f"comma-separated, from: {', '.join(methods.list())} (default: all that "
                        "apply)")
    m.add_argument("--scores", default=None,
                   help=f"comma-separated, from: {', '.join(scores.list())} (default: all)")
    m.add_argument("--controls", default="edge_sobel,random_gaussian",
                   help="comma-separated controls, or 'none'")
    m.add_argument("--order", choices=list(orders), default="cascading")
    m.add_argument("--init", choices=init_schemes.list(), default="paper")
    m.add_argument("--target-mode", choices=["predicted", "fixed"], default="predicted",
                   help="explain each stage's predicted class (paper) or the labels / the trained "
                        "model's prediction")
    m.add_argument("--group-by", default=None,
                   help="'children' or comma-separated module names/prefixes to group into blocks")
    m.add_argument("--batch-size", type=int, default=16)
    m.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: the model's)")
    m.add_argument("--normalize", default=None, metavar="MEAN,STD|MEANS/STDS",
                   help="for models trained on normalized inputs: explain "
                        "model((x - mean) / std), x in the data's own units; e.g. "
                        "0.1307,0.3081 (one value for every channel) or "
                        "0.485,0.456,0.406/0.229,0.224,0.225 (per channel)")
    m.add_argument("--out", required=True, help="run directory to write")
    _add_critiques(m)
    _add_common(m)

    r = sub.add_parser("data-randomization",
                       help="train on true and on permuted labels, compare the maps")
    r.add_argument("--architecture", default="mnist_cnn", help="a built-in model name (mnist_cnn)")
    r.add_argument("--width", type=float, default=0.5,
                   help="width factor of the architecture (0.5: half the paper's channels)")
    r.add_argument("--data", default="mnist", help="a built-in data set name (mnist)")
    r.add_argument("--subset", type=int, default=2000,
                   help="training images (memorizing random labels needs a small set; 2000)")
    r.add_argument("--n-samples", type=int, default=16, help="test images to explain (16)")
    r.add_argument("--epochs", type=int, default=100, help="epoch budget per model (100)")
    r.add_argument("--methods", default=None, help="comma-separated method names (default: all)")
    r.add_argument("--scores", default=None, help="comma-separated score names (default: all)")
    r.add_argument("--controls", default="edge_sobel,random_gaussian",
                   help="comma-separated controls, or 'none'")
    r.add_argument("--label-seed", type=int, default=0, help="seed of the label permutation")
    r.add_argument("--batch-size", type=int, default=16)
    r.add_argument("--cache-dir", default=None, help="where trained models are cached")
    r.add_argument("--out", required=True, help="run directory to write")
    _add_common(r)

    sub.add_parser("list", help="list the methods, scores, init schemes and data sets")

    rp = sub.add_parser("report", help="(re)build report.html of a run directory from its saved "
                                       "results, without recomputing anything")
    rp.add_argument("run_dir", help="a run directory written by saliency-sanity")
    rp.add_argument("--out", default=None, help="where to write the page (default: "
                                                "RUN_DIR/report.html)")
    rp.add_argument("--margin", type=float, default=0.1,
                    help="verdict margin as a fraction of (perfect - null) similarity (0.1)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``saliency-sanity`` console script (and ``python -m saliency_sanity``).
    """
    args = build_parser().parse_args(argv)
    if os.environ.get("SALIENCY_SANITY_DEFAULT_MALLOC") != "1":
        from .performance import tune_allocator

        tune_allocator()  # this process is ours: keep freed memory between stages
    from .io_inputs import InputError

    try:
        with warnings_through_tqdm():
            return _COMMANDS[args.command](args, list(argv) if argv is not None else sys.argv[1:])
    except (InputError, KeyError, ValueError, TypeError, OSError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else _os_message(err)
        print(f"saliency-sanity: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(interrupted_message(args), file=sys.stderr)
        return EXIT_INTERRUPTED


def interrupted_message(args: argparse.Namespace) -> str:
    """The one line printed after Ctrl-C.

    Example:
        >>> interrupted_message(argparse.Namespace(command="list"))
        'saliency-sanity: interrupted'
    """
    out = getattr(args, "out", None)
    if out is None or args.command not in ("demo", "model-randomization", "data-randomization"):
        return "saliency-sanity: interrupted"
    return (f"saliency-sanity: interrupted; finished work is kept in {out}: run the same command "
            "again to continue where it stopped")


@contextlib.contextmanager
def warnings_through_tqdm() -> Iterator[None]:
    """While active, warnings are printed with ``tqdm.write`` (one line each, on stderr), which
    clears and redraws any active progress bar, so a warning never breaks a bar.

    Example:
        >>> import warnings
        >>> with warnings_through_tqdm():
        ...     warnings.warn("careful")  # doctest: +SKIP
    """
    from tqdm import tqdm

    previous = warnings.showwarning

    def show(message: Any, category: type[Warning], filename: str, lineno: int,
             file: Any = None, line: str | None = None) -> None:
        text = " ".join(str(message).split())
        tqdm.write(f"saliency-sanity: warning: {text} ({category.__name__})", file=sys.stderr)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous


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
    from .io_inputs import Normalized, parse_normalize

    means, stds = parse_normalize(args.normalize)
    wrapped = Normalized(model, means, stds).eval()
    if group_by == "children":
        group_by = [f"model.{name}" for name, _ in model.named_children()]
    elif group_by:
        group_by = [f"model.{g}" for g in group_by]
    return wrapped, group_by


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
    from .demo import demo_run
    from .io_inputs import check_output_dir
    from .verdicts import format_summary

    check_output_dir(args.out)
    kw = {"critiques": None} if args.no_critiques else {}
    run = demo_run(args.out, n_samples=args.n_samples, seed=args.seed,
                   cache_dir=args.cache_dir, progress=not args.no_progress,
                   log=lambda s: print(s, file=sys.stderr), **kw)
    _print_outputs(run.out)
    print(format_summary(run.result))
    return _critique_status(run.outcome, run.out)


def _cmd_model_randomization(args: argparse.Namespace, argv: list[str]) -> int:
    from .checks import model_randomization_test
    from .io_inputs import (
        check_model_on_inputs,
        check_output_dir,
        load_data,
        load_model,
        parse_kwargs,
    )
    from .report import write_run
    from .verdicts import format_summary

    check_output_dir(args.out)
    options = critique_options(args)
    try:
        options.validate()
    except ValueError as err:  # name the command line's flags, not the API's fields
        raise ValueError(_as_flags(str(err))) from None
    _check_device(args.device)
    model = load_model(args.model, weights=args.weights, unsafe_load=args.unsafe_load,
                       kwargs=parse_kwargs(args.model_kwargs))
    x, y, desc = load_data(args.data, n=16 if args.n_samples is None else args.n_samples,
                           seed=args.seed, size=args.size, channels=args.channels,
                           warn_if_fewer=args.n_samples is not None)
    controls = [] if args.controls.strip().lower() == "none" else _csv(args.controls) or []
    group_by = args.group_by
    if group_by and group_by != "children":
        group_by = _csv(group_by)
    model, group_by = apply_normalize(args, model, group_by)
    target = y if (args.target_mode == "fixed" and y is not None and (y >= 0).all()) else None
    check_model_on_inputs(model, x, target)
    result = model_randomization_test(
        model, x, target=target, methods=_csv(args.methods), scores=_csv(args.scores),
        order=args.order, init=args.init, seed=args.seed, target_mode=args.target_mode,
        batch_size=args.batch_size, device=args.device, controls=controls, group_by=group_by,
        progress=not args.no_progress, run_dir=args.out,
    )
    result.settings["model"] = {"spec": args.model, "weights": args.weights}
    if args.normalize:
        result.settings["model"]["normalize"] = args.normalize
    result.settings["data"] = desc
    from .demo import record_accuracy

    record_accuracy(result, model, x, y)
    if options.any():
        result.settings["critiques"] = options.settings()
    out = write_run(result, args.out, command=["saliency-sanity", *argv])
    outcome = None
    if options.any():
        from .critiques import run_critiques
        from .report import build_report

        outcome = run_critiques(
            result, out, options, model=model, x=x, target=target, methods=_csv(args.methods),
            scores=_csv(args.scores), controls=controls, group_by=group_by, device=args.device,
            progress=not args.no_progress, log=lambda s: print(s, file=sys.stderr))
        build_report(out, result=result)
    _print_outputs(out)
    print(format_summary(result))
    return _critique_status(outcome, out)


def _check_device(device: str | None) -> None:
    from .io_inputs import check_device

    check_device(device)


def _cmd_data_randomization(args: argparse.Namespace, argv: list[str]) -> int:
    from . import training
    from .checks import data_randomization_test
    from .checks.data_randomization import random_label_init_seed
    from .io_inputs import check_output_dir
    from .report import write_run

    check_output_dir(args.out)
    controls = [] if args.controls.strip().lower() == "none" else _csv(args.controls) or []
    result = data_randomization_test(
        dataset=args.data, architecture=args.architecture, n_train=args.subset,
        n_samples=args.n_samples, label_seed=args.label_seed,
        true_config=training.TrainConfig.true_labels(seed=args.seed, epochs=min(args.epochs, 30)),
        random_config=training.TrainConfig.random_labels(
            args.label_seed, seed=random_label_init_seed(args.seed), epochs=args.epochs),
        model_kwargs={"width": args.width}, methods=_csv(args.methods),
        scores=_csv(args.scores), seed=args.seed, batch_size=args.batch_size,
        controls=controls, cache_dir=args.cache_dir, progress=not args.no_progress,
    )
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


def _cmd_list(args: argparse.Namespace, argv: list[str]) -> int:
    from . import data, methods, scores
    from .randomization import init_schemes, orders

    print("methods:      " + ", ".join(methods.list()))
    print("scores:       " + ", ".join(scores.list()))
    print("orders:       " + ", ".join(orders))
    print("init schemes: " + ", ".join(init_schemes.list()))
    print("data sets:    " + ", ".join(data.list()))
    return 0


def _cmd_report(args: argparse.Namespace, argv: list[str]) -> int:
    from .report.html import build_report
    from .results import CheckResult
    from .verdicts import format_summary

    run = Path(args.run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"run directory {run} does not exist; pass a folder written by "
                                "saliency-sanity (it holds results.csv and run.json)")
    result = CheckResult.load(run)
    path = build_report(run, out=args.out, result=result, margin=args.margin)
    print(format_summary(result, margin=args.margin))
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
    from .results.files import EXTRA_DIRS, RANKING_CSV, RANKING_TAU_CSV, SCALES_CSV

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


_COMMANDS = {
    "demo": _cmd_demo,
    "model-randomization": _cmd_model_randomization,
    "data-randomization": _cmd_data_randomization,
    "list": _cmd_list,
    "report": _cmd_report,
}


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
