"""Per-device execution paths: numpy/scipy on CPU (fastest there), torch elsewhere.

On CPU, batches are processed in chunks of samples (cache-sized) over a small thread pool of
``torch.get_num_threads()`` workers; numpy sorts, ufuncs and scipy.ndimage filters release the
GIL, so the chunks run in parallel. No global state of torch or numpy is touched.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import TypeVar

import torch

T = TypeVar("T")

BACKENDS = ("auto", "numpy", "torch")


def pick(backend: str, device: torch.device) -> str:
    """Resolves ``backend`` ('auto', 'numpy', 'torch') for maps on ``device``."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "numpy" if device.type == "cpu" else "torch"
    if backend == "numpy" and device.type != "cpu":
        raise ValueError(f"the numpy backend needs CPU tensors, got maps on {device}")
    return backend


@lru_cache(maxsize=8)
def _pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="saliency_sanity")


def map_chunks(fn: Callable[[slice], T], n: int, chunk: int) -> list[T]:
    """Runs ``fn(slice)`` over [0, n) in slices of ``chunk`` items, on up to
    ``torch.get_num_threads()`` threads, results in order."""
    slices: Sequence[slice] = [slice(i, min(i + chunk, n)) for i in range(0, n, chunk)]
    workers = max(1, min(torch.get_num_threads(), len(slices), 8))
    if workers == 1:
        return [fn(s) for s in slices]
    return list(_pool(workers).map(fn, slices))


def chunk_rows(row_elems: int, target_elems: int = 1 << 18) -> int:
    """Rows per chunk so one chunk holds about ``target_elems`` elements (cache-friendly)."""
    return max(1, target_elems // max(1, row_elems))
