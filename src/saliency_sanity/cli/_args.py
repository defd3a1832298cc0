"""The command line's arguments: the parser and the options built from it."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from ..results.spec import resolve, specs
from . import _method_settings
from ._common import add_backend, add_common, add_image_options, add_model, csv_list
from ._model_inputs import add_methods, add_model_inputs

if TYPE_CHECKING:
    from ..critiques import CritiqueOptions


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
    g.add_argument("--faithfulness", action="store_true",
                   help="the faithfulness check on the trained model's maps, in faithfulness/; "
                        "its scores join the method ranking (the experimental gap)")
    g.add_argument("--faithfulness-metrics", default="region_perturbation,road",
                   metavar="M1,M2",
                   help="metrics of --faithfulness, from region_perturbation, pixel_flipping, "
                        "insertion, deletion, road (region_perturbation,road)")
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
    from ..critiques import CritiqueOptions

    every = bool(getattr(args, "critiques", False))
    return CritiqueOptions(
        smprt=every or args.smprt, emprt=every or args.emprt,
        random_logit=every or args.random_logit,
        activation_scales=every or args.activation_scales,
        smprt_samples=args.smprt_samples, smprt_noise=args.smprt_noise,
        smprt_normalize=args.smprt_normalize, emprt_bins=args.emprt_bins,
        data_randomization_run=args.data_randomization_run,
        faithfulness=bool(getattr(args, "faithfulness", False)),
        faithfulness_metrics=tuple(csv_list(getattr(args, "faithfulness_metrics", None)) or ()),
    )


def as_flags(message: str) -> str:
    """A :class:`CritiqueOptions` error with its field names written as the CLI's flags.

    Example:
        >>> as_flags("smprt_samples must be a positive integer, got 0")
        '--smprt-samples must be a positive integer, got 0'
    """
    import dataclasses
    import re

    from ..critiques import CritiqueOptions

    names = sorted((f.name for f in dataclasses.fields(CritiqueOptions) if "_" in f.name),
                   key=len, reverse=True)
    pattern = re.compile(r"\b(" + "|".join(names) + r")\b")
    return pattern.sub(lambda m: "--" + m.group(1).replace("_", "-"), message)


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser: ``demo``, one subcommand per registered check (its
    ``Cli.add_parser``), ``list`` and ``report``.

    Example:
        >>> build_parser().parse_args(["list"]).command
        'list'
    """
    parser = argparse.ArgumentParser(
        prog="saliency-sanity",
        description="Sanity checks for saliency maps (Adebayo et al. 2018 and follow-ups).",
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"saliency-sanity {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="run the built-in demo (MNIST CNN, cascading randomization)")
    d.add_argument("--out", default="saliency-sanity-demo", help="run directory to write")
    d.add_argument("--n-samples", type=int, default=16, help="test images to explain (16)")
    d.add_argument("--cache-dir", default=None, help="where the trained model is cached")
    d.add_argument("--no-critiques", action="store_true",
                   help="skip the critiques (sMPRT, eMPRT, random logit, activation scales, "
                        "ranking)")
    d.add_argument("--no-localization", action="store_true",
                   help="skip the localization part (grids of MNIST digits, GridPG and DiFull; "
                        "written to OUT/localization)")
    add_common(d)

    for spec in specs():  # one subcommand per check, in registration order
        if spec.cli is not None:
            resolve(spec.cli.add_parser)(sub)
    sub.add_parser("list", help="list the methods, scores, init schemes and data sets")

    rp = sub.add_parser("report", help="(re)build report.html of a run directory from its saved "
                                       "results, without recomputing anything")
    rp.add_argument("run_dir", help="a run directory written by saliency-sanity")
    rp.add_argument("--out", default=None, help="where to write the page (default: "
                                                "RUN_DIR/report.html)")
    rp.add_argument("--margin", type=float, default=0.1,
                    help="data randomization verdict margin, as a fraction of (perfect - chance) "
                         "similarity (0.1)")
    return parser


def add_model_randomization(sub: Any) -> None:
    """The ``model-randomization`` subcommand and its options."""
    from .. import scores
    from ..randomization import init_schemes, orders

    m = sub.add_parser("model-randomization", help="run the model parameter randomization test")
    add_model_inputs(m, n_samples_note="; a larger number than the data hold warns and uses "
                                        "all")
    m.add_argument("--scores", default=None,
                   help=f"comma-separated, from: {', '.join(scores.list())} (default: all)")
    m.add_argument("--controls", default="default",
                   help="comma-separated controls, 'none', or 'default' (every default control "
                        "that applies: edge_sobel, random_gaussian, random_uniform)")
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
    add_backend(m)
    add_common(m)


def add_data_randomization(sub: Any) -> None:
    """The ``data-randomization`` subcommand and its options."""
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
    _method_settings.add_option(r)
    r.add_argument("--scores", default=None, help="comma-separated score names (default: all)")
    r.add_argument("--controls", default="default",
                   help="comma-separated controls, 'none', or 'default' (every default control "
                        "that applies)")
    r.add_argument("--label-seed", type=int, default=0, help="seed of the label permutation")
    r.add_argument("--batch-size", type=int, default=16)
    r.add_argument("--cache-dir", default=None, help="where trained models are cached")
    r.add_argument("--out", required=True, help="run directory to write")
    add_backend(r)
    add_common(r)


def add_localization(sub: Any) -> None:
    """The ``localization`` subcommand and its options."""
    p = sub.add_parser("localization",
                       help="localization on grid images in GridPG, DiFull and DiPart "
                            "(Rao et al. 2022)")
    add_model(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="labelled images to build grids from: a built-in data set "
                                    "name, a folder of class folders, or an .npz with x and y")
    src.add_argument("--grids", help="a saved grid set (.npz with images, labels, sources)")
    p.add_argument("--grid", type=int, default=2, help="cells per side (2)")
    p.add_argument("--count", type=int, default=32, help="grids to build (32)")
    p.add_argument("--confidence", type=float, default=0.99,
                   help="softmax probability every cell's image must reach (0.99)")
    add_image_options(p)
    p.add_argument("--settings", default="gridpg,difull,dipart",
                   help="comma-separated, from gridpg, difull, dipart")
    p.add_argument("--layers", default="input,middle,final",
                   help="comma-separated: input, middle, final or module names")
    add_methods(p)
    p.add_argument("--controls", default="none",
                   help="comma-separated controls, 'none' (default) or 'default'")
    p.add_argument("--smoothing", default="none",
                   help="'none', 'default' (Gaussian, sigma a tenth of the cell side) or a "
                        "sigma in pixels: adds localization_smoothed")
    p.add_argument("--split", default=None, help="DiPart's split module (default: automatic)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: the model's)")
    p.add_argument("--out", required=True, help="run directory to write")
    add_common(p)
