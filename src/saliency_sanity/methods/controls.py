"""Controls: "maps" that ignore the model, scored like methods (Adebayo et al. 2018).

``edge_sobel`` is the paper's edge-detector control; ``random_gaussian`` and ``random_uniform``
give independent noise per element (seeded with a private generator, so the check engine can
call ``reseeded(stage_seed)`` for fresh maps per stage); ``constant`` is a flat map.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .base import Method
from .registry import METHODS


class Control(Method):
    """Base of the controls: no model needed (``model`` may be None), target ignored."""

    needs_model = False
    is_control = True
    reuse_safe = True


@METHODS.register("edge_sobel", default=1)
class EdgeSobel(Control):
    """Sobel edge magnitude of each channel of the input, ``sqrt(gx^2 + gy^2)``.

    Unnormalised 3x3 Sobel kernels ([1, 2, 1] x [-1, 0, 1]), borders replicated: the same
    numbers as ``scipy.ndimage.sobel`` along each axis with its default ``mode="reflect"``.

    Example:
        >>> import torch
        >>> x = torch.zeros(1, 1, 4, 4); x[..., 2:] = 1.0
        >>> EdgeSobel()(None, x)[0, 0, 0].tolist()
        [0.0, 4.0, 4.0, 0.0]
    """

    name = "edge_sobel"
    needs_image = True

    def attribute(self, model: Any, x: torch.Tensor, target: Any) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"edge_sobel needs image inputs (B, C, H, W); got shape "
                             f"{tuple(x.shape)}")
        b, c, h, w = x.shape
        smooth = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype, device=x.device)
        diff = torch.tensor([-1.0, 0.0, 1.0], dtype=x.dtype, device=x.device)
        kx = torch.outer(smooth, diff).view(1, 1, 3, 3)  # derivative along the width
        ky = torch.outer(diff, smooth).view(1, 1, 3, 3)  # derivative along the height
        padded = F.pad(x.detach().reshape(b * c, 1, h, w), (1, 1, 1, 1), mode="replicate")
        gx = F.conv2d(padded, kx)
        gy = F.conv2d(padded, ky)
        return torch.sqrt(gx * gx + gy * gy).view(b, c, h, w)


class _RandomControl(Control):
    seeded = True

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.seed = int(seed)
        self._settings = {"seed": self.seed}

    def _draw(self, shape: tuple[int, ...], gen: torch.Generator, dtype: torch.dtype
              ) -> torch.Tensor:
        raise NotImplementedError

    def attribute(self, model: Any, x: torch.Tensor, target: Any) -> torch.Tensor:
        gen = torch.Generator(device="cpu").manual_seed(self.seed)
        dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
        return self._draw(tuple(x.shape), gen, dtype).to(device=x.device, dtype=x.dtype)


@METHODS.register("random_gaussian", default=2)
class RandomGaussian(_RandomControl):
    """Independent standard normal values per element of x's shape (seeded).

    Example:
        >>> import torch
        >>> a = RandomGaussian(seed=3)(None, torch.zeros(2, 5))
        >>> torch.equal(a, RandomGaussian(seed=3)(None, torch.ones(2, 5)))
        True
    """

    name = "random_gaussian"

    def _draw(self, shape: tuple[int, ...], gen: torch.Generator, dtype: torch.dtype
              ) -> torch.Tensor:
        return torch.randn(shape, generator=gen, dtype=dtype)


@METHODS.register("random_uniform", default=3)
class RandomUniform(_RandomControl):
    """Independent uniform values in [0, 1) per element of x's shape (seeded).

    Example:
        >>> import torch
        >>> u = RandomUniform(seed=0)(None, torch.zeros(3, 4))
        >>> bool((u >= 0).all() and (u < 1).all())
        True
    """

    name = "random_uniform"

    def _draw(self, shape: tuple[int, ...], gen: torch.Generator, dtype: torch.dtype
              ) -> torch.Tensor:
        return torch.rand(shape, generator=gen, dtype=dtype)


@METHODS.register("constant")
class Constant(Control):
    """The same value everywhere (x's shape).

    Example:
        >>> import torch
        >>> Constant(value=2.0)(None, torch.zeros(1, 2)).tolist()
        [[2.0, 2.0]]
    """

    name = "constant"

    def __init__(self, value: float = 1.0) -> None:
        super().__init__()
        self.value = float(value)
        self._settings = {"value": self.value}

    def attribute(self, model: Any, x: torch.Tensor, target: Any) -> torch.Tensor:
        return torch.full_like(x, self.value)
