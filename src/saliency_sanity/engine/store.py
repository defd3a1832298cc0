"""The store: each finished unit of work is written once, atomically, so a run resumes.

Per-unit results live under ``<run_dir>/partial/`` as ``<unit key>.npz``. The run's fingerprint
(a hash of the models' weights, the inputs and every setting) is written first; a directory
holding another run's fingerprint is refused, never mixed. A damaged unit file (a truncated
write from another tool, a full disk) is discarded with a warning and computed again.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._hash import update_with_state, update_with_tensors
from .._io import atomic_write, write_json


class UnitStore:
    """Per-unit results of one run, saved atomically under ``<run_dir>/partial/``.

    Example:
        >>> import tempfile
        >>> s = UnitStore(tempfile.mkdtemp(), "abc", {"check": "demo"})
        >>> s.open(); s.save("batch-000000", {"v": np.arange(3)})
        >>> s.done(), s.load("batch-000000")["v"].tolist()
        ({'batch-000000'}, [0, 1, 2])
    """

    def __init__(self, run_dir: str | Path, fingerprint: str, describe: Mapping[str, Any]):
        self.run_dir = Path(run_dir)
        self.dir = self.run_dir / "partial"
        self.fingerprint = fingerprint
        self._describe = dict(describe)

    def open(self) -> None:
        """Create the directory or check that it holds this same run."""
        fp_file = self.dir / "fingerprint.json"
        done = self.run_dir / "run.json"
        for f in (fp_file, done):
            if f.is_file():
                other = read_fingerprint(f)
                if other != self.fingerprint:
                    raise ValueError(
                        f"{self.run_dir} holds a run with other settings, model weights or "
                        "inputs; it is left untouched. Choose another output directory, or "
                        "delete that one to start afresh"
                    )
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OSError(f"cannot create the run directory {self.run_dir}: {err.strerror}; "
                          "choose a writable output directory") from err
        if not fp_file.is_file():
            write_json(fp_file, {"fingerprint": self.fingerprint, "run": self._describe})

    def _path(self, key: str) -> Path:
        return self.dir / f"{key}.npz"

    def done(self) -> set[str]:
        """Keys of the units already saved."""
        return {p.stem for p in self.dir.glob("*.npz")}

    def save(self, key: str, chunk: Mapping[str, np.ndarray]) -> None:
        def write(p: Path) -> None:
            with open(p, "wb") as fh:
                np.savez(fh, **chunk)

        atomic_write(self._path(key), write)

    def load(self, key: str) -> dict[str, np.ndarray] | None:
        """The saved unit, or None (with a warning, the file removed) if it is damaged."""
        path = self._path(key)
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            warnings.warn(f"{path} is damaged ({type(err).__name__}: {err}); it is discarded "
                          "and that unit of work is computed again", RuntimeWarning,
                          stacklevel=2)
            path.unlink(missing_ok=True)
            return None

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def read_fingerprint(path: Path) -> str | None:
    """The fingerprint recorded in a ``fingerprint.json`` or a finished run's ``run.json``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if "fingerprint" in data:
        return data["fingerprint"]
    return (data.get("settings") or {}).get("fingerprint")


def fingerprint(models: Sequence[nn.Module], tensors: Sequence[torch.Tensor | None],
                settings: Mapping[str, Any]) -> str:
    """A hash of model weights, input tensors and JSON-able settings.

    Example:
        >>> a = fingerprint([nn.Linear(2, 2)], [torch.zeros(2)], {"seed": 0})
        >>> len(a)
        32
    """
    h = hashlib.sha256()
    for m in models:
        update_with_state(h, m.state_dict())
    update_with_tensors(h, tensors, dtype=False)
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()[:32]
