"""SmoothGrad, VarGrad and IG-SmoothGrad: wrappers that average a method over noisy inputs.

Noise sample ``s`` for input ``i`` is ``sigma_i * eps_s[i]`` with ``sigma_i = noise * (max x_i -
min x_i)`` (Smilkov et al. 2017) and ``eps_s`` drawn from a private ``torch.Generator`` seeded
with ``seed``: one draw of x's shape per sample, in sample order, on the CPU, then moved to x's
device. The maps are therefore bit-identical on the CPU for the same seed whatever
``internal_batch_size`` is, and the global RNG is never used. Targets are never recomputed on
the noisy inputs: "predicted" means the prediction on the clean input.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from .base import Method, batches, copies_per_pass
from .gradient import IntegratedGradients
from .registry import METHODS


def _sigma(x: torch.Tensor, noise: float) -> torch.Tensor:
    flat = x.detach().reshape(x.shape[0], -1)
    rng = flat.amax(dim=1) - flat.amin(dim=1)
    return (noise * rng).view(-1, *([1] * (x.ndim - 1)))


def _noise_draws(x: torch.Tensor, samples: int, noise: float, seed: int) -> Iterator[torch.Tensor]:
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    sigma = _sigma(x, noise)
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    for _ in range(samples):
        eps = torch.randn(tuple(x.shape), generator=gen, dtype=dtype, device="cpu")
        yield eps.to(device=x.device, dtype=x.dtype) * sigma


def gaussian_noise(x: torch.Tensor, samples: int, noise: float, seed: int) -> torch.Tensor:
    """The noise the wrappers add, as one tensor (samples, *x.shape).

    Example:
        >>> x = torch.tensor([[0.0, 2.0]])
        >>> n = gaussian_noise(x, samples=3, noise=0.1, seed=0)
        >>> n.shape, torch.equal(n, gaussian_noise(x, 3, 0.1, 0))
        (torch.Size([3, 1, 2]), True)
    """
    return torch.stack(list(_noise_draws(x, samples, noise, seed)))


def _resolve_base(base: Any) -> Method:
    from .adapters import resolve

    return resolve(base)


class NoiseWrapper(Method):
    """Average (``mode="mean"``), mean square (``"squared"``) or variance (``"variance"``)
    of a base method's maps over ``samples`` noisy copies of the input."""

    seeded = True
    averages_noise = True

    def __init__(self, base: Any = "gradient", samples: int = 50, noise: float = 0.15,
                 seed: int = 0, mode: str = "mean", internal_batch_size: int | str | None = "auto",
                 name: str = "smoothgrad") -> None:
        super().__init__()
        if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
            raise ValueError(f"samples must be a positive integer, got {samples!r}")
        if not (isinstance(noise, (int, float)) and noise >= 0):
            raise ValueError(f"noise must be a non-negative fraction of the input range, "
                             f"got {noise!r}")
        if mode not in ("mean", "squared", "variance"):
            raise ValueError(f"mode must be 'mean', 'squared' or 'variance', got {mode!r}")
        self.base = _resolve_base(base)
        self.name = name
        self.needs_model = self.base.needs_model
        self.needs_image, self.needs_conv = self.base.needs_image, self.base.needs_conv
        self.reuse_safe = self.base.reuse_safe  # a wrapper is as safe as what it wraps
        self.samples, self.noise, self.seed, self.mode = samples, float(noise), int(seed), mode
        self.internal_batch_size = internal_batch_size
        self._settings = {"base": self.base, "samples": samples, "noise": float(noise),
                          "seed": int(seed), "internal_batch_size": internal_batch_size}

    def _reseed(self, seed: int) -> None:
        super()._reseed(seed)
        if self.base.seeded:
            self.base = self.base.reseeded(seed)
            self._settings["base"] = self.base

    def attribute(self, model: Any, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        bsz = x.shape[0]
        per_pass = copies_per_pass(self.internal_batch_size, x, self.samples)
        draws = _noise_draws(x, self.samples, self.noise, self.seed)
        count = 0
        mean: torch.Tensor | None = None
        m2: torch.Tensor | None = None
        for sl in batches(self.samples, per_pass):
            k = sl.stop - sl.start
            eps = torch.stack([next(draws) for _ in range(k)])
            noisy = (x.unsqueeze(0) + eps).reshape(k * bsz, *x.shape[1:])
            maps = self.base.attribute(model, noisy, target.repeat(k)).detach()
            maps = maps.view(k, bsz, *maps.shape[1:])
            if self.mode == "squared":
                maps = maps * maps
            if self.mode != "variance":
                mean = maps.sum(0) if mean is None else mean + maps.sum(0)
                continue
            # Chan et al.'s pairwise update of the mean and the sum of squared deviations
            c_mean = maps.mean(0)
            c_m2 = ((maps - c_mean) ** 2).sum(0)
            if mean is None or m2 is None:
                mean, m2 = c_mean, c_m2
            else:
                delta = c_mean - mean
                tot = count + k
                mean = mean + delta * (k / tot)
                m2 = m2 + c_m2 + delta * delta * (count * k / tot)
            count += k
        assert mean is not None
        if self.mode == "variance":
            assert m2 is not None
            return m2 / self.samples
        return mean / self.samples


@METHODS.register("smoothgrad", default=4)
def smoothgrad(base: Any = "gradient", samples: int = 50, noise: float = 0.15, seed: int = 0,
               squared: bool = False,
               internal_batch_size: int | str | None = "auto") -> NoiseWrapper:
    """SmoothGrad (Smilkov et al. 2017): the mean of ``base``'s maps over noisy inputs.

    Args:
        base: the method to smooth (a registered name, a Method, a callable or a Captum class).
        samples: number of noisy copies (paper: 50).
        noise: noise standard deviation as a fraction of each input's max - min (paper: 0.15).
        seed: seed of the private noise generator.
        squared: average the squared maps instead ("SmoothGrad-squared"; paper: no).
        internal_batch_size: rows per call of ``base`` (rounded down to whole copies of the
            batch, at least one); None runs all samples at once; "auto" (default) sizes calls
            by the input (see ``copies_per_pass``).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Linear(3, 2)   # linear: every noisy gradient equals the weights
        >>> sg = smoothgrad(samples=4, seed=1)(model, torch.randn(2, 3), torch.tensor([0, 0]))
        >>> torch.allclose(sg, model.weight[0].detach().expand(2, 3))
        True
    """
    return NoiseWrapper(base, samples, noise, seed, "squared" if squared else "mean",
                        internal_batch_size, name="smoothgrad")


@METHODS.register("vargrad", default=5)
def vargrad(base: Any = "gradient", samples: int = 25, noise: float = 0.15, seed: int = 0,
            internal_batch_size: int | str | None = "auto") -> NoiseWrapper:
    """VarGrad (Adebayo et al. 2018): the variance (1/N) of ``base``'s maps over noisy inputs.

    Settings as for :func:`smoothgrad` (paper: 25 samples, noise 0.15).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Linear(3, 2)   # linear: no variance at all
        >>> vg = vargrad(samples=5)(model, torch.randn(2, 3), torch.tensor([1, 0]))
        >>> float(vg.abs().max()) < 1e-12
        True
    """
    return NoiseWrapper(base, samples, noise, seed, "variance", internal_batch_size,
                        name="vargrad")


@METHODS.register("ig_smoothgrad")
def ig_smoothgrad(samples: int = 50, noise: float = 0.15, seed: int = 0, steps: int = 50,
                  baseline: Any = None, rule: str = "riemann_right", squared: bool = False,
                  internal_batch_size: int | str | None = "auto") -> NoiseWrapper:
    """SmoothGrad over Integrated Gradients (the baseline is NOT noised; ``x`` is).

    Costs ``samples * steps`` gradient evaluations per input (2500 with the defaults).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> m = ig_smoothgrad(samples=2, steps=3)
        >>> m.settings()["base"]["name"], m(nn.Linear(3, 2), torch.randn(1, 3)).shape
        ('integrated_gradients', torch.Size([1, 3]))
    """
    ig = IntegratedGradients(steps=steps, baseline=baseline, rule=rule,
                             internal_batch_size=internal_batch_size)
    return NoiseWrapper(ig, samples, noise, seed, "squared" if squared else "mean",
                        internal_batch_size, name="ig_smoothgrad")
