"""The command line's arguments: the parser and the options built from it."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from . import _method_settings

if TYPE_CHECKING:
    from ..critiques import CritiqueOptions


def _csv(text: str | None) -> list[str] | None:
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    return items or None


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="seed for everything random (default 0)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def add_model(p: argparse.ArgumentParser) -> None:
    """``--model``, ``--model-kwargs``, ``--weights``, ``--unsafe-load``: the user's model, which
    :func:`~saliency_sanity.cli.commands.load_model_arg` loads."""
    p.add_argument("--model", required=True,
                   help="'package.module:factory', 'file.py:factory' or a TorchScript file")
    p.add_argument("--model-kwargs", default=None, help="JSON keyword arguments for the factory")
    p.add_argument("--weights", default=None, help="state_dict file (loaded weights_only)")
    p.add_argument("--unsafe-load", action="store_true",
                   help="allow pickled checkpoints (runs code from the file: trusted files only)")


def add_image_options(p: argparse.ArgumentParser) -> None:
    """``--size`` and ``--channels``: how folder images are read."""
    p.add_argument("--size", type=int, default=None, help="resize folder images to SIZE x SIZE")
    p.add_argument("--channels", type=int, choices=(1, 3), default=None,
                   help="convert folder images to 1 or 3 channels")


def add_methods(p: argparse.ArgumentParser) -> None:
    """``--methods`` (from every registered method) and ``--method-settings``."""
    from .. import methods

    p.add_argument("--methods", default=None,
                   help=f"comma-separated, from: {', '.join(methods.list())} (default: all that "
                        "apply)")
    _method_settings.add_option(p)


def add_model_inputs(p: argparse.ArgumentParser, n_samples_note: str = "") -> None:
    """The user's model, the inputs to explain and the methods: :func:`add_model`, ``--data``,
    ``--n-samples`` (its help ends with ``n_samples_note``), :func:`add_image_options` and
    :func:`add_methods`; :func:`~saliency_sanity.cli.commands.load_model_inputs` loads them.

    Example:
        >>> p = argparse.ArgumentParser()
        >>> add_model_inputs(p)
        >>> a = p.parse_args(["--model", "m.py:net", "--data", "x.npz", "--methods", "gradient"])
        >>> a.model, a.data, a.n_samples, a.size, a.channels, a.methods, a.unsafe_load
        ('m.py:net', 'x.npz', None, None, None, 'gradient', False)
    """
    add_model(p)
    p.add_argument("--data", required=True,
                   help="a built-in data set name, a folder of images (one sub-folder per class), "
                        "or an .npz with arrays x and y")
    p.add_argument("--n-samples", type=int, default=None,
                   help=f"inputs to explain (16, or all when the data hold fewer{n_samples_note})")
    add_image_options(p)
    add_methods(p)


def add_backend(p: argparse.ArgumentParser, dtype: bool = True, unit: str = "batch") -> None:
    """``--backend``, ``--ray-address`` and ``--dtype`` (unless ``dtype`` is False): where and
    in which precision the units of work (``unit``: what one Ray task computes) run (see
    ``docs/scaling.md``); :func:`backend_settings` reads them."""
    g = p.add_argument_group("scaling", "where the units of work run (docs/scaling.md)")
    g.add_argument("--backend", choices=["local", "ray"], default="local",
                   help=f"local (this process, default) or ray: one Ray task per {unit}, the "
                        "same results (needs: pip install 'saliency-sanity[ray]')")
    g.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="the Ray cluster: 'auto', 'HOST:6379' or 'ray://HOST:10001' "
                        "(default: $RAY_ADDRESS, else a local cluster on this machine)")
    if dtype:
        g.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                       default="float32",
                       help="maps in mixed precision (torch.autocast); float32 (default) is "
                            "exact")


def backend_settings(args: argparse.Namespace) -> dict[str, object]:
    """The :class:`~saliency_sanity.engine.RunConfig` settings of :func:`add_backend`'s flags.

    Example:
        >>> a = argparse.Namespace(backend="ray", ray_address="auto", dtype="float32")
        >>> backend_settings(a)
        {'backend': 'ray', 'ray_address': 'auto', 'dtype': None}
    """
    backend = getattr(args, "backend", "local")
    address = getattr(args, "ray_address", None)
    if address is not None and backend != "ray":
        raise ValueError("--ray-address needs --backend ray")
    dtype = getattr(args, "dtype", "float32")
    return {"backend": backend, "ray_address": address,
            "dtype": None if dtype == "float32" else dtype}


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
        faithfulness_metrics=tuple(_csv(getattr(args, "faithfulness_metrics", None)) or ()),
    )


def _controls(text: str) -> bool | list[str]:
    """``--controls``: 'default' -> every default control that applies, 'none' -> none.

    Example:
        >>> _controls("default"), _controls("none"), _controls("edge_sobel, constant")
        (True, [], ['edge_sobel', 'constant'])
    """
    word = text.strip().lower()
    if word == "default":
        return True
    if word == "none":
        return []
    return _csv(text) or []


def _as_flags(message: str) -> str:
    """A :class:`CritiqueOptions` error with its field names written as the CLI's flags.

    Example:
        >>> _as_flags("smprt_samples must be a positive integer, got 0")
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
    from .. import scores
    from ..randomization import init_schemes, orders

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
    _add_common(d)

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
    _add_common(r)

    from ._faithfulness import add_parser as _add_faithfulness

    _add_faithfulness(sub)
    _add_localization(sub)
    from .shah import add_parsers

    add_parsers(sub)  # diffroar, blockmnist
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


def _add_localization(sub: Any) -> None:
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
    _add_common(p)
