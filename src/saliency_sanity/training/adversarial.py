"""Projected gradient descent (PGD) attacks for adversarially robust training (Madry et al.).

Used by :func:`saliency_sanity.training.train` through ``adversarial=PGD(...)``: every training
batch is replaced by its PGD perturbation against the current model, and the robust test
accuracy (accuracy on PGD-perturbed test images) is reported next to the clean one.

The steps follow the code of Shah et al. 2021 (``robustness`` library conventions):

- ``linf``: ``x <- x + step_size * sign(grad)``, then the perturbation is clipped to
  ``[-eps, eps]`` per coordinate;
- ``l2``: ``x <- x + step_size * grad / ||grad||_2`` (per example), then the perturbation is
  scaled back onto the l2 ball of radius ``eps`` when it leaves it;
- both clamp the perturbed input to the data range ``[lo, hi]`` after every step;
- ``random_start``: the perturbation starts uniform in the l-inf box, or uniform in the l2
  ball (Gaussian direction, radius ``eps * u ** (1 / d)``), drawn from a ``torch.Generator``
  passed in by the caller (never the global RNG); off by default, as in Shah et al.

The loss maximized is the cross-entropy of the given labels. The model is put in eval mode while
the attack runs and restored afterwards (no batch-norm statistics or dropout noise change).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PGD", "robust_accuracy"]


@dataclass(frozen=True)
class PGD:
    """PGD in the l2 or l-infinity norm; all settings enter the trainer's cache key.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> atk = PGD("linf", eps=0.1, steps=3, step_size=0.05)
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> x = torch.full((2, 1, 2, 2), 0.5); y = torch.tensor([0, 1])
        >>> xa = atk.perturb(net, x, y)
        >>> bool((xa - x).abs().max() <= 0.1 + 1e-6), bool(xa.min() >= 0 and xa.max() <= 1)
        (True, True)
    """

    norm: Literal["l2", "linf"] = "linf"
    eps: float = 0.1
    steps: int = 10
    step_size: float | None = None
    random_start: bool = False
    data_range: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        if self.norm not in ("l2", "linf"):
            raise ValueError(f"PGD norm must be 'l2' or 'linf', got {self.norm!r}")
        if not self.eps > 0:
            raise ValueError(f"PGD eps must be > 0, got {self.eps}")
        if int(self.steps) != self.steps or self.steps < 1:
            raise ValueError(f"PGD steps must be an integer >= 1, got {self.steps}")
        if self.step_size is not None and not self.step_size > 0:
            raise ValueError(f"PGD step_size must be > 0, got {self.step_size}")
        lo, hi = self.data_range
        if not lo < hi:
            raise ValueError(f"PGD data_range must be (lo, hi) with lo < hi, got {self.data_range}")
        object.__setattr__(self, "data_range", (float(lo), float(hi)))

    @property
    def alpha(self) -> float:
        """The step size: ``step_size`` if given, else ``2.5 * eps / steps`` (Madry et al.)."""
        return float(self.step_size) if self.step_size is not None else 2.5 * self.eps / self.steps

    def settings(self) -> dict[str, Any]:
        """The settings as a plain dict (recorded in run.json and the cache key).

        Example:
            >>> PGD("l2", eps=0.5, steps=2).settings()["alpha"]
            0.625
        """
        return {**asdict(self), "alpha": self.alpha}

    def _project(self, delta: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            return delta.clamp(-self.eps, self.eps)
        norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
        factor = (self.eps / norms).clamp(max=1.0)
        return delta * factor.view(-1, *([1] * (delta.dim() - 1)))

    def _start(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if not self.random_start:
            return torch.zeros_like(x)
        if generator is None:
            raise ValueError("PGD(random_start=True) needs a torch.Generator (seeded) to draw "
                             "the start from; the global RNG is never used")
        if self.norm == "linf":
            u = torch.rand(x.shape, generator=generator, dtype=x.dtype)
            return (2 * u - 1) * self.eps
        direction = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        direction = direction / direction.flatten(1).norm(dim=1).clamp_min(1e-12).view(
            -1, *([1] * (x.dim() - 1)))
        d = x[0].numel()
        radius = self.eps * torch.rand(len(x), generator=generator, dtype=x.dtype) ** (1.0 / d)
        return direction * radius.view(-1, *([1] * (x.dim() - 1)))

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """The PGD-perturbed inputs (detached), inside the ball and the data range.

        The model's train/eval mode and its parameters' ``requires_grad`` are restored after
        the attack; parameter gradients are not touched (the gradient is taken w.r.t. x only).
        """
        lo, hi = self.data_range
        x = x.detach()
        was_training = model.training
        model.eval()
        try:
            delta = self._project(self._start(x, generator))
            delta = (x + delta).clamp(lo, hi) - x
            for _ in range(int(self.steps)):
                xa = (x + delta).requires_grad_(True)
                with torch.enable_grad():
                    loss = F.cross_entropy(model(xa), y, reduction="sum")
                    (grad,) = torch.autograd.grad(loss, xa)
                if self.norm == "linf":
                    step = grad.sign()
                else:
                    gn = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
                    step = grad / gn.view(-1, *([1] * (grad.dim() - 1)))
                delta = self._project(delta + self.alpha * step)
                delta = (x + delta).clamp(lo, hi) - x
            return (x + delta).detach()
        finally:
            model.train(was_training)


def robust_accuracy(model: nn.Module, attack: PGD, x: torch.Tensor, y: torch.Tensor,
                    seed: int = 0, batch_size: int = 500) -> float:
    """Accuracy on PGD-perturbed copies of ``x`` (random starts drawn from ``seed``).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> acc = robust_accuracy(net, PGD("l2", eps=0.1, steps=2), torch.rand(6, 1, 2, 2),
        ...                       torch.zeros(6, dtype=torch.long))
        >>> 0.0 <= acc <= 1.0
        True
    """
    if len(y) == 0:
        return float("nan")
    gen = torch.Generator().manual_seed(int(seed))
    correct = 0
    for i in range(0, len(y), batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        xa = attack.perturb(model, xb, yb, gen)
        with torch.no_grad():
            correct += int((model(xa).argmax(1) == yb).sum())
    return correct / len(y)
