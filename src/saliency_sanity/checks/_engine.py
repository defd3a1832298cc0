"""Pieces shared by the checks: resolving methods and scores, seeds, validation, batching."""

from __future__ import annotations

import hashlib
import platform
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import methods as _methods
from .. import scores as _scores

DEFAULT_METHODS: tuple[str, ...] = (
    "gradient",
    "gradient_x_input",
    "integrated_gradients",
    "smoothgrad",
    "vargrad",
    "guided_backprop",
    "gradcam",
    "guided_gradcam",
)
CAM_METHODS = frozenset({"gradcam", "guided_gradcam"})
DEFAULT_CONTROLS: tuple[str, ...] = ("edge_sobel", "random_gaussian")
IMAGE_ONLY_CONTROLS = frozenset({"edge_sobel"})

# a name, a Method, a callable(model, x, target), a captum class, or (name, settings)
MethodSpec = Any


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from any parts (the same in every process and platform).

    Example:
        >>> derive_seed(0, "gradient", 3) == derive_seed(0, "gradient", 3)
        True
    """
    text = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") >> 1


def _has_conv(model: nn.Module) -> bool:
    return any(isinstance(m, (nn.Conv2d, nn.Conv3d)) for m in model.modules())


def resolve_methods(
    specs: Sequence[MethodSpec] | Mapping[str, MethodSpec] | None,
    controls: bool | Sequence[str] | None,
    model: nn.Module,
    x: torch.Tensor,
) -> dict[str, _methods.Method]:
    """Turn the user's method and control choices into ``{label: Method}``.

    ``specs=None`` selects every default method that applies to this model and input (Grad-CAM
    types need image input and a convolution). ``controls=True`` adds the default controls.
    """
    images = x.dim() == 4
    if specs is None:
        pairs: list[tuple[str | None, MethodSpec]] = [
            (None, n) for n in DEFAULT_METHODS
            if n not in CAM_METHODS or (images and _has_conv(model))
        ]
    elif isinstance(specs, Mapping):
        pairs = list(specs.items())
    elif isinstance(specs, (str, bytes)) or callable(specs):
        pairs = [(None, specs)]
    else:
        pairs = [(None, s) for s in specs]
    if controls is True:
        pairs += [(None, c) for c in DEFAULT_CONTROLS if images or c not in IMAGE_ONLY_CONTROLS]
    elif controls:
        pairs += [(None, c) for c in controls]

    out: dict[str, _methods.Method] = {}
    for label, spec in pairs:
        if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[1], Mapping):
            method = _methods.resolve(spec[0], **dict(spec[1]))
        else:
            method = _methods.resolve(spec)
        key = label or method.name
        if key in out:
            raise ValueError(
                f"method {key!r} is given twice; pass a dict {{label: spec}} to compare two "
                "settings of one method"
            )
        out[key] = method
    if not out:
        raise ValueError("no methods to evaluate: pass at least one method name")
    return out


def resolve_scores(names: str | Sequence[str] | None, x: torch.Tensor) -> dict[str, Any]:
    """``{name: Score}``; ``None`` selects every registered score that applies to the input."""
    images = x.dim() == 4
    if names is None:
        chosen = [n for n in _scores.list() if images or not _scores.get(n).requires_image]
    elif isinstance(names, str):
        chosen = [names]
    else:
        chosen = list(names)
    out = {}
    for n in chosen:
        s = _scores.get(n)
        if s.requires_image and not images:
            flat_ok = [k for k in _scores.list() if not _scores.get(k).requires_image]
            raise ValueError(
                f"score {n!r} needs image maps (B, C, H, W) but the input is {tuple(x.shape)}; "
                f"choose among: {', '.join(flat_ok)}"
            )
        out[n] = s
    if not out:
        raise ValueError("no scores to compute: pass at least one score name")
    return out


def check_inputs(x: torch.Tensor, target: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Validate the inputs and labels of a check; return them as tensors."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in (2, 4):
        raise ValueError(
            f"x must have shape (B, C, H, W) for images or (B, D) for flat inputs; got "
            f"{tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise TypeError(f"x must be a float tensor, got {x.dtype}; convert with x.float()")
    if x.shape[0] == 0:
        raise ValueError("x is empty: pass at least one input")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or inf values; clean the inputs first")
    if target is None:
        return x, None
    t = torch.as_tensor(target)
    if t.dim() != 1 or t.shape[0] != x.shape[0]:
        raise ValueError(
            f"target must be a 1-D tensor of {x.shape[0]} class indices, got shape "
            f"{tuple(t.shape)}"
        )
    if t.is_floating_point() or t.dtype == torch.bool:
        raise TypeError(f"target must hold integer class indices, got {t.dtype}")
    return x, t.long()


TARGET_MODES = ("predicted", "fixed")


def prepare(model: nn.Module, x: torch.Tensor, target: Any, target_mode: str | None,
            device: str | torch.device | None
            ) -> tuple[torch.Tensor, torch.Tensor | None, str, torch.device]:
    """Validate a check's model, inputs, target and target mode; move x (and target) to the
    device (default: the model's). ``target_mode=None`` means "fixed" when a target is given,
    else "predicted"."""
    from .._guard import model_device

    x, tgt = check_inputs(x, target)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if target_mode is None:
        target_mode = "fixed" if tgt is not None else "predicted"
    if target_mode not in TARGET_MODES:
        raise ValueError(f"target_mode must be one of {TARGET_MODES}, got {target_mode!r}")
    if tgt is not None and target_mode == "predicted":
        raise ValueError(
            "target was given but target_mode='predicted' explains each stage's predicted class; "
            "use target_mode='fixed' to explain the given classes, or drop target"
        )
    dev = torch.device(device) if device is not None else model_device(model)
    return x.to(dev), (None if tgt is None else tgt.to(dev)), target_mode, dev


def common_settings(x: torch.Tensor, target: Any, batch_size: int, dev: torch.device,
                    method_objs: Mapping[str, Any], score_objs: Mapping[str, Any]
                    ) -> dict[str, Any]:
    """The settings every check records: inputs, batching, device, methods, controls, scores."""
    return {
        "target_given": target is not None,
        "batch_size": batch_size,
        "device": str(dev),
        "n_samples": int(x.shape[0]),
        "input_shape": list(x.shape[1:]),
        "methods": {label: m.settings() for label, m in method_objs.items()},
        "controls": [label for label, m in method_objs.items() if m.is_control],
        "scores": {name: s.settings() for name, s in score_objs.items()},
    }


def batches(n: int, batch_size: int) -> list[slice]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def versions() -> dict[str, str]:
    import numpy
    import pandas
    import scipy
    import skimage

    from .. import __version__

    return {
        "saliency_sanity": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "scikit-image": skimage.__version__,
        "pandas": pandas.__version__,
    }


def method_for_call(method: Any, label: str, seed: int, stage: int, batch: int) -> Any:
    """The method to call for one (stage, batch).

    Seeded controls (random maps) get a fresh seed per stage and batch, so the control is
    independent of every other map. Seeded methods (SmoothGrad, VarGrad) get a seed per batch that
    is the same at every stage: the noise is held fixed, so map changes come from the model alone.
    """
    if not getattr(method, "seeded", False):
        return method
    if getattr(method, "is_control", False):
        return method.reseeded(derive_seed(seed, label, "stage", stage, "batch", batch))
    return method.reseeded(derive_seed(seed, label, "batch", batch))


def flatten_names(items: Iterable[Any]) -> list[str]:
    return [str(i) for i in items]


def run_stages(
    stages: Iterable[Any],
    x: torch.Tensor,
    target: torch.Tensor | None,
    target_mode: str,
    method_objs: Mapping[str, Any],
    score_objs: Mapping[str, Any],
    spans: Sequence[slice],
    seed: int,
    n_examples: int,
    on_step: Callable[[], None] = lambda: None,
    null_model: Callable[[Any], nn.Module | None] | None = None,
    null_out: list[pd.DataFrame] | None = None,
) -> tuple[pd.DataFrame, dict[str, Any], list[dict[str, Any]]]:
    """Every method's maps at every stage, stage k >= 1 scored against stage 0.

    ``stages`` yields objects with ``index``, ``block``, ``layers``, ``model``, ``output_change``
    and ``unchanged`` (as :func:`saliency_sanity.randomized_models` does); stage 0 comes first.
    Returns the tidy table, the kept example maps and the stage information. With
    ``null_model`` (a stage -> second randomized model function), the null reference table is
    appended to ``null_out``. A thin wrapper over :func:`._runner.evaluate`.
    """
    from ._runner import StagePlan, evaluate

    stage_list = list(stages)
    info = [{"index": st.index, "block": st.block, "layers": list(st.layers),
             "output_change": dict(st.output_change), "unchanged": bool(st.unchanged)}
            for st in stage_list]
    plan = StagePlan(info=info, build=lambda pos: stage_list[pos].model,
                     build_null=(lambda k: null_model(stage_list[k])) if null_model else None)
    out = evaluate(plan, x, target, target_mode, method_objs, score_objs, spans, seed,
                   n_examples, on_step=lambda: [on_step() for _ in method_objs])
    if null_out is not None and out.null is not None:
        null_out.append(out.null)
    return out.table, out.examples, out.stages


def _keep_examples(store: dict[int, Any], stage: int, span: slice, n: int,
                   maps: torch.Tensor) -> None:
    """Append the part of ``maps`` that falls among the first ``n`` samples to ``store[stage]``."""
    if span.start >= n:
        return
    part = maps[: n - span.start].cpu().numpy()
    store[stage] = part if stage not in store else np.concatenate([store[stage], part])


def _warn_nan(table: pd.DataFrame) -> None:
    nan = table[table["value"].isna()]
    if len(nan):
        where = ", ".join(
            f"{m}/{s}: {c}" for (m, s), c in nan.groupby(["method", "metric"]).size().items()
        )
        warnings.warn(
            f"{len(nan)} similarity values are NaN (undefined for constant maps): {where}",
            RuntimeWarning,
            stacklevel=3,
        )


def progress_bar(enabled: bool, total: int, desc: str, unit: str = "maps"):
    """A tqdm bar on stderr (silent when ``enabled`` is False)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, unit=unit)


# One implementation of the row helpers, shared by every check (defined in the runner).
from ._runner import _append  # noqa: E402,F401,I001
from ._runner import _score as _score_quietly  # noqa: E402,F401,I001
