"""The ``diffroar`` and ``blockmnist`` commands (Shah, Jain, Netrapalli 2021).

Exit status 3 when a run is invalid (a model never reached its target training accuracy), as
for ``data-randomization``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from typing import Any

from ._common import add_backend, backend_settings

EXIT_INVALID = 3


def _add_attack(p: argparse.ArgumentParser, norm: str, eps: float, steps: int) -> None:
    g = p.add_argument_group("robust model (PGD adversarial training)")
    g.add_argument("--attack", choices=["linf", "l2"], default=norm,
                   help=f"PGD norm of the robust model ({norm})")
    g.add_argument("--eps", type=float, default=eps, help=f"PGD radius ({eps})")
    g.add_argument("--pgd-steps", type=int, default=steps, help=f"PGD steps ({steps})")
    g.add_argument("--pgd-step-size", type=float, default=None,
                   help="PGD step size (default 2.5 * eps / steps)")
    g.add_argument("--random-start", action="store_true", help="PGD random start (off)")


def _add_model(p: argparse.ArgumentParser, n_train: int, n_test: int, epochs: int,
               width: float) -> None:
    p.add_argument("--n-train", type=int, default=n_train, help=f"training images ({n_train})")
    p.add_argument("--n-test", type=int, default=n_test, help=f"test images ({n_test})")
    p.add_argument("--epochs", type=int, default=epochs,
                   help=f"epochs of every training ({epochs})")
    p.add_argument("--width", type=float, default=width,
                   help=f"width factor of the MNIST CNN ({width})")
    p.add_argument("--target-acc", type=float, default=None,
                   help="target training accuracy: stop there, and mark the run invalid (exit 3) "
                        "when a model never reaches it (default: none, train every epoch)")
    p.add_argument("--cache-dir", default=None,
                   help="where trained models are cached (default: inside the run directory "
                        "for diffroar, the user cache for blockmnist)")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--seed", type=int, default=0, help="seed for everything random (default 0)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def add_diffroar(sub: Any) -> None:
    """Add the ``diffroar`` subcommand to the CLI's subparsers."""
    d = sub.add_parser("diffroar", help="DiffROAR / ROAR / KAR with retraining: standard vs "
                                        "robust model, random-map control (Shah et al. 2021)")
    d.add_argument("--data", default="mnist", choices=["mnist", "fashion_mnist"],
                   help="built-in data set (mnist)")
    d.add_argument("--method", default="gradient", help="attribution method ranking the "
                                                        "coordinates (gradient)")
    d.add_argument("--ks", default="1,0.9,0.7,0.5,0.3,0.2,0.1,0.05",
                   help="fractions kept, comma-separated (Shah et al.'s eight)")
    d.add_argument("--repeats", type=int, default=2, help="retrainings per k and side (2)")
    d.add_argument("--control-repeats", type=int, default=5,
                   help="retrainings per k and side of the random-map control (5): its "
                        "|DiffROAR| is compared with the repeat-to-repeat spread, which two "
                        "repeats estimate poorly")
    d.add_argument("--original-epochs", type=int, default=None,
                   help="epochs of the standard and the robust original models that rank the "
                        "coordinates (default: --epochs, the retrainings' recipe)")
    d.add_argument("--per", choices=["coordinate", "pixel"], default="coordinate",
                   help="rank coordinates (Shah et al.) or whole pixels")
    d.add_argument("--fill", choices=["scalar", "channel"], default="scalar",
                   help="removed coordinates get the training mean: one scalar or per channel")
    d.add_argument("--no-robust", action="store_true", help="skip the robust model")
    d.add_argument("--no-random-control", action="store_true", help="skip the random-map control")
    _add_model(d, n_train=1000, n_test=500, epochs=16, width=0.25)
    _add_attack(d, "linf", eps=0.2, steps=5)
    add_backend(d, dtype=False, unit="retraining")


def add_blockmnist(sub: Any) -> None:
    """Add the ``blockmnist`` subcommand to the CLI's subparsers."""
    b = sub.add_parser("blockmnist", help="BlockMNIST: signal-block share of the gradient of a "
                                          "standard and a robust model (Shah et al. 2021)")
    b.add_argument("--base", default="mnist", help="mnist or fashion (mnist)")
    b.add_argument("--classes", type=int, default=10, help="first k classes; 2 = binary (10)")
    b.add_argument("--p-top", type=float, default=0.5,
                   help="probability that the signal block is on top (0.5)")
    b.add_argument("--n-maps", type=int, default=200, help="test images scored (200)")
    b.add_argument("--method", default="gradient", help="attribution method (gradient)")
    b.add_argument("--top-k", type=float, default=0.1,
                   help="fraction of pixels counted by the top-k share (0.1)")
    _add_model(b, n_train=2000, n_test=500, epochs=8, width=0.25)
    _add_attack(b, "l2", eps=1.0, steps=5)
    add_backend(b, dtype=False, unit="training (the two models in parallel)")


def _attack(args: argparse.Namespace) -> Any:
    from ..training import PGD

    return PGD(args.attack, eps=args.eps, steps=args.pgd_steps, step_size=args.pgd_step_size,
               random_start=args.random_start)


def _config(args: argparse.Namespace) -> Any:
    from ..training import TrainConfig

    return TrainConfig(epochs=args.epochs, target_train_acc=args.target_acc, seed=args.seed)


def _cmd_diffroar(args: argparse.Namespace, argv: list[str]) -> int:
    from .. import data
    from ..checks.roar import diffroar
    from ..io_inputs import check_output_dir
    from ..report.shah import write_diffroar_run

    scaling = backend_settings(args)
    check_output_dir(args.out)
    try:
        ks = [float(k) for k in args.ks.split(",") if k.strip()]
    except ValueError:
        raise ValueError(f"--ks must be comma-separated numbers in (0, 1], got {args.ks!r}"
                         ) from None
    attack = None if args.no_robust else _attack(args)
    ds = data.load(args.data, n_train=args.n_train, n_test=args.n_test, seed=args.seed)
    if args.original_epochs is None:
        args.original_epochs = args.epochs
    if args.control_repeats < 1 or args.original_epochs < 1:
        raise ValueError("--control-repeats and --original-epochs must be >= 1")
    original_cfg = dataclasses.replace(_config(args), epochs=args.original_epochs)
    common = {"ks": ks, "trainer": _config(args), "seed": args.seed,
              "model_kwargs": {"width": args.width}, "per": args.per, "fill": args.fill,
              "progress": not args.no_progress, "backend": scaling["backend"],
              "ray_address": scaling["ray_address"]}
    runs: dict[str, Any] = {}
    t0 = time.perf_counter()
    plan = [("standard", args.method, None, args.repeats)]
    if attack is not None:
        plan.append(("robust", args.method, attack, args.repeats))
    if not args.no_random_control:
        plan.append(("random", "random", None, args.control_repeats))
    from pathlib import Path

    models = args.cache_dir or Path(args.out) / "models"  # shared: k = 1 runs are trained once
    for label, method, adv, repeats in plan:
        print(f"diffroar: {label} ({method}, {repeats} repeats)", file=sys.stderr)
        runs[label] = diffroar("mnist_cnn", ds, None, method=method,
                               run_dir=Path(args.out) / label,
                               adversarial=adv, cache_dir=models, repeats=repeats,
                               original_trainer=None if method == "random" else original_cfg,
                               **common)
    seconds = time.perf_counter() - t0
    out = write_diffroar_run(runs, args.out, command=["saliency-sanity", *argv],
                             extra={"wall_seconds": seconds, "data": args.data})
    for label, r in runs.items():
        s = r.summary.set_index("k")
        print(f"{label:>8}: DiffROAR " + "  ".join(f"k={k:g}: {v:+.3f}"
                                                   for k, v in s["diffroar"].items()))
    print(f"run directory: {out}\n  report:  {out / 'report.html'}\n  table:   "
          f"{out / 'results.csv'}\n  curves:  {out / 'diffroar.csv'}")
    bad = [label for label, r in runs.items() if not r.valid]
    if bad:
        for label in bad:
            print(f"INVALID {label} run: {runs[label].settings['invalid_reason']}",
                  file=sys.stderr)
        return EXIT_INVALID
    return 0


def _cmd_blockmnist(args: argparse.Namespace, argv: list[str]) -> int:
    from ..checks.blockmnist import blockmnist_experiment
    from ..io_inputs import check_output_dir
    from ..report.shah import write_blockmnist_run

    scaling = backend_settings(args)
    check_output_dir(args.out)
    t0 = time.perf_counter()
    outcome = blockmnist_experiment(
        base=args.base, n_train=args.n_train, n_test=args.n_test, n_maps=args.n_maps,
        classes=args.classes, p_top=args.p_top, width=args.width, epochs=args.epochs,
        attack=_attack(args), method=args.method, top_k=args.top_k, seed=args.seed,
        cache_dir=args.cache_dir, progress=not args.no_progress,
        target_train_acc=args.target_acc, backend=scaling["backend"],
        ray_address=scaling["ray_address"])
    outcome["settings"]["wall_seconds"] = time.perf_counter() - t0
    out = write_blockmnist_run(outcome, args.out, command=["saliency-sanity", *argv])
    for _, r in outcome["summary"].iterrows():
        print(f"{r['model']:>8}: signal-block share of |gradient| mass {r['mass_share_mean']:.3f}"
              f" (top-k {r['topk_share_mean']:.3f}); test acc {r['test_acc']:.3f}, PGD test acc "
              f"{r['robust_test_acc']:.3f}")
    print(f"run directory: {out}\n  report:  {out / 'report.html'}\n  table:   "
          f"{out / 'results.csv'}")
    if not outcome["settings"]["valid"]:
        print(f"INVALID run: {outcome['settings']['invalid_reason']}", file=sys.stderr)
        return EXIT_INVALID
    return 0

