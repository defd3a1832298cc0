"""One way of hashing tensors for every fingerprint and cache key (``saliency_sanity._hash``):
the bytes are numpy's, checked against hashlib on numpy arrays, and bfloat16 works too."""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from saliency_sanity._hash import tensor_bytes, update_with_state, update_with_tensors
from saliency_sanity.engine import fingerprint


def test_bytes_and_digests_match_numpy():
    x = torch.arange(12, dtype=torch.float32).reshape(3, 4).t()  # not contiguous
    assert tensor_bytes(x) == x.contiguous().numpy().tobytes()
    assert tensor_bytes(torch.tensor(7)) == torch.tensor(7).numpy().tobytes()  # 0-dim
    h = hashlib.sha256()
    update_with_tensors(h, [x, None], dtype=False)
    want = hashlib.sha256(b"(4, 3)" + x.contiguous().numpy().tobytes() + b"none")
    assert h.hexdigest() == want.hexdigest()
    net = nn.Linear(2, 1)
    h = hashlib.blake2b(digest_size=8)
    update_with_state(h, net.state_dict())
    want = hashlib.blake2b(digest_size=8)
    for name, t in net.state_dict().items():
        want.update(f"{name}{t.dtype}{tuple(t.shape)}".encode() + t.numpy().tobytes())
    assert h.hexdigest() == want.hexdigest()


def test_run_fingerprint_of_a_bfloat16_model():
    """numpy has no bfloat16: the fingerprint reads the raw bytes instead."""
    net = nn.Linear(2, 2).to(torch.bfloat16)
    a = fingerprint([net], [torch.zeros(1, 2, dtype=torch.bfloat16)], {"seed": 0})
    with torch.no_grad():
        net.weight[0, 0] += 1
    assert fingerprint([net], [torch.zeros(1, 2, dtype=torch.bfloat16)], {"seed": 0}) != a
