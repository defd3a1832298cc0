"""Smooth MPRT (Hedstroem et al. 2023): the model randomization test on denoised maps.

Every method is wrapped in SmoothGrad-style averaging (``samples`` noisy copies of the input,
noise standard deviation ``noise * (max x - min x)`` per input) for the trained and for every
randomized model, and the maps are compared as in the model randomization test. Averaging removes
the noise that inflates dissimilarity in the plain test. Lower similarity is better.

It runs on the engine like every check: a stage plan, one view per stage, each stage scored
against the trained model. This module only wraps the methods (:func:`smoothed`) and the scores
(:class:`NormalizedScore`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .. import postprocess as _pp
from ..engine import Pair, RunConfig, View, execute, prepare, resolve_methods, resolve_scores
from ..methods import Method, NoiseWrapper
from ..results import COLUMNS, CheckResult
from ..results.spec import CheckSpec, Example, Ranking
from ._common import randomization_settings, stage_plan
from ._examples import tiny_inputs, tiny_model


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


def smooth_model_randomization_test(
    model: nn.Module,
    x: torch.Tensor,
    *,
    target: torch.Tensor | Sequence[int] | None = None,
    methods: Sequence[Any] | Mapping[str, Any] | None = None,
    scores: Any = None,
    samples: int = 50,
    noise: float = 0.1,
    order: str = "bottom_up",
    normalize: str | Callable[[torch.Tensor], torch.Tensor] | None = "second_moment",
    init: str = "paper",
    blocks: Sequence[Any] | None = None,
    group_by: str | Sequence[str] | None = None,
    init_settings: Mapping[str, Any] | None = None,
    internal_batch_size: int | None = 64,
    config: RunConfig | None = None,
    **common: Any,
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
        model, x, target, methods, init, blocks, group_by, init_settings: as
            :func:`saliency_sanity.model_randomization_test`. ``methods=None`` selects the
            default methods except those that already average over noise (SmoothGrad, VarGrad).
        scores: score names, or Score-like objects (``name``, ``settings()``, ``(a, b) -> (B,)``);
            None = every score that applies.
        samples: noisy copies per map (paper: 50).
        noise: noise standard deviation as a fraction of each input's max - min (paper: 0.1).
        order: randomization order; default ``"bottom_up"`` (the paper's recommendation).
        normalize: normalization of both maps before each score (default second moment).
        internal_batch_size: rows per call of the wrapped method.
        config, **common: the common settings (:class:`~saliency_sanity.engine.RunConfig`).

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
    cfg = RunConfig.from_kwargs(config, common)
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise ValueError(f"samples must be a positive integer, got {samples!r}")
    if not isinstance(noise, (int, float)) or noise < 0:
        raise ValueError(f"noise must be a non-negative fraction of the input range, got {noise!r}")
    x, target, target_mode, dev = prepare(model, x, target, cfg.target_mode, cfg.device)
    raw = resolve_methods(methods, cfg.controls, model, x, exclude_noise=True)
    method_objs = {label: smoothed(m, samples, float(noise), cfg.seed, internal_batch_size)
                   for label, m in raw.items()}
    score_objs = {name: NormalizedScore(s, normalize)
                  for name, s in resolve_scores(scores, x).items()}
    plan = stage_plan(model, x, cfg.batch_size, order, init, cfg.seed, dev, blocks, group_by,
                      init_settings)
    views = [View(f"s{pos}", pos, spec.index, keep_as=spec.index, measure=True)
             for pos, spec in enumerate(plan.specs)]
    pairs = [Pair("s0", f"s{pos}", spec.index, spec.block or "")
             for pos, spec in enumerate(plan.specs) if pos > 0]
    settings = {
        "samples": samples,
        "noise": float(noise),
        "noise_draws": "seeded per batch from seed; the same draws at every stage",
        "normalize": NormalizedScore(None, normalize).normalize_name,
        "internal_batch_size": internal_batch_size,
        **randomization_settings(plan),
    }
    return execute("smooth_model_randomization", plan=plan, views=views, pairs=pairs, x=x,
                   target=target, target_mode=target_mode, method_objs=method_objs,
                   score_objs=score_objs, config=cfg, settings=settings, models=[model],
                   desc="sMPRT")


def _example() -> Example:
    return Example(args=(tiny_model(), tiny_inputs()),
                   kwargs={"methods": ["gradient"], "samples": 2, "seed": 0, "progress": False,
                            "batch_size": 2},
                   bad={"methods": ["gradient"], "target": [0]})


#: An extra of the model randomization run (``--...``):
#: no subcommand of its own; its page is a randomization page.
SPEC = CheckSpec(
    "smooth_model_randomization",
    run=smooth_model_randomization_test,
    title="smooth_model_randomization",
    columns=tuple(COLUMNS),
    figures="saliency_sanity.plots:model_randomization_figures",
    report="saliency_sanity.report.pages:randomization_page",
    summary="saliency_sanity.report.hooks:format_table_summary",
    verdict=None,
    ranking=Ranking(label="sMPRT"),
    cli=None,
    example=_example,
)
