"""Loading the user's model and data for the command line (and for scripts)."""

from __future__ import annotations

import json
import os
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ._errors import InputError
from .io_models import _first_line, load_model, load_weights

__all__ = ["InputError", "load_data", "load_model", "load_weights"]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif"}


def load_data(spec: str, n: int | None = None, seed: int = 0, size: int | None = None,
              channels: int | None = None, warn_if_fewer: bool = True,
              ) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    """Inputs (and labels, if known) from a built-in data set name, a folder of images, or .npz.

    - built-in name (``saliency_sanity.data.list()``): the first ``n`` test images.
    - folder: ``folder/<class>/<image>`` (labels from sorted class folder names) or a flat folder
      of images (no labels); images are scaled to [0, 1]; ``size`` resizes to size x size.
    - ``.npz``: arrays ``x`` (N, C, H, W), (N, H, W) or (N, D) and optionally ``y`` (N,).

    When the data hold fewer than ``n`` inputs, all are used (with a warning that gives the
    number, unless ``warn_if_fewer`` is False).

    Returns ``(x, y_or_None, description)``.
    """
    from . import data as _data

    p = Path(spec)
    if spec in _data.list():
        ds = _data.load(spec, seed=seed)
        x, y = ds.x_test, ds.y_test
        desc = f"{spec} (test split, seed {seed})"
    elif p.is_dir():
        x, y = _load_image_folder(p, size=size, channels=channels)
        desc = f"images from {p}"
    elif p.suffix == ".npz" and p.is_file():
        x, y = _load_npz(p)
        desc = f"arrays from {p}"
    else:
        raise InputError(
            f"data {spec!r}: not a built-in data set ({', '.join(_data.list())}), a folder of "
            "images, or an .npz file"
        )
    if x.shape[0] == 0:
        raise InputError(f"data {spec!r} holds no inputs")
    if n is not None:
        if n < 1:
            raise InputError(f"--n-samples must be >= 1, got {n}")
        if n > x.shape[0] and warn_if_fewer:
            warnings.warn(f"--n-samples {n} is more than the {x.shape[0]} inputs in {spec}: "
                          f"using all {x.shape[0]}", UserWarning, stacklevel=2)
        x = x[:n]
        y = None if y is None else y[:n]
    return x.float().contiguous(), y, desc


def _load_npz(p: Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    try:
        with np.load(p, allow_pickle=False) as z:
            if "x" not in z.files:
                raise InputError(f"{p} has no array 'x' (it has: {', '.join(z.files)})")
            x = np.asarray(z["x"])
            y = np.asarray(z["y"]) if "y" in z.files else None
    except (ValueError, OSError, zipfile.BadZipFile) as err:
        raise InputError(f"{p} is not a readable .npz file: {err}") from err
    if not np.issubdtype(x.dtype, np.number):
        raise InputError(f"{p}: 'x' must be numeric, got {x.dtype}")
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim not in (2, 4):
        raise InputError(f"{p}: 'x' must be (N, C, H, W), (N, H, W) or (N, D); got {x.shape}")
    xt = torch.from_numpy(x.astype(np.float32))
    if y is None:
        return xt, None
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
        raise InputError(f"{p}: 'y' must be {len(x)} integer labels; got {y.dtype} {y.shape}")
    return xt, torch.from_numpy(y.astype(np.int64))


def _load_image_folder(root: Path, size: int | None, channels: int | None):
    from skimage import io as skio
    from skimage import transform

    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if classes:
        files = [(f, i) for i, c in enumerate(classes) for f in sorted((root / c).iterdir())
                 if f.suffix.lower() in IMAGE_SUFFIXES]
    else:
        files = [(f, -1) for f in sorted(root.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise InputError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found in {root}")
    arrays = []
    for f, _ in files:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                img = np.asarray(skio.imread(f))
        except Exception as err:
            # image readers answer damaged files with plugin / install advice: not the problem
            raise InputError(
                f"{f} is not a readable image (its bytes could not be decoded as a "
                f"{f.suffix.lower() or 'image'} file: damaged, truncated or misnamed?). Remove "
                "or replace it"
            ) from err
        if img.dtype == object or img.ndim not in (2, 3):
            raise InputError(f"{f} is not a readable image (decoded to shape {img.shape}); "
                             "remove or replace it")
        img = img.astype(np.float32) / (255.0 if img.dtype == np.uint8 else 1.0)
        if img.ndim == 2:
            img = img[..., None]
        img = img[..., :3]
        if channels == 1 and img.shape[-1] == 3:
            img = img.mean(-1, keepdims=True)
        elif channels == 3 and img.shape[-1] == 1:
            img = np.repeat(img, 3, -1)
        if size is not None:
            img = transform.resize(img, (size, size), anti_aliasing=True).astype(np.float32)
        arrays.append(np.moveaxis(img, -1, 0))
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise InputError(f"images in {root} have different shapes {sorted(shapes)[:4]}; "
                         "pass --size to resize them")
    x = torch.from_numpy(np.stack(arrays))
    y = torch.tensor([lab for _, lab in files]) if classes else None
    return x, y


def parse_kwargs(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        val = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"--model-kwargs must be a JSON object: {err}") from err
    if not isinstance(val, dict):
        raise InputError("--model-kwargs must be a JSON object, e.g. '{\"num_classes\": 10}'")
    return val


def check_output_dir(out: str | os.PathLike) -> Path:
    """Fail early, before any work, if ``out`` cannot become a writable run directory.

    Creates nothing: checks that ``out`` is a writable folder, or that its nearest existing parent
    is one.

    Example:
        >>> import tempfile
        >>> check_output_dir(tempfile.mkdtemp() + "/new/run").name
        'run'
    """
    d = Path(out)
    if d.exists() and not d.is_dir():
        raise InputError(f"--out {d} exists and is not a folder; choose a folder path")
    probe = d
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise InputError(f"cannot create the output directory {d}: {probe} is a file, not a "
                         "folder; choose another --out")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"the output directory {d} is not writable ({probe} denies writing); "
                         "choose another --out")
    return d


def check_model_on_inputs(model: nn.Module, x: torch.Tensor,
                          y: torch.Tensor | None = None) -> int:
    """Probe the model on one input before a long run; return its number of classes.

    Raises :class:`InputError` with what to do when the model has no parameters, fails on the
    inputs, does not return logits of shape (B, classes), or when labels ``y`` fall outside
    ``0 .. classes - 1``.

    Example:
        >>> from torch import nn
        >>> check_model_on_inputs(nn.Linear(4, 3), torch.zeros(2, 4), torch.tensor([0, 2]))
        3
    """
    if not any(True for _ in model.parameters()):
        raise InputError(
            f"the model ({type(model).__name__}) has no parameters, so there is nothing to "
            "randomize; pass a trained network with weights"
        )
    if not torch.isfinite(x).all():
        raise InputError("the inputs contain NaN or inf values; clean the data first")
    try:
        from ._guard import eval_mode, model_device

        with torch.no_grad(), eval_mode(model):
            out = model(x[:1].to(model_device(model)))
    except Exception as err:
        raise InputError(
            f"the model fails on inputs of shape {tuple(x.shape[1:])} (per sample): "
            f"{err.__class__.__name__}: {str(err).splitlines()[0] if str(err) else ''}. Check "
            "--data, --size and --channels against what the model expects"
        ) from err
    if not isinstance(out, torch.Tensor):  # an output object with logits (Hugging Face)
        found = out.get("logits") if isinstance(out, dict) else getattr(out, "logits", None)
        out = found if isinstance(found, torch.Tensor) else out
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise InputError(f"the model must return logits of shape (batch, classes); it returned "
                         f"{shape}. Wrap it so that forward returns the logits tensor")
    classes = int(out.shape[1])
    if y is not None:
        known = y[y >= 0]
        bad = known[(known >= classes)]
        if bad.numel():
            raise InputError(
                f"labels out of range: the model has {classes} classes (0..{classes - 1}) but the "
                f"labels include {sorted(set(bad.tolist()))[:5]}; fix the labels or use "
                "--target-mode predicted"
            )
    return classes


def check_device(spec: str | None) -> torch.device | None:
    """The ``--device`` asked for, or a clear :class:`InputError` when this machine or this
    PyTorch build cannot use it (instead of an error deep inside the first transfer).

    Example:
        >>> check_device("cpu")
        device(type='cpu')
        >>> check_device(None) is None
        True
    """
    if spec is None:
        return None
    try:
        dev = torch.device(spec)
    except (RuntimeError, ValueError) as err:
        raise InputError(f"--device {spec!r} is not a device name (cpu, cuda, cuda:1, mps): "
                         f"{_first_line(err)}") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this PyTorch build has no CUDA support" if torch.version.cuda is None
                   else "no CUDA GPU is visible (driver? CUDA_VISIBLE_DEVICES?)")
            raise InputError(f"--device {spec}: {why} (torch {torch.__version__}); use "
                             "--device cpu, or install a CUDA build of PyTorch")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) "
                             f"visible (cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise InputError(f"--device {spec}: Apple MPS is not available here; use --device cpu")
    return dev


NORMALIZE_SYNTAX = ("MEAN,STD (one value each, for every channel, e.g. 0.1307,0.3081) or "
                    "MEANS/STDS (comma-separated per-channel lists of equal length, e.g. "
                    "0.485,0.456,0.406/0.229,0.224,0.225)")


def parse_normalize(text: str) -> tuple[list[float], list[float]]:
    """``--normalize`` text as ``(means, stds)``: ``MEAN,STD`` or ``MEANS/STDS``.

    Example:
        >>> parse_normalize("0.1307,0.3081")
        ([0.1307], [0.3081])
        >>> parse_normalize("0.5,0.4/0.2,0.25")
        ([0.5, 0.4], [0.2, 0.25])
    """
    def numbers(part: str) -> list[float]:
        try:
            return [float(v) for v in part.split(",") if v.strip()]
        except ValueError as err:
            raise InputError(f"--normalize {text!r}: {err}; expected {NORMALIZE_SYNTAX}") from err

    if "/" in text:
        left, _, right = text.partition("/")
        means, stds = numbers(left), numbers(right)
        if not means or len(means) != len(stds):
            raise InputError(f"--normalize {text!r}: {len(means)} mean(s) and {len(stds)} "
                             f"std(s); expected {NORMALIZE_SYNTAX}")
    else:
        vals = numbers(text)
        if len(vals) != 2:
            raise InputError(f"--normalize {text!r}: expected {NORMALIZE_SYNTAX}")
        means, stds = vals[:1], vals[1:]
    if any(not np.isfinite(v) for v in means + stds) or any(s <= 0 for s in stds):
        raise InputError(f"--normalize {text!r}: means must be finite and stds positive")
    return means, stds


class Normalized(nn.Module):
    """``model((x - mean) / std)``: a model trained on normalized inputs, explained in the data's
    own units (maps, noise levels, baselines and controls all refer to the un-normalized input).

    ``mean`` and ``std`` hold one value (every channel) or one per channel (dim 1 of the input).
    The wrapped model is not changed; its modules appear under the prefix ``model.``.

    Example:
        >>> net = Normalized(nn.Identity(), [0.5], [0.25])
        >>> net(torch.tensor([[1.0, 0.5]]))
        tensor([[2., 0.]])
    """

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.model = model
        m = torch.tensor([float(v) for v in mean])
        s = torch.tensor([float(v) for v in std])
        if m.numel() == 0 or m.shape != s.shape or bool((s <= 0).any()):
            raise ValueError("mean and std must be non-empty, of equal length, std > 0")
        self.register_buffer("mean", m)  # in the state_dict: part of a run's fingerprint
        self.register_buffer("std", s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m, s = self.mean, self.std
        if m.numel() > 1:
            if x.dim() < 2 or x.shape[1] != m.numel():
                raise ValueError(f"--normalize has {m.numel()} per-channel values but the "
                                 f"inputs have shape {tuple(x.shape[1:])} per sample")
            shape = (1, -1) + (1,) * (x.dim() - 2)
            m, s = m.view(shape), s.view(shape)
        return self.model((x - m.to(x.dtype)) / s.to(x.dtype))
