"""The critiques of a model randomization run, computed beside it in the same run directory.

After the main check (``model_randomization_test``) has written its run directory, the extras of
issue 7 are computed with the same model, inputs, methods (minus what a check excludes),
controls, scores, seed, init, target mode, batch size and device, and saved next to it:

- ``smprt/``: sMPRT (``smooth_model_randomization_test``), a ``CheckResult.save`` directory;
- ``emprt/``: eMPRT (``efficient_model_randomization_test``), the same;
- ``random_logit/``: the random logit test (``random_logit_test``), the same;
- ``activation_scales.csv``: ``activation_scale_analysis``; its settings in
  ``activation_scales.json``, its figure ``figures/activation_scales.png``;
- ``ranking.csv`` (long: ``check, method, metric, higher_is_better, mean, rank``),
  ``ranking_tau.csv`` (``check_a, check_b, tau, pvalue, n``), ``ranking.json`` (settings) and
  ``figures/ranking.png``, whenever two or more checks rank methods.

Every extra is written atomically (a directory is built under a temporary name and renamed into
place), so an interrupted or failed extra leaves no partial file and never touches the main
results. A failing extra is reported in :attr:`CritiqueOutcome.failed` and the others still run.
An extra saved by an earlier call with the same main run (same fingerprint) and the same
settings is loaded instead of recomputed.

Example:
    >>> import tempfile, torch
    >>> from torch import nn
    >>> from saliency_sanity import model_randomization_test
    >>> net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> x = torch.rand(6, 6, generator=torch.Generator().manual_seed(0))
    >>> d = tempfile.mkdtemp()
    >>> res = model_randomization_test(net, x, methods=["gradient", "gradient_x_input"],
    ...     scores=["spearman_abs"], controls=False, progress=False, run_dir=d)
    >>> opts = CritiqueOptions(emprt=True, emprt_bins=10, random_logit=True)
    >>> outcome = run_critiques(res, d, opts, model=net, x=x, methods=["gradient",
    ...     "gradient_x_input"], scores=["spearman_abs"], controls=False, progress=False,
    ...     log=lambda s: None)
    >>> sorted(outcome.written), outcome.failed
    (['emprt', 'random_logit', 'ranking'], {})
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._io import atomic_write, atomic_write_dir, write_json
from ..checks.ranking import compute_ranking, ranking_inputs, wide_ranking
from ..results import CheckResult
from ..results.files import (
    EXTRA_DIRS,
    RANKING_CSV,
    RANKING_JSON,
    RANKING_TAU_CSV,
    SCALES_CSV,
    SCALES_JSON,
)
from .options import CritiqueOptions, jsonable_spec, load_data_randomization_run


@dataclass
class CritiqueOutcome:
    """What :func:`run_critiques` did: files written (by extra), extras reused from an earlier
    identical call, extras skipped (with why) and extras that failed (with the error)."""

    written: dict[str, Path] = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# running the extras
# ---------------------------------------------------------------------------------------------
def run_critiques(
    result: CheckResult,
    out: str | os.PathLike,
    options: CritiqueOptions,
    *,
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor | None = None,
    methods: Sequence[Any] | Mapping[str, Any] | None = None,
    scores: Sequence[Any] | None = None,
    controls: bool | Sequence[str] = True,
    group_by: str | Sequence[str] | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    scaling: Mapping[str, Any] | None = None,
) -> CritiqueOutcome:
    """Compute the extras in ``options`` for the model randomization ``result`` and save them in
    ``out`` (the run directory of ``result``), then the method ranking.

    ``model, x, target, methods, scores, controls, group_by`` must be what the main run was
    given; the seed, init, target mode, batch size and the main order are read from
    ``result.settings`` so every extra uses the same ones. The device is ``device`` if given,
    else the main run's. ``scaling``: the engine's scale-out settings for the extras that run
    on it (sMPRT, eMPRT, random logit): ``backend``, ``ray_address``, ``ray_options``, ``dtype``
    (``docs/scaling.md``). Failures of single extras are caught and reported in the outcome (and
    through ``log``); the main results in ``out`` are never modified.

    Example:
        >>> # outcome = run_critiques(res, "runs/r", CritiqueOptions.all(), model=net, x=x)
    """
    options.validate()
    d = Path(out)
    st = result.settings
    common = {
        "seed": int(st.get("seed", 0)),
        "batch_size": int(st.get("batch_size", 32)),
        "device": device if device is not None else st.get("device"),
    }
    scale = {k: v for k, v in dict(scaling or {}).items() if v is not None}
    init = st.get("init", "paper")
    target_mode = st.get("target_mode")
    main_order = st.get("order", "cascading")
    fp = st.get("fingerprint")
    outcome = CritiqueOutcome()
    run_methods = methods
    methods = select_methods(run_methods, options.methods)

    def attempt(name: str, fn: Callable[[], None]) -> None:
        t0 = time.perf_counter()
        try:
            fn()
            if name in outcome.written and name not in outcome.reused:
                log(f"critique {name}: done ({time.perf_counter() - t0:.0f} s)")
        except Exception as err:  # an extra must never take the main results with it
            outcome.failed[name] = f"{type(err).__name__}: {err}"
            log(f"critique {name!r} failed: {type(err).__name__}: {err}; the main results in "
                f"{d} are complete and untouched")

    def check_extra(name: str, params: dict[str, Any], compute: Callable[[], CheckResult],
                    save: Callable[[CheckResult, Path], Any] | None = None) -> None:
        key = _key(fp, name, params)
        target_dir = d / EXTRA_DIRS[name]
        if key is not None and _saved_key(target_dir / "run.json") == key:
            outcome.reused.append(name)
            outcome.written[name] = target_dir
            log(f"critique {name}: reusing {target_dir} (same run and settings)")
            return
        res = compute()
        res.settings["critique_key"] = key
        res.settings["main_fingerprint"] = fp
        outcome.written[name] = atomic_write_dir(
            d / EXTRA_DIRS[name], res.save if save is None else (lambda p: save(res, p)))

    shared = {"methods": jsonable_spec(methods), "scores": jsonable_spec(scores),
              "controls": jsonable_spec(controls), "group_by": jsonable_spec(group_by),
              "target_mode": target_mode, "init": init, **{k: str(v) for k, v in common.items()}}
    if "dtype" in scale:  # changes the numbers: part of the extras' reuse key
        shared["dtype"] = scale["dtype"]

    if options.smprt:
        from ..checks import smooth_model_randomization_test

        sm_methods = select_methods(run_methods, options.smprt_methods) \
            if options.smprt_methods is not None else without_noise_methods(run_methods, x)
        if sm_methods is not None and len(sm_methods) == 0:
            outcome.skipped["smprt"] = ("no method left once the noise-averaged ones "
                                        "(smoothgrad, vargrad, ig_smoothgrad) are removed")
            log(f"critique smprt skipped: {outcome.skipped['smprt']}")
        else:
            params = {**shared, "methods": jsonable_spec(sm_methods),
                      "samples": options.smprt_samples, "noise": options.smprt_noise,
                      "normalize": options.smprt_normalize, "order": options.smprt_order}
            attempt("smprt", lambda: check_extra("smprt", params, lambda: (
                smooth_model_randomization_test(
                    model, x, target=target, methods=sm_methods, scores=scores,
                    samples=options.smprt_samples, noise=float(options.smprt_noise),
                    order=options.smprt_order, normalize=options.smprt_normalize, init=init,
                    target_mode=target_mode, controls=controls, group_by=group_by,
                    progress=progress, **common, **scale))))
    if options.emprt:
        from ..checks import efficient_model_randomization_test

        e_order = main_order if main_order in ("bottom_up", "cascading") else "bottom_up"
        params = {**shared, "bins": options.emprt_bins, "order": e_order}
        attempt("emprt", lambda: check_extra("emprt", params, lambda: (
            efficient_model_randomization_test(
                model, x, target=target, methods=methods, bins=options.emprt_bins,
                order=e_order, init=init, target_mode=target_mode, controls=controls,
                group_by=group_by, progress=progress, **common, **scale))))
    if options.random_logit:
        from ..checks import random_logit_test

        params = {**shared}
        attempt("random_logit", lambda: check_extra("random_logit", params, lambda: (
            random_logit_test(model, x, target=target, methods=methods, scores=scores,
                              controls=controls, progress=progress, **common, **scale))))
    if options.activation_scales:
        params = {"order": main_order, "init": init, "group_by": jsonable_spec(group_by),
                  **{k: str(v) for k, v in common.items()}}
        attempt("activation_scales", lambda: _activation_scales(
            d, model, x, main_order, init, group_by, {**common, "progress": progress},
            _key(fp, "activation_scales", params), fp, outcome, log))
    if options.faithfulness:
        from ..checks import faithfulness_test
        from ..plots_faithfulness import save_faithfulness_figures

        f_metrics = list(options.faithfulness_metrics)
        f_settings = {k: dict(v) for k, v in (options.faithfulness_settings or {}).items()}
        params = {**shared, "metrics": f_metrics, "settings": jsonable_spec(f_settings)}

        def faithfulness() -> CheckResult:
            return faithfulness_test(model, x, target=target, methods=methods, metrics=f_metrics,
                                     settings=f_settings, controls=controls, progress=progress,
                                     **common)

        def save(res: CheckResult, p: Path) -> None:
            res.save(p)
            save_faithfulness_figures(res, p / "figures")

        attempt("faithfulness", lambda: check_extra("faithfulness", params, faithfulness,
                                                    save=save))
    attempt("ranking", lambda: _ranking(d, result, options, outcome, log))
    return outcome


def _activation_scales(d: Path, model: nn.Module, x: torch.Tensor, order: str, init: str,
                       group_by: Any, common: dict[str, Any], key: str | None, fp: str | None,
                       outcome: CritiqueOutcome, log: Callable[[str], None]) -> None:
    from ..checks import activation_scale_analysis
    from ..plots_critiques import activation_scales_figure

    if key is not None and (d / SCALES_CSV).is_file() and _saved_key(d / SCALES_JSON) == key:
        outcome.reused.append("activation_scales")
        outcome.written["activation_scales"] = d / SCALES_CSV
        log(f"critique activation_scales: reusing {d / SCALES_CSV} (same run and settings)")
        return
    res = activation_scale_analysis(model, x, order=order, init=init, group_by=group_by,
                                    **common)
    df = res.table
    settings = dict(res.settings)
    settings.update({"critique_key": key, "main_fingerprint": fp})
    # the table first, the figure, then the settings file that marks the extra complete
    atomic_write(d / SCALES_CSV, lambda p: df.to_csv(p, index=False))
    if not df.empty:
        _figure(lambda path: activation_scales_figure(df, "spearman", path=path),
                d / "figures" / "activation_scales.png")
    write_json(d / SCALES_JSON, {"check": "activation_scales", "settings": settings})
    outcome.written["activation_scales"] = d / SCALES_CSV


def _figure(draw: Callable[[Path], Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig = draw(path)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# the ranking
# ---------------------------------------------------------------------------------------------
def _ranking(d: Path, result: CheckResult, options: CritiqueOptions, outcome: CritiqueOutcome,
             log: Callable[[str], None]) -> None:
    from ..plots_critiques import ranking_figure

    dr = (load_data_randomization_run(options.data_randomization_run)
          if options.data_randomization_run is not None else None)
    checks, notes = ranking_inputs(d, result, dr)
    if len(checks) < 2:
        outcome.skipped["ranking"] = (f"only {len(checks)} check ranks methods; a ranking needs "
                                      "two or more")
        return
    long_ranks, long_tau, settings = compute_ranking(checks)
    settings["notes"] = notes + settings["notes"]
    if options.data_randomization_run is not None:
        settings["data_randomization_run"] = str(Path(options.data_randomization_run).resolve())
    if long_ranks["check"].nunique() < 2:
        outcome.skipped["ranking"] = "fewer than two checks share a metric to rank by"
        return
    atomic_write(d / RANKING_CSV, lambda p: long_ranks.to_csv(p, index=False))
    atomic_write(d / RANKING_TAU_CSV, lambda p: long_tau.to_csv(p, index=False))
    ranks, _, tau, _ = wide_ranking(long_ranks, long_tau)
    _figure(lambda path: ranking_figure(ranks, tau, path=path), d / "figures" / "ranking.png")
    write_json(d / RANKING_JSON, settings)
    outcome.written["ranking"] = d / RANKING_CSV


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def select_methods(run_methods: Sequence[Any] | Mapping[str, Any] | None,
                   chosen: Sequence[Any] | Mapping[str, Any] | None
                   ) -> Sequence[Any] | Mapping[str, Any] | None:
    """The methods an extra uses: ``run_methods`` when ``chosen`` is None; a dict ``chosen``
    as it is; else the entries of ``chosen`` that label one of the run's methods (with its
    settings) and the others as method names.

    Example:
        >>> select_methods({"sg": ("smoothgrad", {"samples": 5}), "g": "gradient"}, ["sg"])
        {'sg': ('smoothgrad', {'samples': 5})}
        >>> select_methods(["gradient", "smoothgrad"], None)
        ['gradient', 'smoothgrad']
    """
    if chosen is None:
        return run_methods
    if isinstance(chosen, Mapping) or not isinstance(run_methods, Mapping):
        return chosen
    if isinstance(chosen, (str, bytes)):
        chosen = [chosen]
    out: dict[str, Any] = {}
    for c in chosen:
        if isinstance(c, str):
            out[c] = run_methods.get(c, c)
        else:
            out[str(getattr(c, "name", c))] = c
    return out


def _key(fp: str | None, name: str, params: Mapping[str, Any]) -> str | None:
    """A key for reuse: the main run's fingerprint and the extra's settings."""
    if not fp:
        return None
    text = json.dumps({"main": fp, "extra": name, "params": params}, default=repr,
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _saved_key(run_json: Path) -> str | None:
    try:
        meta = json.loads(run_json.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return (meta.get("settings") or {}).get("critique_key")


def without_noise_methods(methods: Sequence[Any] | Mapping[str, Any] | None, x: Any = None
                          ) -> Sequence[Any] | Mapping[str, Any] | None:
    """``methods`` minus those that already average over noise (``Method.averages_noise``:
    SmoothGrad, VarGrad, IG-SmoothGrad); None stays None (sMPRT's own default already leaves
    them out).

    Example:
        >>> without_noise_methods(["gradient", "smoothgrad"])
        ['gradient']
        >>> without_noise_methods({"sg": ("smoothgrad", {"samples": 5}), "g": "gradient"})
        {'g': 'gradient'}
    """
    from ..methods import resolve

    def noisy(spec: Any) -> bool:
        if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[1], Mapping):
            return bool(resolve(spec[0], **dict(spec[1])).averages_noise)
        return bool(resolve(spec).averages_noise)

    if methods is None:
        return None
    if isinstance(methods, Mapping):
        return {k: v for k, v in methods.items() if not noisy(v)}
    if isinstance(methods, (str, bytes)):
        methods = [methods]
    return [m for m in methods if not noisy(m)]
