"""Masked data sets for ROAR / KAR / DiffROAR: attributions (batched, cached on disk), keep masks.

Protocol of Shah et al. 2021 (their code): every image's coordinates (C x H x W) are ranked by
``|attribution|``; the top-k (or bottom-k) fraction is kept and every other coordinate is set to
the mean of the training data (one scalar). Options: rank pixels instead of coordinates
(``per="pixel"``: ``|attribution|`` summed over channels, all channels of a pixel kept or
removed together) and fill with a per-channel mean (``fill="channel"``). Ties are broken by
coordinate index (stable sort), so masks are deterministic.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from .._hash import update_with_state, update_with_tensors
from .._io import atomic_save
from ..data import Dataset

RANDOM = "random"  # the random-map control: a seeded uniform map, independent of the model
_FORMAT = 1


def check_k(k: float) -> float:
    """``k`` as a float, or a ValueError unless 0 < k <= 1.

    Example:
        >>> check_k(0.5)
        0.5
    """
    try:
        kf = float(k)
    except (TypeError, ValueError):
        raise ValueError(f"k must be a number in (0, 1], got {k!r}") from None
    if not 0.0 < kf <= 1.0:
        raise ValueError(f"k must be a fraction in (0, 1] (the share of coordinates kept), "
                         f"got {k}")
    return kf


def model_fingerprint(model: nn.Module) -> str:
    """A hash of a model's class and state dict (16 hex digits).

    Example:
        >>> len(model_fingerprint(nn.Linear(2, 2)))
        16
    """
    h = hashlib.blake2b(digest_size=8)
    h.update(type(model).__qualname__.encode())
    update_with_state(h, model.state_dict())
    return h.hexdigest()


def _tensor_hash(*ts: torch.Tensor) -> str:
    h = hashlib.blake2b(digest_size=8)
    update_with_tensors(h, ts)
    return h.hexdigest()


def _method(method: Any) -> tuple[Any, dict[str, Any]]:
    if isinstance(method, str) and method == RANDOM:
        return RANDOM, {"name": RANDOM}
    from .. import methods

    m = methods.get(method) if isinstance(method, str) else method
    if not callable(m):
        raise TypeError(f"method must be a method name or a Method, got {type(m).__name__}")
    settings = m.settings() if hasattr(m, "settings") else {"name": repr(m)}
    return m, json.loads(json.dumps(settings, sort_keys=True, default=repr))


def compute_attributions(model: nn.Module | None, x: torch.Tensor, y: torch.Tensor,
                         method: Any = "gradient", batch_size: int = 250,
                         seed: int = 0) -> torch.Tensor:
    """Maps of ``x`` for the labels ``y`` (the given label's logit, as Shah et al.), batched.

    ``method``: a registered method name, a Method, or ``"random"`` (the control: uniform noise
    from ``torch.Generator().manual_seed(seed)``, the model is not used).

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> compute_attributions(net, torch.rand(5, 1, 2, 2), torch.zeros(5).long()).shape
        torch.Size([5, 1, 2, 2])
    """
    m, _ = _method(method)
    if m == RANDOM:
        return torch.rand(x.shape, generator=torch.Generator().manual_seed(int(seed)))
    out = []
    for i in range(0, len(x), batch_size):
        a = m(model, x[i : i + batch_size], y[i : i + batch_size].long())
        out.append(a.detach().float().cpu())
    attr = torch.cat(out)
    check_attribution(attr, x)
    return attr


def cached_attributions(model: nn.Module | None, x: torch.Tensor, y: torch.Tensor,
                        method: Any, cache_dir: str | os.PathLike | None,
                        batch_size: int = 250, seed: int = 0) -> torch.Tensor:
    """:func:`compute_attributions`, cached in ``cache_dir`` under a hash of (model fingerprint,
    method and its settings, inputs and labels, seed); ``cache_dir=None``: no cache.

    Example:
        >>> import tempfile
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> d = tempfile.mkdtemp(); x = torch.rand(3, 1, 2, 2); y = torch.zeros(3).long()
        >>> a = cached_attributions(net, x, y, "gradient", d)
        >>> torch.equal(a, cached_attributions(net, x, y, "gradient", d))
        True
    """
    if cache_dir is None:
        return compute_attributions(model, x, y, method, batch_size, seed)
    m, settings = _method(method)
    payload = {"format": _FORMAT, "method": settings, "data": _tensor_hash(x, y),
               "model": None if m == RANDOM else model_fingerprint(model),
               "seed": int(seed) if m == RANDOM or settings.get("seed") is not None else None}
    key = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]
    path = Path(cache_dir) / f"attr-{settings.get('name', 'method')}-{key}.pt"
    if path.is_file():
        try:
            attr = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(attr, torch.Tensor) and attr.shape == x.shape:
                return attr
        except Exception:  # noqa: BLE001 - a damaged cache entry is recomputed
            pass
    attr = compute_attributions(model, x, y, method, batch_size, seed)
    atomic_save(path, attr)
    return attr


def check_attribution(attr: Any, x: torch.Tensor) -> torch.Tensor:
    """``attr`` as a tensor, or a ValueError unless it has exactly the inputs' shape.

    Example:
        >>> check_attribution(torch.zeros(2, 3), torch.zeros(2, 3)).shape
        torch.Size([2, 3])
    """
    if not isinstance(attr, torch.Tensor):
        raise TypeError(f"attributions must be a torch.Tensor, got {type(attr).__name__}")
    if tuple(attr.shape) != tuple(x.shape):
        raise ValueError(f"attributions have shape {tuple(attr.shape)} but the images have "
                         f"{tuple(x.shape)}: give one attribution per input coordinate")
    if not torch.isfinite(attr).all():
        raise ValueError("attributions contain NaN or infinite values")
    return attr


def keep_mask(attr: torch.Tensor, k: float, side: Literal["top", "bottom"] = "top",
              per: Literal["coordinate", "pixel"] = "coordinate") -> torch.Tensor:
    """A bool mask of ``attr``'s shape: the top-k (or bottom-k) share of coordinates (or pixels)
    of each image by ``|attr|``; ``round(k * D)`` of the D of them, at least one.

    Example:
        >>> keep_mask(torch.tensor([[0.1, -3.0, 2.0, 0.0]]), 0.5).tolist()
        [[False, True, True, False]]
        >>> keep_mask(torch.tensor([[0.1, -3.0, 2.0, 0.0]]), 0.5, "bottom").tolist()
        [[True, False, False, True]]
    """
    k = check_k(k)
    if side not in ("top", "bottom"):
        raise ValueError(f"side must be 'top' or 'bottom', got {side!r}")
    if per not in ("coordinate", "pixel"):
        raise ValueError(f"per must be 'coordinate' or 'pixel', got {per!r}")
    score = attr.detach().abs().float()
    if per == "pixel":
        if score.dim() != 4:
            raise ValueError("per='pixel' needs images (N, C, H, W)")
        score = score.sum(1, keepdim=True)
    flat = score.flatten(1)
    d = flat.shape[1]
    n_keep = min(d, max(1, int(round(k * d))))
    order = torch.argsort(flat, dim=1, descending=(side == "top"), stable=True)
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep.scatter_(1, order[:, :n_keep], True)
    keep = keep.view_as(score)
    return keep.expand_as(attr) if per == "pixel" else keep


def fill_value(x_train: torch.Tensor, fill: Literal["scalar", "channel"] = "scalar"
               ) -> torch.Tensor:
    """The value removed coordinates get: the training images' mean, one scalar or per channel.

    Example:
        >>> fill_value(torch.tensor([[[[0.0]], [[1.0]]]]), "channel").flatten().tolist()
        [0.0, 1.0]
    """
    if fill == "scalar":
        return x_train.double().mean().float().reshape(())
    if fill == "channel":
        if x_train.dim() != 4:
            raise ValueError("fill='channel' needs images (N, C, H, W)")
        return x_train.double().mean(dim=(0, 2, 3)).float().view(1, -1, 1, 1)
    raise ValueError(f"fill must be 'scalar' or 'channel', got {fill!r}")


def apply_mask(x: torch.Tensor, attr: torch.Tensor, k: float, side: Literal["top", "bottom"],
               fill: torch.Tensor, per: Literal["coordinate", "pixel"] = "coordinate"
               ) -> torch.Tensor:
    """``x`` with the coordinates outside :func:`keep_mask` set to ``fill``.

    Example:
        >>> apply_mask(torch.ones(1, 4), torch.tensor([[4.0, 3, 2, 1]]), 0.25, "top",
        ...            torch.tensor(0.5)).tolist()
        [[1.0, 0.5, 0.5, 0.5]]
    """
    check_attribution(attr, x)
    keep = keep_mask(attr, k, side, per)
    return torch.where(keep, x, fill.to(x.dtype)).contiguous()


def masked_dataset(ds: Dataset, attr_train: torch.Tensor, attr_test: torch.Tensor, k: float,
                   side: Literal["top", "bottom"],
                   per: Literal["coordinate", "pixel"] = "coordinate",
                   fill: Literal["scalar", "channel"] = "scalar") -> Dataset:
    """A copy of ``ds`` whose train and test images keep only their top-k (bottom-k) attributed
    coordinates; the rest get the original training images' mean.

    Example:
        >>> ds = Dataset("t", torch.rand(4, 1, 2, 2), torch.tensor([0, 1, 0, 1]),
        ...              torch.rand(2, 1, 2, 2), torch.tensor([0, 1]), ["a", "b"])
        >>> m = masked_dataset(ds, torch.rand(4, 1, 2, 2), torch.rand(2, 1, 2, 2), 0.5, "top")
        >>> m.name, int((m.x_train == fill_value(ds.x_train)).sum())
        ('t-top0.5', 8)
    """
    value = fill_value(ds.x_train, fill)
    fields = {f.name: getattr(ds, f.name) for f in dataclasses.fields(Dataset)}
    fields.update(
        name=f"{ds.name}-{side}{check_k(k):g}",
        x_train=apply_mask(ds.x_train, attr_train, k, side, value, per),
        x_test=apply_mask(ds.x_test, attr_test, k, side, value, per),
    )
    return Dataset(**fields)
