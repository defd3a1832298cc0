"""Loading the user's model for the command line (and for scripts): a factory or TorchScript
file, and weights with ``torch.load(weights_only=True)`` unless the user opts in."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import pickle
import sys
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._errors import InputError


def load_model(spec: str, weights: str | os.PathLike | None = None, unsafe_load: bool = False,
               kwargs: dict[str, Any] | None = None) -> nn.Module:
    """Build a model from ``package.module:factory`` or ``path/to/file.py:factory`` (optionally
    loading a state_dict from ``weights``), or load a TorchScript file.

    Weights load with ``torch.load(weights_only=True)``; a pickled checkpoint needs
    ``unsafe_load=True``, which runs code from the file: only for files you trust.

    Example:
        >>> m = load_model("torch.nn:Identity")
        >>> type(m).__name__
        'Identity'
    """
    path = Path(spec)
    if ":" not in spec or (path.is_file() and not spec.endswith(".py")):
        if not path.is_file():
            raise InputError(
                f"model {spec!r}: expected 'package.module:factory', 'file.py:factory' or a "
                "TorchScript file that exists"
            )
        try:
            model = torch.jit.load(str(path), map_location="cpu")
        except Exception as err:
            raise InputError(
                f"{spec} is not a TorchScript file ({err.__class__.__name__}). Pass a factory as "
                "'package.module:factory' and the state_dict with --weights"
            ) from err
        if weights is not None:
            raise InputError("--weights is for factories; a TorchScript file carries its weights")
        return model.eval()

    mod_name, _, attr = spec.rpartition(":")
    if not mod_name or not attr:
        raise InputError(f"model {spec!r}: expected 'package.module:factory'")
    # a model file's own folder is importable while it loads (sibling modules, pickled classes)
    folder = Path(mod_name).resolve().parent if mod_name.endswith(".py") else None
    with _on_sys_path(folder):
        module = _import(mod_name)
        if not hasattr(module, attr):
            public = [n for n in dir(module) if not n.startswith("_")][:20]
            raise InputError(f"{mod_name} has no attribute {attr!r}; it has: {', '.join(public)}")
        factory = getattr(module, attr)
        if not callable(factory):
            raise InputError(f"{spec} is not callable")
        try:
            model = factory(**(kwargs or {}))
        except Exception as err:
            args = ", ".join(f"{k}={v!r}" for k, v in (kwargs or {}).items())
            raise InputError(f"the model factory {spec}({args}) failed: "
                             f"{type(err).__name__}: {_first_line(err)}") from err
        if not isinstance(model, nn.Module):
            raise InputError(f"{spec}() returned {type(model).__name__}, not a torch.nn.Module")
        if weights is not None:
            state = load_weights(weights, unsafe_load=unsafe_load)
            try:
                model.load_state_dict(state)
            except RuntimeError as err:
                raise InputError(f"the weights in {weights} do not fit {spec}: {err}") from err
    return model.eval()


@contextlib.contextmanager
def _on_sys_path(folder: Path | None) -> Iterator[None]:
    """``folder`` first on ``sys.path`` for the duration (removed after, if it was added)."""
    entry = str(folder) if folder is not None else None
    added = entry is not None and entry not in sys.path
    if added:
        sys.path.insert(0, entry)
    try:
        yield
    finally:
        if added and entry in sys.path:
            sys.path.remove(entry)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else "(no message)"


def _shorten(text: str, limit: int = 200) -> str:
    """``text`` cut at a word boundary to at most ``limit`` characters (with an ellipsis)."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0]
    return cut.rstrip(",;:") + " ..."


def _import(name: str):
    if name.endswith(".py"):
        p = Path(name)
        if not p.is_file():
            raise InputError(f"model file {name} does not exist")
        mod_id = f"_saliency_sanity_user_{abs(hash(str(p.resolve())))}"
        spec = importlib.util.spec_from_file_location(mod_id, p)
        if spec is None or spec.loader is None:
            raise InputError(f"cannot import {name}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_id] = module
        try:
            spec.loader.exec_module(module)
        except Exception as err:
            sys.modules.pop(mod_id, None)
            raise InputError(f"importing the model file {name} failed: "
                             f"{type(err).__name__}: {_first_line(err)}") from err
        return module
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise InputError(
            f"cannot import {name!r} ({err}); is it installed, or on PYTHONPATH?"
        ) from err


def load_weights(path: str | os.PathLike, unsafe_load: bool = False) -> dict[str, torch.Tensor]:
    """A state_dict from a checkpoint file (also one wrapped as {'state_dict': ...} or
    {'model': ...}), read with ``weights_only=True`` unless ``unsafe_load``."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"weights file {p} does not exist")
    plain = _is_plain_pickle(p)
    if plain and not unsafe_load:
        raise InputError(
            f"{p} is a plain Python pickle, not a torch.save checkpoint: loading it runs code "
            "from the file, which weights_only loading refuses. If you trust the file, pass "
            "--unsafe-load; better, save the weights with torch.save(model.state_dict(), path)"
        )
    try:
        with warnings.catch_warnings():  # torch's own loader warnings: our message says it all
            warnings.simplefilter("ignore")
            if plain:
                with open(p, "rb") as f:
                    obj = pickle.load(f)  # noqa: S301 - only with --unsafe-load
            else:
                obj = torch.load(p, map_location="cpu", weights_only=not unsafe_load)
    except pickle.UnpicklingError as err:
        if "Unsupported global" not in str(err) and "GLOBAL" not in str(err):
            # random bytes or a damaged file also end up in the unpickler: not a trust question
            last = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
            raise InputError(
                f"{p} is not a readable PyTorch checkpoint (corrupt or truncated?): the unpickler "
                f"failed ({_shorten(last, 120)}). Save the weights again with "
                "torch.save(model.state_dict(), path)"
            ) from err
        raise InputError(
            f"{p} holds Python objects that weights_only loading refuses. If you trust the file, "
            "pass --unsafe-load (this runs code from the file); better, save "
            "model.state_dict() instead"
        ) from err
    except Exception as err:  # damaged bytes make the unpickler fail in any way (IndexError...)
        raise InputError(f"{p} is not a readable PyTorch checkpoint (corrupt or truncated?): "
                         f"{type(err).__name__}: {_shorten(str(err), 160)}") from err
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(f"{p} does not hold a state_dict (a dict of tensors)")
    return obj


_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


def _is_plain_pickle(p: Path) -> bool:
    """True for a file written by ``pickle.dump`` (not ``torch.save``, whose files are zip
    archives, or in the legacy format start with torch's magic number)."""
    if zipfile.is_zipfile(p):
        return False
    with open(p, "rb") as f:
        head = f.read(len(_LEGACY_TORCH_MAGIC))
    if head.startswith(_LEGACY_TORCH_MAGIC):
        return False
    # pickle protocol 2-5 starts with PROTO (0x80) and the protocol number
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5
