"""Smooth MPRT (Hedstroem et al. 2023): the model randomization test on denoised maps.

Every method is wrapped in SmoothGrad-style averaging (``samples`` noisy copies of the input,
noise standard deviation ``noise * (max x - min x)`` per input) for the trained and for every
randomized model, and the maps are compared as in the model randomization test. Averaging removes
the noise that inflates dissimilarity in the plain test. Lower similarity is better.

The stage loop is the model randomization test's (``run_stages`` over ``randomized_models``);
this module only wraps the methods and the scores. Helpers shared by the critique checks live
here too (score resolution with normalization, input validation).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .. import postprocess as _pp
from ..methods import Method, NoiseWrapper
from ..randomization import discover_blocks, randomized_models
from ._engine import (
    CAM_METHODS,
    DEFAULT_METHODS,
    _has_conv,
    batches,
    common_settings,
    prepare,
    progress_bar,
    resolve_methods,
    resolve_scores,
    run_stages,
    versions,
)
from ._result import CheckResult

NOISE_METHODS = frozenset({"smoothgrad", "vargrad", "ig_smoothgrad"})


# ---------------------------------------------------------------------------------------------
# shared helpers of the critique checks
# ---------------------------------------------------------------------------------------------
class NormalizedScore:
    """A score applied to normalized maps: ``score(normalize(a), normalize(b))``.

    ``normalize`` is a post-processing name (``saliency_sanity.postprocess.list()``), a callable
    on a batch of maps, or None/"none" (no change: the score sees the raw maps). With
    ``"second_moment"`` the maps are summed over channels (signed) and divided by
    ``sqrt(mean(m^2))`` per sample, as Quantus' ``normalise_by_average_second_moment_estimate``
    (which Quantus applies over the whole batch; a per-sample positive scale changes no
    rank-based or min-max-based score).

    Example:
        >>> import torch
        >>> from saliency_sanity import scores
        >>> s = NormalizedScore(scores.get("mse", postprocess="none"), "second_moment")
        >>> a = torch.tensor([[1.0, -1.0, 1.0, -1.0]])
        >>> float(s(a, 3 * a))
        0.0
    """

    def __init__(self, score: Any, normalize: str | Callable[[torch.Tensor], torch.Tensor] | None
                 ) -> None:
        self.score = score
        if normalize is None or normalize == "none":
            self.normalize_name = "none"
            self._normalize: Callable[[torch.Tensor], torch.Tensor] | None = None
        elif isinstance(normalize, str):
            self.normalize_name = normalize
            self._normalize = _pp.get(normalize)
        elif callable(normalize):
            self.normalize_name = getattr(normalize, "__name__", repr(normalize))
            self._normalize = normalize
        else:
            raise TypeError(f"normalize must be a post-processing name or a callable, got "
                            f"{type(normalize).__name__}")

    def __getattr__(self, item: str) -> Any:  # name, range, higher_is_better, requires_image
        if item == "score":
            raise AttributeError(item)
        return getattr(self.score, item)

    def settings(self, shape: tuple[int, ...] | None = None) -> dict[str, Any]:
        """The score's settings plus ``normalize``."""
        try:
            out = dict(self.score.settings(shape))
        except TypeError:
            out = dict(self.score.settings())
        out["normalize"] = self.normalize_name
        return out

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self._normalize is not None:
            a, b = self._normalize(a), self._normalize(b)
        return self.score(a, b)


def resolve_score_specs(specs: Any, x: torch.Tensor) -> dict[str, Any]:
    """``{name: Score}`` from names (as the other checks) or Score-like objects (with ``name``,
    ``settings()`` and ``__call__(a, b) -> (B,)``)."""
    if specs is None or isinstance(specs, str):
        return resolve_scores(specs, x)
    out: dict[str, Any] = {}
    for s in specs:
        if isinstance(s, str):
            out.update(resolve_scores([s], x))
        elif callable(s) and hasattr(s, "name"):
            out[str(s.name)] = s
        else:
            raise TypeError(f"scores must be names or Score objects, got {type(s).__name__}")
    if not out:
        raise ValueError("no scores to compute: pass at least one score name")
    return out


def default_methods(model: nn.Module, x: torch.Tensor, exclude: frozenset[str] = frozenset()
                    ) -> list[str]:
    """The default methods that apply to this model and input, minus ``exclude``."""
    images = x.dim() == 4
    return [n for n in DEFAULT_METHODS
            if n not in exclude and (n not in CAM_METHODS or (images and _has_conv(model)))]


def smoothed(method: Method, samples: int, noise: float, seed: int = 0,
             internal_batch_size: int | None = 64) -> Method:
    """``method`` averaged over ``samples`` noisy inputs (controls are returned unchanged).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from saliency_sanity import methods
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> x = torch.randn(2, 3, generator=torch.Generator().manual_seed(0))
        >>> g = methods.get("gradient")
        >>> torch.equal(smoothed(g, 1, 0.0)(net, x, "predicted"), g(net, x, "predicted"))
        True
    """
    if method.is_control:
        return method
    return NoiseWrapper(method, samples, noise, seed, "mean", internal_batch_size,
                        name=f"smooth_{method.name}")


def block_records(blocks: Sequence[Any]) -> list[dict[str, Any]]:
    return [{"name": bl.name, "modules": list(bl.modules), "params": list(bl.params)}
            for bl in blocks]


def init_record(stage_iter: Any, init: Any, init_settings: Mapping[str, Any] | None
                ) -> dict[str, Any]:
    scheme = getattr(stage_iter, "scheme", None)
    if scheme is not None:
        try:
            return dict(scheme.settings())
        except Exception:  # recording must never fail the run
            pass
    return dict(init_settings or {})


# ---------------------------------------------------------------------------------------------
# the check
# ---------------------------------------------------------------------------------------------
def smooth_model_randomization_test(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor | Sequence[int] | None = None,
    methods: Sequence[Any] | Mapping[str, Any] | None = None,
    scores: Any = None,
    samples: int = 50,
    noise: float = 0.1,
    order: str = "bottom_up",
    normalize: str | Callable[[torch.Tensor], torch.Tensor] | None = "second_moment",
    init: str = "paper",
    seed: int = 0,
    target_mode: str | None = None,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    controls: bool | Sequence[str] = True,
    blocks: Sequence[Any] | None = None,
    group_by: str | Sequence[str] | None = None,
    init_settings: Mapping[str, Any] | None = None,
    internal_batch_size: int | None = 64,
    n_examples: int = 4,
    progress: bool = True,
) -> CheckResult:
    """sMPRT: the model randomization test with every method's maps denoised by averaging.

    Each method is wrapped as ``smoothgrad(base=method, samples, noise)``: its maps are averaged
    over ``samples`` inputs ``x + eps``, ``eps ~ N(0, (noise * (max x - min x))^2)`` per input,
    for the trained model and for each randomized model. The noise draws are the same at every
    stage (seeded per batch from ``seed``), so map changes come from the model alone. Controls
    (model-free maps) are not smoothed. Before scoring, both maps are normalized by
    ``normalize`` (see :class:`NormalizedScore`), then the score's own post-processing applies.

    With ``samples=1, noise=0`` this is exactly :func:`model_randomization_test` (same seeds).

    Args:
        model, x, target, methods, init, seed, target_mode, batch_size, device, controls,
            blocks, group_by, init_settings, n_examples, progress: as
            :func:`saliency_sanity.model_randomization_test`. ``methods=None`` selects the
            default methods except SmoothGrad and VarGrad (already averaged over noise).
        scores: score names, or Score-like objects (``name``, ``settings()``, ``(a, b) -> (B,)``);
            None = every score that applies.
        samples: noisy copies per map (paper: 50).
        noise: noise standard deviation as a fraction of each input's max - min (paper: 0.1).
        order: randomization order; default ``"bottom_up"`` (the paper's recommendation).
        normalize: normalization of both maps before each score (default second moment).
        internal_batch_size: rows per call of the wrapped method.

    Returns:
        A :class:`CheckResult` (check ``"smooth_model_randomization"``) with the common table.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> g = torch.Generator().manual_seed(0)
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> x = torch.rand(4, 1, 4, 4, generator=g)
        >>> res = smooth_model_randomization_test(net, x, methods=["gradient"], samples=4,
        ...     scores=["spearman_abs"], controls=False, progress=False)
        >>> res.check, sorted(res.table["stage"].unique().tolist())
        ('smooth_model_randomization', [1, 2])
    """
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise ValueError(f"samples must be a positive integer, got {samples!r}")
    if not isinstance(noise, (int, float)) or noise < 0:
        raise ValueError(f"noise must be a non-negative fraction of the input range, got {noise!r}")
    x, target, target_mode, dev = prepare(model, x, target, target_mode, device)
    if methods is None:
        methods = default_methods(model, x, NOISE_METHODS)
    raw = resolve_methods(methods, controls, model, x)
    method_objs = {label: smoothed(m, samples, float(noise), seed, internal_batch_size)
                   for label, m in raw.items()}
    score_objs = {name: NormalizedScore(s, normalize)
                  for name, s in resolve_score_specs(scores, x).items()}
    spans = batches(x.shape[0], batch_size)
    n_examples = max(0, min(n_examples, x.shape[0]))
    example_input = x[: min(batch_size, x.shape[0])]
    if blocks is None:
        blocks = discover_blocks(model, example_input, group_by=group_by)
    stage_iter = randomized_models(
        model, order=order, init=init, seed=seed, example_input=example_input, blocks=blocks,
        init_settings=dict(init_settings or {}), device=dev,
    )
    bar = progress_bar(progress, (len(blocks) + 1) * len(spans) * len(method_objs), "sMPRT")
    try:
        table, examples, stage_info = run_stages(
            stage_iter, x, target, target_mode, method_objs, score_objs, spans, seed, n_examples,
            on_step=lambda: bar.update(1),
        )
    finally:
        bar.close()
    settings = {
        "check": "smooth_model_randomization",
        "samples": samples,
        "noise": float(noise),
        "noise_draws": "seeded per batch from seed; the same draws at every stage",
        "normalize": NormalizedScore(None, normalize).normalize_name,
        "order": order,
        "init": init if isinstance(init, str) else getattr(init, "name", repr(init)),
        "init_settings": init_record(stage_iter, init, init_settings),
        "seed": seed,
        "target_mode": target_mode,
        "internal_batch_size": internal_batch_size,
        **common_settings(x, target, batch_size, dev, method_objs, score_objs),
        "blocks": block_records(blocks),
        "versions": versions(),
    }
    return CheckResult(check="smooth_model_randomization", table=table, settings=settings,
                       stages=stage_info, examples=examples)
