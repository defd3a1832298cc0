"""Hashes of tensors and state dicts: the bytes every fingerprint and cache key is made of.

The callers choose the hash (``hashlib.sha256`` for run fingerprints, ``hashlib.blake2b`` for
trainer and attribution caches); these functions feed it, so that a tensor is read the same way
everywhere (on the CPU, contiguous, any dtype, bfloat16 included).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch


def tensor_bytes(t: torch.Tensor) -> bytes:
    """The raw bytes of a tensor's elements, in row-major order (``numpy().tobytes()`` for every
    dtype numpy knows, and the same layout for those it does not, such as bfloat16).

    Example:
        >>> tensor_bytes(torch.tensor([1, 2], dtype=torch.int16))
        b'\\x01\\x00\\x02\\x00'
        >>> len(tensor_bytes(torch.zeros(3, dtype=torch.bfloat16)))
        6
    """
    arr = t.detach().cpu().contiguous()
    # reshape(-1): a 0-dim tensor (batch norm's num_batches_tracked) cannot be viewed as bytes
    return arr.reshape(-1).view(torch.uint8).numpy().tobytes() if arr.numel() else b""


def update_with_state(h: Any, state: Mapping[str, torch.Tensor]) -> None:
    """Feed a state dict to the hash ``h``: each entry's name, dtype, shape and bytes.

    Example:
        >>> import hashlib
        >>> a, b = hashlib.sha256(), hashlib.sha256()
        >>> update_with_state(a, {"w": torch.ones(2)})
        >>> update_with_state(b, {"w": torch.ones(2, dtype=torch.float64)})
        >>> a.hexdigest() == b.hexdigest()
        False
    """
    for name, t in state.items():
        h.update(f"{name}{t.dtype}{tuple(t.shape)}".encode())
        h.update(tensor_bytes(t))


def update_with_tensors(h: Any, tensors: Iterable[torch.Tensor | None], dtype: bool = True
                        ) -> None:
    """Feed tensors to the hash ``h``: each one's dtype (unless ``dtype=False``), shape and
    bytes; a None as ``b"none"``.

    Example:
        >>> import hashlib
        >>> a, b = hashlib.blake2b(digest_size=8), hashlib.blake2b(digest_size=8)
        >>> update_with_tensors(a, [torch.zeros(2), None])
        >>> update_with_tensors(b, [torch.zeros(2), None])
        >>> a.hexdigest() == b.hexdigest()
        True
    """
    for t in tensors:
        if t is None:
            h.update(b"none")
            continue
        h.update(f"{t.dtype}{tuple(t.shape)}".encode() if dtype else str(tuple(t.shape)).encode())
        h.update(tensor_bytes(t))
