"""The flags of the user's model, inputs and methods, and what ``run.json`` records of them."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from . import _method_settings
from ._common import add_image_options, add_model


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
    :func:`add_methods`; :func:`~saliency_sanity.cli._common.load_model_inputs` loads them.

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


def record_inputs(result: Any, args: argparse.Namespace, desc: str,
                  given: Mapping[str, Any], boxes: Mapping[str, Any]) -> None:
    """What ``run.json`` records of the inputs: the model (``--model``, ``--weights``, and
    ``--normalize`` when given), the data's description ``desc`` and the method settings."""
    result.settings["model"] = {"spec": args.model, "weights": args.weights}
    if getattr(args, "normalize", None):
        result.settings["model"]["normalize"] = args.normalize
    result.settings["data"] = desc
    _method_settings.record(result, given, boxes)
