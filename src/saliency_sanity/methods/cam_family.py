"""Grad-CAM's relatives: Grad-CAM++, LayerCAM, Ablation-CAM and Score-CAM.

All four explain through the activations ``A`` (B, K, h, w) of one layer, chosen and resolved
exactly as for Grad-CAM (:mod:`.cam`: the activated output of the last convolutional block by
default, ``layer="<module name>"`` to choose, recorded as ``resolved_layer``). Each computes a
map at the layer's resolution, ``ReLU(sum_k w_k A_k)`` (LayerCAM: ``ReLU(sum_k W_k * A_k)``
with a weight per element), and upsamples it to the input like Grad-CAM. With ``g = d y / d A``
for the target logit ``y``:

- ``gradcam_plus_plus`` (Chattopadhay et al. 2018): ``alpha = g^2 / (2 g^2 + g^3 sum_ij A)``
  (0 where the denominator is 0), ``w_k = sum_ij alpha ReLU(g)``. The paper's ``exp(y)``
  factor (from explaining ``exp(y)``) is a positive factor per image; it is left out, as in
  common implementations: it changes no map's shape and overflows float32 for logits > 88.
- ``layercam`` (Jiang et al. 2021): ``W = ReLU(g)``, map ``ReLU(sum_k ReLU(g_k) * A_k)``.
- ``ablation_cam`` (Desai & Ramaswamy 2020): ``w_k = (y - y_k) / y`` with ``y_k`` the target
  logit when channel ``k`` of the layer's output is set to zero (0 where ``y == 0``).
  Channels that are zero already are not ablated (their term is zero).
- ``score_cam`` (Wang et al. 2020): each channel upsampled bilinearly to the input size and
  min-max normalised to [0, 1], ``M_k``; ``w_k = softmax(f(x * M_k))[target]`` (``score=
  "logit"``: the logit instead); constant channels get ``w_k = 0``, as in the authors' code.
  The weighted sum is taken at the layer's resolution and then upsampled (the authors sum the
  upsampled channels: bilinear upsampling is linear, so this differs only in the order of
  ReLU and upsampling, the same order as Grad-CAM's).

Gradient-type methods (Grad-CAM++, LayerCAM) need one forward and one backward pass for the
whole batch. Ablation-CAM and Score-CAM need one forward pass per (image, channel): the rows are
stacked into passes of ``internal_batch_size`` rows (``"auto"``: about 4M input elements per
pass, as for Integrated Gradients), never one image at a time.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import batches, check_target_range, copies_per_pass
from .cam import GradCAM, capture_layer, get_layer, layer_gradients
from .registry import METHODS

SCORES = ("softmax", "logit")


def target_scores(logits: torch.Tensor, target: torch.Tensor, score: str) -> torch.Tensor:
    """Each row's target score (B,): the logit, or the softmax probability.

    Example:
        >>> target_scores(torch.tensor([[0.0, 0.0]]), torch.tensor([1]), "softmax").tolist()
        [0.5]
    """
    if score == "softmax":
        logits = torch.softmax(logits, dim=1)
    return logits.gather(1, target.view(-1, 1)).squeeze(1)


def check_score(score: str) -> str:
    """``score`` if it is one of ``SCORES``; a ValueError otherwise."""
    if score not in SCORES:
        raise ValueError(f"score must be one of {', '.join(SCORES)}; got {score!r}")
    return score


def rows_per_pass(internal_batch_size: int | str | None, x: torch.Tensor, rows: int) -> int:
    """Rows (perturbed inputs like one row of ``x``) per forward pass, at most ``rows``.

    Example:
        >>> rows_per_pass("auto", torch.zeros(2, 3, 224, 224), 1000)
        64
        >>> rows_per_pass(10, torch.zeros(2, 1, 8, 8), 25)
        10
        >>> rows_per_pass(None, torch.zeros(1, 4), 7)
        7
    """
    return copies_per_pass(internal_batch_size, x[:1], max(1, rows))


def _weighted_sum(weights: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
    return torch.relu((weights[:, :, None, None] * acts).sum(dim=1, keepdim=True))


def layer_gradcam_plus_plus(model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                            layer: str, who: str = "gradcam_plus_plus") -> torch.Tensor:
    """Grad-CAM++ at the resolution of ``layer`` (B, 1, h, w) (see the module docstring)."""
    acts, g, _ = layer_gradients(model, x, target, layer, who)
    g2 = g * g
    denom = 2 * g2 + acts.sum(dim=(2, 3), keepdim=True) * g2 * g
    safe = torch.where(denom != 0, denom, torch.ones_like(denom))
    alpha = torch.where(denom != 0, g2 / safe, torch.zeros_like(denom))
    weights = (alpha * torch.relu(g)).sum(dim=(2, 3))
    return _weighted_sum(weights, acts)


def layer_layercam(model: nn.Module, x: torch.Tensor, target: torch.Tensor, layer: str,
                   who: str = "layercam") -> torch.Tensor:
    """LayerCAM at the resolution of ``layer`` (B, 1, h, w)."""
    acts, g, _ = layer_gradients(model, x, target, layer, who)
    return torch.relu((torch.relu(g) * acts).sum(dim=1, keepdim=True))


def _clean_pass(model: nn.Module, x: torch.Tensor, target: torch.Tensor, layer: str, who: str
                ) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        logits, acts = capture_layer(model, x, layer, who, grad=False)
    check_target_range(target, logits.shape[1], who)
    return logits, acts


def layer_ablation_cam(model: nn.Module, x: torch.Tensor, target: torch.Tensor, layer: str,
                       internal_batch_size: int | str | None = "auto",
                       who: str = "ablation_cam") -> torch.Tensor:
    """Ablation-CAM at the resolution of ``layer`` (B, 1, h, w).

    Row ``r`` of a pass is image ``b_r`` with channel ``k_r`` of the layer's output set to zero
    (a forward hook multiplies the output by a 0/1 mask, one per row).
    """
    logits, acts = _clean_pass(model, x, target, layer, who)
    y = logits.gather(1, target.view(-1, 1)).squeeze(1)
    b_idx, k_idx = (acts.flatten(2) != 0).any(dim=2).nonzero(as_tuple=True)
    ablated = torch.zeros(acts.shape[:2], dtype=y.dtype, device=y.device)
    module = get_layer(model, layer, who)
    keep: list[torch.Tensor] = []

    def hook(_m: nn.Module, _i: Any, out: Any) -> Any:
        return out * keep[0]

    per = rows_per_pass(internal_batch_size, x, len(b_idx))
    for sl in batches(len(b_idx), per):
        b, k = b_idx[sl], k_idx[sl]
        mask = torch.ones(len(b), acts.shape[1], 1, 1, dtype=acts.dtype, device=acts.device)
        mask[torch.arange(len(b), device=acts.device), k] = 0
        keep[:] = [mask]
        handle = module.register_forward_hook(hook)
        try:
            with torch.no_grad():
                out = model(x[b])
        finally:
            handle.remove()
        ablated[b, k] = out.gather(1, target[b].view(-1, 1)).squeeze(1)
    weights = (y[:, None] - ablated) / torch.where(y != 0, y, torch.ones_like(y))[:, None]
    touched = torch.zeros_like(ablated, dtype=torch.bool)
    touched[b_idx, k_idx] = True
    weights = torch.where(touched & (y[:, None] != 0), weights, torch.zeros_like(weights))
    return _weighted_sum(weights, acts)


def layer_score_cam(model: nn.Module, x: torch.Tensor, target: torch.Tensor, layer: str,
                    internal_batch_size: int | str | None = "auto", score: str = "softmax",
                    who: str = "score_cam") -> torch.Tensor:
    """Score-CAM at the resolution of ``layer`` (B, 1, h, w).

    Row ``r`` of a pass is ``x[b_r] * M`` with ``M`` channel ``k_r`` of image ``b_r``'s
    activations, upsampled bilinearly (``align_corners=False``) to the input size and min-max
    normalised; constant channels are not run (weight 0).
    """
    check_score(score)
    _, acts = _clean_pass(model, x, target, layer, who)
    flat = acts.flatten(2)
    b_idx, k_idx = (flat.amax(dim=2) > flat.amin(dim=2)).nonzero(as_tuple=True)
    weights = torch.zeros(acts.shape[:2], dtype=acts.dtype, device=acts.device)
    size = (x.shape[2], x.shape[3])
    per = rows_per_pass(internal_batch_size, x, len(b_idx))
    with torch.no_grad():
        for sl in batches(len(b_idx), per):
            b, k = b_idx[sl], k_idx[sl]
            up = F.interpolate(acts[b, k].unsqueeze(1), size=size, mode="bilinear",
                               align_corners=False)
            lo, hi = up.amin(dim=(2, 3), keepdim=True), up.amax(dim=(2, 3), keepdim=True)
            ok = hi > lo
            norm = (up - lo) / torch.where(ok, hi - lo, torch.ones_like(hi))
            s = target_scores(model(x[b] * norm), target[b], score)
            weights[b, k] = torch.where(ok.view(-1), s.to(weights.dtype), torch.zeros_like(s))
    return _weighted_sum(weights, acts)


@METHODS.register("gradcam_plus_plus")
class GradCAMPlusPlus(GradCAM):
    """Grad-CAM++ (Chattopadhay et al. 2018), upsampled to the input: (B, 1, H, W).

    Args:
        layer, upsample: as for :class:`~.cam.GradCAM`.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(),
        ...                       nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3))
        >>> GradCAMPlusPlus()(model, torch.randn(2, 1, 8, 8), "predicted").shape
        torch.Size([2, 1, 8, 8])
    """

    name = "gradcam_plus_plus"

    def layer_map(self, model: Any, x: torch.Tensor, target: torch.Tensor, layer: str
                  ) -> torch.Tensor:
        return layer_gradcam_plus_plus(model, x, target, layer, who=self.name)


@METHODS.register("layercam")
class LayerCAM(GradCAM):
    """LayerCAM (Jiang et al. 2021), upsampled to the input: (B, 1, H, W).

    Args:
        layer, upsample: as for :class:`~.cam.GradCAM`.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(),
        ...                       nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3))
        >>> LayerCAM(layer="0")(model, torch.randn(2, 1, 8, 8), "predicted").shape
        torch.Size([2, 1, 8, 8])
    """

    name = "layercam"

    def layer_map(self, model: Any, x: torch.Tensor, target: torch.Tensor, layer: str
                  ) -> torch.Tensor:
        return layer_layercam(model, x, target, layer, who=self.name)


class _PerturbCAM(GradCAM):
    """A CAM method with one forward pass per (image, channel), batched."""

    def __init__(self, layer: str | None = None, upsample: str = "bilinear",
                 internal_batch_size: int | str | None = "auto") -> None:
        super().__init__(layer=layer, upsample=upsample)
        copies_per_pass(internal_batch_size, torch.zeros(1, 1), 1)  # validates
        self.internal_batch_size = internal_batch_size
        self._settings["internal_batch_size"] = internal_batch_size


@METHODS.register("ablation_cam")
class AblationCAM(_PerturbCAM):
    """Ablation-CAM (Desai & Ramaswamy 2020), upsampled to the input: (B, 1, H, W).

    Args:
        layer, upsample: as for :class:`~.cam.GradCAM`.
        internal_batch_size: rows (image with one channel ablated) per forward pass; None: all
            at once; "auto" (default): about 4M input elements per pass, 64-256 rows.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(),
        ...                       nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3))
        >>> AblationCAM()(model, torch.randn(2, 1, 8, 8), "predicted").shape
        torch.Size([2, 1, 8, 8])
    """

    name = "ablation_cam"

    def layer_map(self, model: Any, x: torch.Tensor, target: torch.Tensor, layer: str
                  ) -> torch.Tensor:
        return layer_ablation_cam(model, x, target, layer, self.internal_batch_size,
                                  who=self.name)


@METHODS.register("score_cam")
class ScoreCAM(_PerturbCAM):
    """Score-CAM (Wang et al. 2020), upsampled to the input: (B, 1, H, W).

    Args:
        layer, upsample: as for :class:`~.cam.GradCAM`.
        internal_batch_size: rows (masked images) per forward pass, as for
            :class:`AblationCAM`.
        score: "softmax" (default, the authors' code) or "logit": the target score of a masked
            image.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(),
        ...                       nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3))
        >>> ScoreCAM()(model, torch.randn(2, 1, 8, 8), "predicted").shape
        torch.Size([2, 1, 8, 8])
    """

    name = "score_cam"

    def __init__(self, layer: str | None = None, upsample: str = "bilinear",
                 internal_batch_size: int | str | None = "auto", score: str = "softmax"
                 ) -> None:
        super().__init__(layer=layer, upsample=upsample, internal_batch_size=internal_batch_size)
        self.score = check_score(score)
        self._settings["score"] = score

    def layer_map(self, model: Any, x: torch.Tensor, target: torch.Tensor, layer: str
                  ) -> torch.Tensor:
        return layer_score_cam(model, x, target, layer, self.internal_batch_size, self.score,
                               who=self.name)
