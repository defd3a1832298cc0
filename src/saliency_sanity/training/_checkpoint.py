"""Checkpoint files of the trainer: a guarded load (``weights_only=True``); they are written with
:func:`saliency_sanity._io.atomic_save`."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch


def _load_checkpoint(path: Path, key: str) -> dict[str, Any] | None:
    """The checkpoint at ``path`` if it exists and belongs to ``key``; unreadable ones are ignored
    with a warning (training then starts afresh and overwrites them)."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - a broken cache entry must not block training
        warnings.warn(f"ignoring unreadable checkpoint {path}: {err}", stacklevel=3)
        return None
    if not isinstance(state, dict) or state.get("key") != key:
        warnings.warn(f"ignoring checkpoint {path}: it belongs to another run", stacklevel=3)
        return None
    return state
