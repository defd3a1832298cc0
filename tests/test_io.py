"""The one atomic write (``saliency_sanity._io``) for files, ``torch.save`` and directories:
a failed write leaves what was there, and no temporary file or directory behind."""

from __future__ import annotations

import pytest
import torch

from saliency_sanity._io import atomic_save, atomic_write_dir


def test_atomic_write_dir_replaces_only_a_complete_directory(tmp_path):
    atomic_write_dir(tmp_path / "x", lambda d: (d / "a.txt").write_text("old"))

    def fails(d):
        (d / "a.txt").write_text("new")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write_dir(tmp_path / "x", fails)
    assert (tmp_path / "x" / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]
    atomic_write_dir(tmp_path / "x", lambda d: (d / "b.txt").write_text("new"))
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]


def test_atomic_save_keeps_the_old_file_on_failure(tmp_path):
    p = atomic_save(tmp_path / "t.pt", {"w": torch.arange(3)})
    with pytest.raises(Exception):  # noqa: B017 - whatever pickling raises
        atomic_save(p, {"w": lambda: None})
    assert torch.load(p, weights_only=True)["w"].tolist() == [0, 1, 2]
    assert sorted(q.name for q in tmp_path.iterdir()) == ["t.pt"]
