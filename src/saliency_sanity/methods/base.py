"""The ``Method`` base class: input checks, model guard, target resolution, then ``attribute``.

A method maps ``(model, x, target)`` to a batch of raw saliency maps. Subclasses implement one
function, :meth:`Method.attribute`; :meth:`Method.__call__` does everything around it:

1. checks ``x`` (float tensor of rank 2 or 4, finite, non-empty) and ``target``;
2. puts the model in eval mode and guarantees that, on exit (also after an exception), its
   train/eval modes, ``requires_grad`` flags, buffers, ``.grad`` tensors and hooks are exactly
   as they were (:func:`model_guard`);
3. turns ``target="predicted"`` into the argmax of the model's logits on the clean ``x``;
4. runs ``attribute`` with gradients enabled, and returns a detached map on ``x.device``.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from .._guard import model_guard

Target = torch.Tensor | str | int

class Method:
    """Base class of every attribution method and control.

    Subclasses set the class attributes below, store their settings in ``__init__`` and
    implement :meth:`attribute`. Settings are recorded by :meth:`settings` from the instance's
    ``_settings`` dict.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> class Ones(Method):
        ...     name = "ones"
        ...     def attribute(self, model, x, target):
        ...         return torch.ones_like(x)
        >>> model = nn.Linear(3, 2)
        >>> Ones()(model, torch.zeros(2, 3), "predicted").shape
        torch.Size([2, 3])
    """

    name: str = "method"
    #: the method calls the model (controls do not)
    needs_model: bool = True
    #: a control: a "map" that needs neither model nor data
    is_control: bool = False
    #: takes a seed (noise, random maps); checks reseed it per batch or stage
    seeded: bool = False
    #: needs image inputs (B, C, H, W)
    needs_image: bool = False
    #: needs a convolutional layer in the model
    needs_conv: bool = False
    #: averages over noisy inputs (SmoothGrad, VarGrad): sMPRT leaves these out by default
    averages_noise: bool = False
    #: safe under activation reuse (``engine.reuse``): one differentiation of each output.
    #: False for plug-ins (they may differentiate twice) and any wrapper around one, unless the
    #: plug-in says so.
    reuse_safe: bool = False
    #: the map is a function of the input gradient of the target logit alone
    #: (:meth:`from_input_gradient`), so the engine computes that gradient once for all such
    #: methods
    input_gradient_map: bool = False

    def applies(self, model: Any, x: torch.Tensor) -> bool:
        """Whether the method can explain ``model`` on inputs like ``x`` (used to pick the
        default methods).

        Example:
            >>> from saliency_sanity import methods
            >>> methods.get("gradcam").applies(nn.Linear(3, 2), torch.zeros(1, 3))
            False
        """
        if self.needs_image and x.dim() != 4:
            return False
        if self.needs_conv:
            return isinstance(model, nn.Module) and any(
                isinstance(m, (nn.Conv2d, nn.Conv3d)) for m in model.modules())
        return True

    def from_input_gradient(self, grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor | None:
        """The map computed from the input gradient ``grad`` of the target logit (methods with
        ``input_gradient_map``); None for other methods."""
        return None

    def __init__(self) -> None:
        self._settings: dict[str, Any] = {}

    # -- public API ---------------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        """JSON-able settings, including ``name`` (nested methods appear as nested dicts)."""
        out: dict[str, Any] = {"name": self.name}
        for key, value in getattr(self, "_settings", {}).items():
            out[key] = _jsonable(value)
        return out

    def resolved_settings(self, model: Any, x: torch.Tensor) -> dict[str, Any]:
        """:meth:`settings` with choices made for this model and input filled in (Grad-CAM's
        automatic layer); checks record these in ``run.json``."""
        return self.settings()

    def reseeded(self, seed: int) -> Method:
        """A copy of this method with a new seed (``self`` when the method is not seeded)."""
        if not self.seeded:
            return self
        new = copy.copy(self)
        new._settings = dict(self._settings)
        new._reseed(int(seed))
        return new

    def __call__(self, model: Any, x: torch.Tensor, target: Target = "predicted", *,
                 checked_target: bool = False) -> torch.Tensor:
        """Validate, guard the model, resolve ``target``, and return ``attribute``'s map.

        ``checked_target=True`` says that ``target`` is a LongTensor already checked against
        this model's logits (the engine does so), which saves the forward pass that resolving
        and checking it costs.
        """
        check_input(x, who=self.name)
        if not self.needs_model:
            tgt = _check_target_shape(target, x)
            with _grad_enabled():
                out = self.attribute(model, x.detach(), tgt)
            return check_output(out, x, who=self.name)
        if not callable(model):
            raise TypeError(f"{self.name}: model must be an nn.Module (or a callable), got "
                            f"{type(model).__name__}")
        with model_guard(model), _grad_enabled():
            tgt = (target if checked_target and isinstance(target, torch.Tensor)
                   else resolve_target(model, x, target, who=self.name))
            out = self.attribute(model, x.detach(), tgt)
            return check_output(out, x, who=self.name)

    def attribute(self, model: Any, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Compute raw maps for a validated ``x`` and a LongTensor ``target`` of shape (B,).

        Called with the model already in eval mode and guarded, gradients enabled.
        """
        raise NotImplementedError

    # -- helpers for subclasses ---------------------------------------------------------------
    def _reseed(self, seed: int) -> None:
        self.seed = seed
        self._settings["seed"] = seed

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings().items() if k != "name")
        return f"{type(self).__name__}({self.name!r}{', ' if args else ''}{args})"


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------
def check_input(x: Any, who: str = "method") -> None:
    """Raise a clear error unless ``x`` is a finite float tensor of shape (B, D) or (B, C, H, W).

    Example:
        >>> check_input(torch.zeros(2, 3))
        >>> check_input(torch.zeros(3))
        Traceback (most recent call last):
        ...
        ValueError: method: x must have shape (B, C, H, W) or (B, D); got shape (3,)
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{who}: x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{who}: x must be a floating-point tensor, got dtype {x.dtype}")
    if x.ndim not in (2, 4):
        raise ValueError(
            f"{who}: x must have shape (B, C, H, W) or (B, D); got shape {tuple(x.shape)}"
        )
    if x.shape[0] == 0 or x.numel() == 0:
        raise ValueError(f"{who}: x is empty (shape {tuple(x.shape)})")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{who}: x contains NaN or inf values")


def _check_target_shape(target: Target, x: torch.Tensor) -> torch.Tensor | str:
    """Check a target's type and length (not its range); returns "predicted" or a LongTensor."""
    if isinstance(target, str):
        if target != "predicted":
            raise ValueError(f'target must be a LongTensor of class indices or "predicted", '
                             f"got {target!r}")
        return target
    if isinstance(target, bool):
        raise TypeError("target must be a LongTensor of class indices, got a bool")
    if isinstance(target, int):
        return torch.full((x.shape[0],), target, dtype=torch.long, device=x.device)
    if not isinstance(target, torch.Tensor):
        raise TypeError(f'target must be a LongTensor (B,) or "predicted", got '
                        f"{type(target).__name__}")
    if target.dtype == torch.bool or target.is_floating_point() or target.is_complex():
        raise TypeError(f"target must hold integer class indices, got dtype {target.dtype}")
    if target.ndim != 1 or target.shape[0] != x.shape[0]:
        raise ValueError(
            f"target must have shape ({x.shape[0]},) to match x's batch, got {tuple(target.shape)}"
        )
    if bool((target < 0).any()):
        raise ValueError(f"target contains negative class indices: {target.tolist()}")
    return target.to(device=x.device, dtype=torch.long)


def check_logits(out: Any, batch: int, who: str = "method") -> torch.Tensor:
    """The (batch, classes) logits of a model output ``out``: a tensor, or an output object or
    dict with a ``logits`` entry (Hugging Face's ``ImageClassifierOutput``); raise otherwise.

    Example:
        >>> check_logits({"logits": torch.zeros(2, 3)}, 2).shape
        torch.Size([2, 3])
    """
    if not isinstance(out, torch.Tensor):
        found = out.get("logits") if isinstance(out, Mapping) else getattr(out, "logits", None)
        if not isinstance(found, torch.Tensor):
            raise TypeError(f"{who}: the model must return a tensor of logits (B, classes) or "
                            f"an object with a 'logits' tensor, got {type(out).__name__}")
        out = found
    if out.ndim != 2 or out.shape[0] != batch:
        raise ValueError(f"{who}: the model's output must have shape ({batch}, classes), got "
                         f"{tuple(out.shape)}")
    return out


def check_target_range(target: torch.Tensor, classes: int, who: str = "method") -> None:
    """Raise unless every class index lies in ``[0, classes)``."""
    if target.numel() and (int(target.max()) >= classes or int(target.min()) < 0):
        raise ValueError(
            f"{who}: target out of range for a model with {classes} classes: {target.tolist()}"
        )


def resolve_target(model: Any, x: torch.Tensor, target: Target, who: str = "method"
                   ) -> torch.Tensor:
    """Validate ``target`` against ``model`` and ``x``; "predicted" becomes the logits' argmax.

    One forward pass without gradients is run on the clean ``x`` (also to check the output
    shape and the target range).
    """
    tgt = _check_target_shape(target, x)
    with torch.no_grad():
        logits = check_logits(model(x.detach()), x.shape[0], who)
    if isinstance(tgt, str):
        return logits.argmax(dim=1)
    check_target_range(tgt, logits.shape[1], who)
    return tgt


def predicted_targets(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Class indices predicted by ``model`` on ``x`` (argmax of the logits, model in eval mode).

    The model is left exactly as it was.

    Example:
        >>> model = nn.Linear(2, 3)
        >>> predicted_targets(model, torch.zeros(4, 2)).shape
        torch.Size([4])
    """
    check_input(x, who="predicted_targets")
    with model_guard(model):
        return resolve_target(model, x, "predicted", who="predicted_targets")


def check_output(out: Any, x: torch.Tensor, who: str = "method") -> torch.Tensor:
    """Check a map's shape (x's, or (B, 1, H, W)); return it detached, on ``x.device``."""
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"{who}: attribution must be a tensor, got {type(out).__name__}")
    ok = tuple(out.shape) == tuple(x.shape) or (
        x.ndim == 4 and tuple(out.shape) == (x.shape[0], 1, x.shape[2], x.shape[3])
    )
    if not ok:
        raise ValueError(f"{who}: attribution has shape {tuple(out.shape)}, expected x's shape "
                         f"{tuple(x.shape)} or (B, 1, H, W)")
    out = out.detach()
    if not out.is_floating_point():
        out = out.to(x.dtype)
    return out.to(x.device)


@contextlib.contextmanager
def _grad_enabled() -> Iterator[None]:
    with torch.inference_mode(False), torch.enable_grad():
        yield


# ---------------------------------------------------------------------------------------------
# shared numerics
# ---------------------------------------------------------------------------------------------
def target_score(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                 target: torch.Tensor, who: str = "method") -> torch.Tensor:
    """Sum over the batch of each row's target logit (its gradient is the per-row gradient)."""
    logits = check_logits(model(x), x.shape[0], who)
    check_target_range(target, logits.shape[1], who)
    return logits.gather(1, target.view(-1, 1)).sum()


def input_gradient(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                   target: torch.Tensor, context: Callable[[], Any] | None = None,
                   who: str = "method") -> torch.Tensor:
    """d logit[target] / d x for each row of ``x`` (a detached tensor of x's shape).

    ``context`` (a zero-argument factory of a context manager) wraps the forward pass only;
    guided backprop uses it to substitute its ReLUs.
    """
    xg = x.detach().clone().requires_grad_(True)
    ctx = context() if context is not None else contextlib.nullcontext()
    with ctx:
        score = target_score(model, xg, target, who)
    (grad,) = torch.autograd.grad(score, xg)
    return grad.detach()


AUTO_ROWS_ELEMENTS = 2**22  # input elements per pass when internal_batch_size="auto"
AUTO_ROWS_MIN, AUTO_ROWS_MAX = 64, 256


def copies_per_pass(internal_batch_size: int | str | None, x: torch.Tensor, copies: int) -> int:
    """How many copies of the batch ``x`` (noisy samples, integration steps) go into one pass.

    ``None``: all ``copies`` at once. An int: that many rows per pass, rounded down to whole
    copies of the batch (at least one). ``"auto"``: about 4M input elements per pass, clamped to
    64-256 rows (larger passes were slower on a CPU): 8 MNIST images with 16 IG steps run in one
    pass, ImageNet-sized inputs in passes of 64 rows.

    Example:
        >>> copies_per_pass("auto", torch.zeros(8, 1, 28, 28), 16)   # 128 rows: one pass
        16
        >>> copies_per_pass("auto", torch.zeros(8, 1, 28, 28), 50)   # 256 rows per pass
        32
        >>> copies_per_pass("auto", torch.zeros(8, 3, 224, 224), 50)  # 64 rows per pass
        8
    """
    bsz = max(1, x.shape[0])
    if internal_batch_size is None or internal_batch_size == 0:
        return copies
    if internal_batch_size == "auto":
        per_sample = max(1, x[0].numel())
        rows = min(AUTO_ROWS_MAX, max(AUTO_ROWS_MIN, AUTO_ROWS_ELEMENTS // per_sample))
    elif isinstance(internal_batch_size, int) and internal_batch_size > 0:
        rows = internal_batch_size
    else:
        raise ValueError(
            f"internal_batch_size must be a positive int, None or 'auto'; got "
            f"{internal_batch_size!r}"
        )
    return max(1, min(copies, rows // bsz))


def batches(n: int, size: int | None) -> Iterator[slice]:
    """Slices covering ``range(n)`` in chunks of at most ``size`` (all at once if None)."""
    step = n if not size else max(1, int(size))
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))


def _jsonable(value: Any) -> Any:
    if isinstance(value, Method):
        return value.settings()
    if isinstance(value, torch.Tensor):
        if value.numel() == 1:
            return float(value)
        return f"tensor{tuple(value.shape)}"
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return getattr(value, "__name__", repr(value))
