"""Process-level performance settings, opt-in.

A randomization check keeps the trained model's activations of a batch while it runs every
stage (see ``reuse_activations`` of :func:`saliency_sanity.model_randomization_test`) and
allocates and frees the stage models' activations, stage after stage. With glibc's default
malloc policy, memory freed at the top of the heap is handed back to the operating system and
faulted in again at the next stage: on a ResNet-18 at 224x224 (8 images, 42 stages, gradient
maps) that was about 1 million page faults and 20% of the run's time (benchmarks/RESULTS.md).

:func:`tune_allocator` keeps freed memory in the process instead. It changes the allocator of
the whole process, so the library never calls it on its own; the ``saliency-sanity`` command
does, at start-up (set ``SALIENCY_SANITY_DEFAULT_MALLOC=1`` to keep the default). The same
effect without code: start Python with ``MALLOC_MMAP_THRESHOLD_=33554432`` and
``MALLOC_TRIM_THRESHOLD_=2147483647`` in the environment.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["tune_allocator"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20  # the largest value glibc accepts on 64-bit systems
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: 2 GiB


def tune_allocator() -> bool:
    """Ask glibc's malloc to keep freed memory (trim threshold 2 GiB) and to serve blocks up
    to 32 MiB from the heap, not from fresh mappings. Returns True if applied, False where the
    C library is not glibc (nothing is changed there).

    The process's resident memory then stays near its peak instead of shrinking between
    stages; peak memory itself does not grow.

    Example:
        >>> from saliency_sanity.performance import tune_allocator
        >>> tune_allocator() in (True, False)
        True
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok
    return ok
