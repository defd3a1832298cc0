"""What several commands share: flags (comma lists, --controls, --seed, the user's model and
images, the backend) and loading the user's model and inputs from them."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def csv_list(text: str | None) -> list[str] | None:
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    return items or None


def parse_controls(text: str) -> bool | list[str]:
    """``--controls``: 'default' -> every default control that applies, 'none' -> none.

    Example:
        >>> parse_controls("default"), parse_controls("none"), parse_controls("edge_sobel, sobel")
        (True, [], ['edge_sobel', 'sobel'])
    """
    word = text.strip().lower()
    if word == "default":
        return True
    if word == "none":
        return []
    return csv_list(text) or []


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="seed for everything random (default 0)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def add_model(p: argparse.ArgumentParser) -> None:
    """``--model``, ``--model-kwargs``, ``--weights``, ``--unsafe-load``: the user's model, which
    :func:`~saliency_sanity.cli._common.load_model_arg` loads."""
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
    """``--device`` checked, then the model of :func:`~saliency_sanity.cli._common.add_model`'s
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
    :func:`~saliency_sanity.cli._model_inputs.add_model_inputs`'s options: ``(model, x, y,
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


def os_message(err: BaseException) -> object:
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


def print_outputs(out: Path) -> None:
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
