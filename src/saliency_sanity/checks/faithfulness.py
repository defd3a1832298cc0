"""The faithfulness check: does removing what a map calls important hurt the model more than
removing what it calls unimportant? (Samek et al. 2016; Petsiuk et al. 2018; Rong et al. 2022)

It runs on the engine like every check: one view per unit (the trained model's maps of a batch,
through each method's own call path), and a ``curves`` step that perturbs the batch in the order
of each map with the functional core (:mod:`saliency_sanity.faithfulness`) and records the
model's score for the explained class at every step: one row per method, metric, step and
sample. ``stage`` is the step (0 = the clean input, or the baseline for insertion), ``layer`` the
fraction of the input removed (inserted) at that step, ``metric`` the curve's name and order
(``region_perturbation_morf``, ``road_lerf``, ...). A random-order curve per metric sits beside
the methods as ``(random order)``. :func:`faithfulness_scores` turns the curves into AOPC, ABPC
and AUC per method.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch
from torch import nn

from .. import faithfulness as F
from ..engine import RunConfig, View, derive_seed, execute, prepare, resolve_methods
from ..faithfulness.curves import pixels_count
from ..randomization import FixedPlan, StageSpec, fresh_copy
from ..results import COLUMNS, CheckResult, mean_interval
from ..results.spec import CheckSpec, Cli, Example, Ranking
from ._examples import tiny_inputs, tiny_model

METRICS = ("region_perturbation", "pixel_flipping", "insertion", "deletion", "road")
#: the orders each metric is computed in (insertion/deletion: most relevant first, by design)
ORDERS = {"region_perturbation": ("morf", "lerf"), "pixel_flipping": ("morf", "lerf"),
          "insertion": ("morf",), "deletion": ("morf",), "road": ("morf", "lerf")}
RANDOM = "(random order)"


def default_settings(metric: str, h: int, w: int) -> dict[str, Any]:
    """Each metric's default settings for (H, W) images.

    Region perturbation: Samek's 9 x 9 regions at 224 x 224 scaled to the image (at least 2
    pixels), as many steps as regions up to Samek's 100, uniform noise. Pixel flipping,
    insertion and deletion: 1% of the pixels per step, to the end. ROAD: 10% ... 90%.

    Example:
        >>> default_settings("region_perturbation", 28, 28)
        {'region': 2, 'steps': 100, 'replacement': 'uniform'}
    """
    if metric == "region_perturbation":
        region = max(2, round(9 * min(h, w) / 224))
        n = math.ceil(h / region) * math.ceil(w / region)
        return {"region": region, "steps": min(100, n), "replacement": "uniform"}
    if metric in ("pixel_flipping", "insertion", "deletion"):
        return {"pixels_per_step": 0.01}
    if metric == "road":
        return {"percentages": tuple(round(0.1 * k, 1) for k in range(1, 10))}
    raise ValueError(f"unknown faithfulness metric {metric!r}; known: {', '.join(METRICS)}")


def _with_defaults(metric: str, h: int, w: int, given: Mapping[str, Any]) -> dict[str, Any]:
    """``given`` over :func:`default_settings`; a region size given without steps gets as many
    steps as its regions, up to 100.

    Example:
        >>> _with_defaults("region_perturbation", 16, 16, {"region": 8})["steps"]
        4
    """
    out = {**default_settings(metric, h, w), **dict(given)}
    region = given.get("region")
    if (metric == "region_perturbation" and "steps" not in given and isinstance(region, int)
            and not isinstance(region, bool) and region >= 1):
        out["steps"] = min(100, math.ceil(h / region) * math.ceil(w / region))
    return out


def _fractions(metric: str, settings: Mapping[str, Any], k: int, h: int, w: int) -> list[str]:
    """The fraction of the input removed (inserted) at each of the curve's ``k`` points."""
    if metric == "road":
        return [f"{p:g}" for p in settings["percentages"]]
    if metric == "region_perturbation":
        per = settings["region"] ** 2 / (h * w)
    else:
        per = pixels_count(settings["pixels_per_step"], h * w, metric) / (h * w)
    return [f"{min(1.0, i * per):.4f}" for i in range(k)]


_FNS = {"region_perturbation": F.region_perturbation, "pixel_flipping": F.pixel_flipping,
        "insertion": F.insertion, "deletion": F.deletion, "road": F.road}
#: the core's arguments the check sets itself (not per-metric settings)
_OWN = {"model", "x", "maps", "target", "order", "seed", "score"}


def _call(metric: str, model: nn.Module, xb: torch.Tensor, maps: torch.Tensor,
          target: torch.Tensor, order: str, seed: int, score: str,
          settings: Mapping[str, Any]) -> torch.Tensor:
    return _FNS[metric](model, xb, maps, target, order=order, seed=seed, score=score, **settings)


def _never(*args: Any) -> Any:
    raise AssertionError("the settings check must not run the model")


def check_settings(chosen: Mapping[str, Mapping[str, Any]], x: torch.Tensor, score: str) -> None:
    """Raise a clear error for any metric setting the functional core would refuse (a region
    larger than the image, steps <= 0, an unknown replacement, percentages outside (0, 1), an
    unknown setting name, ...), before any map is computed or any file written: each core
    function's own checks run on one image with a NaN map, which stops before the model.

    Example:
        >>> check_settings({"road": {"percentages": (0.5, 50)}}, torch.zeros(1, 1, 8, 8),
        ...                "softmax")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: road: percentages must lie in (0, 1) (fractions, not percents); got ...
    """
    import inspect
    import warnings

    for metric, st in chosen.items():
        fn = _FNS[metric]
        allowed = set(inspect.signature(fn).parameters) - _OWN
        unknown = sorted(set(st) - allowed)
        if unknown:
            raise ValueError(f"{metric}: unknown setting(s) {', '.join(unknown)}; known: "
                             f"{', '.join(sorted(allowed))}")
        xb = x[:1]
        nan_map = torch.full((1, 1, *xb.shape[2:]), math.nan, dtype=xb.dtype, device=xb.device)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the NaN map's own warning
            fn(_never, xb, nan_map, torch.zeros(1, dtype=torch.long, device=xb.device),
               order="morf", seed=0, score=score, **st)


def faithfulness_test(
    model: nn.Module,
    x: torch.Tensor,
    *,
    target: torch.Tensor | Sequence[int] | None = None,
    methods: Sequence[Any] | Mapping[str, Any] | None = None,
    metrics: Sequence[str] = METRICS,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
    score: str = "softmax",
    random_order: bool = True,
    config: RunConfig | None = None,
    **common: Any,
) -> CheckResult:
    """Perturbation curves of every method's maps on the trained model.

    Args:
        model: a classifier returning logits (B, classes).
        x: images (B, C, H, W).
        target: the classes to explain (default: the model's predictions).
        methods: as :func:`saliency_sanity.model_randomization_test` (controls included by
            default: a random map must sit near the random-order curve).
        metrics: from ``region_perturbation``, ``pixel_flipping``, ``insertion``, ``deletion``,
            ``road``.
        settings: per-metric settings overriding :func:`default_settings` (e.g.
            ``{"region_perturbation": {"region": 3, "replacement": "black"}}``).
        score: ``"softmax"`` (default: the papers' probability of the explained class) or
            ``"logit"``; ROAD may also use ``"correct"``.
        random_order: add the random-order curve of each metric (method ``"(random order)"``).
        config, **common: the common settings (:class:`~saliency_sanity.engine.RunConfig`).

    Returns:
        A :class:`CheckResult` (check ``"faithfulness"``); :func:`faithfulness_scores` gives
        AOPC / ABPC / AUC per method.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> g = torch.Generator().manual_seed(0)
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
        ...                     nn.Linear(4 * 8 * 8, 3))
        >>> x = torch.rand(4, 1, 8, 8, generator=g)
        >>> r = faithfulness_test(net, x, methods=["gradient"], metrics=["region_perturbation"],
        ...                       controls=False, progress=False)
        >>> sorted(r.table["metric"].unique()), sorted(r.table["method"].unique())
        (['region_perturbation_lerf', 'region_perturbation_morf'], ['(random order)', 'gradient'])
    """
    cfg = RunConfig.from_kwargs(config, common)
    x, tgt, _, dev = prepare(model, x, target, None, cfg.device)
    if x.dim() != 4:
        raise ValueError(f"the faithfulness check perturbs images (B, C, H, W); got "
                         f"{tuple(x.shape)}")
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    if not metrics:
        raise ValueError(f"no metrics: choose among {', '.join(METRICS)}")
    h, w = int(x.shape[2]), int(x.shape[3])
    chosen = {m: _with_defaults(m, h, w, (settings or {}).get(m, {})) for m in metrics}
    unknown = set(settings or {}) - set(metrics)
    if unknown:
        raise ValueError(f"settings given for metrics not asked for: {sorted(unknown)}")
    check_settings(chosen, x, score)
    method_objs = resolve_methods(methods, cfg.controls, model, x)
    trained = fresh_copy(model, dev)
    plan = FixedPlan([trained], [StageSpec(0, (), None)])

    def curves(model: nn.Module, xb: torch.Tensor, tb: torch.Tensor,
               maps: Mapping[str, torch.Tensor], unit: Any) -> Any:
        seed = derive_seed(cfg.seed, "faithfulness", unit.index)
        for metric in metrics:
            st = chosen[metric]
            for label, m in maps.items():
                for order in ORDERS[metric]:
                    c = _call(metric, model, xb, m, tb, order, seed, score, st)
                    yield (label, f"{metric}_{order}",
                           _fractions(metric, st, c.shape[1], h, w), c.double().cpu().numpy())
            if random_order and maps:
                c = _call(metric, model, xb, next(iter(maps.values())), tb, "random", seed,
                          score, st)
                for order in ORDERS[metric]:
                    yield (RANDOM, f"{metric}_{order}",
                           _fractions(metric, st, c.shape[1], h, w), c.double().cpu().numpy())

    record = {"metrics": {m: {k: list(v) if isinstance(v, tuple) else v
                              for k, v in chosen[m].items()} for m in metrics},
              "orders": {m: list(ORDERS[m]) for m in metrics}, "score": score,
              "random_order": random_order, "ranking_metric": _rank_score(metrics),
              "ranking_better": "higher"}
    view_target = None if tgt is None else "given"
    return execute("faithfulness", plan=plan,
                   views=[View("trained", 0, 0, keep_as=0, target=view_target)], pairs=[],
                   x=x, target=tgt, target_mode="fixed" if tgt is not None else "predicted",
                   method_objs=method_objs, score_objs={}, config=cfg, settings=record,
                   models=[model], targets=None if tgt is None else {"given": tgt},
                   desc="faithfulness", curves=curves)


def faithfulness_scores(result: CheckResult) -> pd.DataFrame:
    """Per method and sample, the scores of the curves: ``aopc`` (region perturbation, pixel
    flipping: MoRF, higher is better), ``aopc_lerf`` (lower is better), ``abpc`` (LeRF minus
    MoRF area, higher is better), ``auc`` (insertion: higher is better; deletion: lower),
    ``road_gap`` (mean of LeRF minus MoRF scores over the percentages, higher is better).

    Example:
        >>> t = pd.DataFrame({"method": "g", "stage": [0, 1, 2, 0, 1, 2], "layer": "",
        ...                   "sample": 0, "metric": ["region_perturbation_morf"] * 3
        ...                   + ["region_perturbation_lerf"] * 3,
        ...                   "value": [1.0, 0.5, 0.0, 1.0, 1.0, 1.0]})
        >>> s = faithfulness_scores(CheckResult(check="faithfulness", table=t))
        >>> s.set_index("score")["value"].round(3).to_dict()
        {'aopc': 0.5, 'aopc_lerf': 0.0, 'abpc': 0.5}
    """
    t = result.table
    rows = []
    for (method, sample), g in t.groupby(["method", "sample"], sort=False):
        curves = {metric: torch.tensor(gg.sort_values("stage")["value"].to_numpy(float))[None]
                  for metric, gg in g.groupby("metric", sort=False)}
        for base in ("region_perturbation", "pixel_flipping"):
            morf, lerf = curves.get(f"{base}_morf"), curves.get(f"{base}_lerf")
            if morf is not None:
                rows.append([method, sample, base, "aopc", float(F.aopc(morf)[0])])
            if lerf is not None:
                rows.append([method, sample, base, "aopc_lerf", float(F.aopc(lerf)[0])])
            if morf is not None and lerf is not None:
                rows.append([method, sample, base, "abpc", float(F.abpc(morf, lerf)[0])])
        for base in ("insertion", "deletion"):
            if f"{base}_morf" in curves:
                rows.append([method, sample, base, "auc",
                             float(F.auc(curves[f"{base}_morf"])[0])])
        if "road_morf" in curves and "road_lerf" in curves:
            gap = (curves["road_lerf"] - curves["road_morf"]).mean()
            rows.append([method, sample, "road", "road_gap", float(gap)])
    return pd.DataFrame(rows, columns=["method", "sample", "metric", "score", "value"])


#: The score methods are ranked by (the first of these the run computed), higher = better.
RANK_SCORES = (("region_perturbation", "aopc"), ("pixel_flipping", "aopc"),
               ("road", "road_gap"), ("insertion", "auc"))

#: Whether a higher value of each (metric, score) means a more faithful map.
HIGHER_IS_BETTER = {
    ("region_perturbation", "aopc"): True, ("region_perturbation", "aopc_lerf"): False,
    ("region_perturbation", "abpc"): True, ("pixel_flipping", "aopc"): True,
    ("pixel_flipping", "aopc_lerf"): False, ("pixel_flipping", "abpc"): True,
    ("insertion", "auc"): True, ("deletion", "auc"): False, ("road", "road_gap"): True,
}
_METRIC_NAMES = {"region_perturbation": "region perturbation", "pixel_flipping":
                 "pixel flipping", "insertion": "insertion", "deletion": "deletion",
                 "road": "ROAD"}
_SCORE_NAMES = {"aopc": "AOPC", "aopc_lerf": "LeRF AOPC", "abpc": "ABPC", "auc": "AUC",
                "road_gap": "gap"}


def score_label(metric: str, score: str) -> str:
    """The display name of a faithfulness score.

    Example:
        >>> score_label("region_perturbation", "aopc"), score_label("road", "road_gap")
        ('region perturbation AOPC', 'ROAD gap')
    """
    return f"{_METRIC_NAMES.get(metric, metric)} {_SCORE_NAMES.get(score, score)}"


def _rank_score(metrics: Sequence[str]) -> str | None:
    for metric, score in RANK_SCORES:
        if metric in metrics:
            return f"{metric}:{score}"
    return None


def faithfulness_summary(result: CheckResult, ci: float = 0.95) -> pd.DataFrame:
    """Per method, metric and score: the mean over samples with a ``ci`` t-interval (NaN samples
    left out and counted), and whether a higher value is better. The random order is a method
    ``"(random order)"``.

    Example:
        >>> t = pd.DataFrame({"method": "g", "stage": [0, 1, 0, 1], "layer": "", "sample":
        ...                   [0, 0, 1, 1], "metric": "insertion_morf",
        ...                   "value": [0.0, 1.0, 0.0, 0.5]})
        >>> s = faithfulness_summary(CheckResult(check="faithfulness", table=t))
        >>> s[["method", "metric", "score", "mean", "n"]].values.tolist()
        [['g', 'insertion', 'auc', 0.375, 2]]
    """

    s = faithfulness_scores(result)
    rows = []
    for (method, metric, score), g in s.groupby(["method", "metric", "score"], sort=False):
        n, mean, _, half = mean_interval(g["value"], ci)
        rows.append([method, metric, score, score_label(metric, score), mean, mean - half,
                     mean + half, n, len(g) - n,
                     HIGHER_IS_BETTER.get((metric, score), True)])
    return pd.DataFrame(rows, columns=["method", "metric", "score", "label", "mean", "lo", "hi",
                                       "n", "n_nan", "higher_is_better"])


def rank_table(result: CheckResult) -> pd.DataFrame:
    """The faithfulness result as a table the method ranking reads: one row per method, sample
    and score, metric ``"<curve>:<score>"`` (e.g. ``region_perturbation:aopc``), the score's
    value as computed (its direction is ``settings["ranking_better"]`` for the ranked score;
    :func:`ranking_views` sets it per score); the random-order baseline left out.

    Example:
        >>> t = pd.DataFrame({"method": "g", "stage": [0, 1], "layer": "", "sample": 0,
        ...                   "metric": "road_morf", "value": [1.0, 0.0]})
        >>> r = CheckResult(check="faithfulness", table=pd.concat([t, t.assign(
        ...     metric="road_lerf", value=[1.0, 1.0])]), settings={"ranking_metric":
        ...     "road:road_gap"})
        >>> rank_table(r)[["method", "metric", "value"]].values.tolist()
        [['g', 'road:road_gap', 0.5]]
    """
    s = faithfulness_scores(result)
    s = s[s["method"] != RANDOM]
    s = s.assign(metric=s["metric"] + ":" + s["score"])
    out = pd.DataFrame({"method": s["method"], "stage": 1, "layer": "", "sample": s["sample"],
                        "metric": s["metric"], "value": s["value"]})
    return out.reset_index(drop=True)


def ranking_views(result: CheckResult) -> dict[str, CheckResult]:
    """One view of ``result`` per faithfulness score it has, each ranked by that score (with
    its direction), labelled by :func:`score_label`: the method ranking shows every
    faithfulness score beside the randomization checks.

    Example:
        >>> t = pd.DataFrame({"method": "g", "stage": [0, 1], "layer": "", "sample": 0,
        ...                   "metric": "deletion_morf", "value": [1.0, 0.0]})
        >>> v = ranking_views(CheckResult(check="faithfulness", table=t))
        >>> list(v), v["deletion AUC"].settings["ranking_better"]
        (['deletion AUC'], 'lower')
    """
    import dataclasses

    s = faithfulness_scores(result)
    out = {}
    for metric, score in dict.fromkeys(zip(s["metric"], s["score"], strict=True)):
        better = "higher" if HIGHER_IS_BETTER.get((metric, score), True) else "lower"
        out[score_label(metric, score)] = dataclasses.replace(
            result, settings={**result.settings, "ranking_metric": f"{metric}:{score}",
                              "ranking_better": better})
    return out



def _example() -> Example:
    return Example(args=(tiny_model(), tiny_inputs()),
                   kwargs={"methods": ["gradient"], "metrics": ["pixel_flipping"], "seed": 0,
                            "progress": False, "batch_size": 2}, bad={"metrics": ["no_curve"]})


SPEC = CheckSpec(
    "faithfulness",
    run=faithfulness_test,
    title="Faithfulness",
    columns=tuple(COLUMNS),
    figures="saliency_sanity.plots_faithfulness:save_faithfulness_figures",
    report="saliency_sanity.report.pages:faithfulness_page",
    summary="saliency_sanity.report.faithfulness:format_faithfulness_summary",
    verdict=None,  # ranks methods by its scores, no pass / fail
    ranking=Ranking(table=rank_table, views=ranking_views, group="faithfulness"),
    cli=Cli("faithfulness", "saliency_sanity.cli._faithfulness:add_parser",
            "saliency_sanity.cli._faithfulness:run", keeps_run_dir=True),
    example=_example,
)

__all__ = ["HIGHER_IS_BETTER", "METRICS", "default_settings", "faithfulness_scores",
           "faithfulness_summary", "faithfulness_test", "rank_table", "ranking_views",
           "score_label"]
