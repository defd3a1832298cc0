"""Atomic file writes: a run directory never holds a partial or corrupt file or directory."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then move the finished file into place.

    If ``write`` raises (a full disk, a bug), the temporary file is removed and ``path`` is left as
    it was.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = atomic_write(d / "a.txt", lambda p: p.write_text("hi"))
        >>> (d / "a.txt").read_text()
        'hi'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        # mkstemp creates 0600; give the file the permissions a plain open() would
        os.chmod(tmp_path, 0o666 & ~_umask())
        write(tmp_path)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def atomic_save(path: str | os.PathLike, obj: Any) -> Path:
    """``torch.save(obj)`` to ``path``, atomically (as :func:`atomic_write`).

    Example:
        >>> import tempfile, pathlib, torch
        >>> p = atomic_save(pathlib.Path(tempfile.mkdtemp()) / "t.pt", {"a": torch.ones(2)})
        >>> torch.load(p, weights_only=True)["a"].tolist()
        [1.0, 1.0]
    """
    import torch

    return atomic_write(path, lambda p: torch.save(obj, p))


def atomic_write_dir(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp_dir)`` on a fresh directory beside ``path``, then rename it into place;
    an older ``path`` is replaced only once the new one is complete. If ``write`` raises, the
    temporary directory is removed and ``path`` is left as it was.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> atomic_write_dir(d / "x", lambda t: (t / "a.txt").write_text("1")).name
        'x'
        >>> sorted(q.name for q in d.iterdir())
        ['x']
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        # mkdtemp creates 0700; give the directory the permissions a plain mkdir would
        os.chmod(tmp, 0o777 & ~_umask())
        write(tmp)
        if final.exists():
            old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    text = json.dumps(obj, indent=2, sort_keys=False, default=_jsonable)
    return atomic_write(path, lambda p: p.write_text(text + "\n", encoding="utf-8"))


def _jsonable(obj: Any) -> Any:
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    return repr(obj)
