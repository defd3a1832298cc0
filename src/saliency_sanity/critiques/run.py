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
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from ._io import atomic_write, write_json
from .checks._result import CheckResult

#: Subdirectories of the CheckResult extras, by option name.
EXTRA_DIRS = {"smprt": "smprt", "emprt": "emprt", "random_logit": "random_logit"}
SCALES_CSV = "activation_scales.csv"
SCALES_JSON = "activation_scales.json"
RANKING_CSV = "ranking.csv"
RANKING_TAU_CSV = "ranking_tau.csv"
RANKING_JSON = "ranking.json"
CRITIQUE_FIGURES = ("activation_scales", "ranking")

#: Display names of the checks in the ranking, by ``CheckResult.check``.
CHECK_LABELS = {
    "model_randomization": "MPRT",
    "smooth_model_randomization": "sMPRT",
    "efficient_model_randomization": "eMPRT",
    "random_logit": "random logit",
    "data_randomization": "data randomization",
}
#: Similarity metrics tried for the ranking, in order of preference.
RANKING_METRICS = ("spearman_abs", "ssim", "spearman", "hog", "pearson", "mse")
RANKING_COLUMNS = ["check", "method", "metric", "higher_is_better", "mean", "rank"]
TAU_COLUMNS = ["check_a", "check_b", "tau", "pvalue", "n"]
#: Methods sMPRT leaves out: they already average over noise.
NOISE_METHODS = frozenset({"smoothgrad", "vargrad", "ig_smoothgrad"})


@dataclass
class CritiqueOptions:
    """Which extras to compute beside a model randomization run, and their settings.

    Attributes:
        smprt, emprt, random_logit, activation_scales: compute that extra.
        smprt_samples, smprt_noise: sMPRT's noisy copies per map and noise level (fraction of
            each input's max - min); paper: 50 and 0.1.
        smprt_normalize: ``"second_moment"`` (the paper's implementation) or ``"none"``: the
            post-processing applied to both maps before each score.
        smprt_order: sMPRT's randomization order (paper: ``"bottom_up"``).
        smprt_methods: methods for sMPRT: labels of the run's methods (their settings are
            kept), other method names, or a ``{label: spec}`` dict; None = the run's methods minus
            the noise-averaged ones (SmoothGrad, VarGrad, IG-SmoothGrad).
        methods: methods for eMPRT and the random logit test, chosen as ``smprt_methods``;
            None = the run's methods.
        emprt_bins: histogram bins of eMPRT (paper: 100).
        data_randomization_run: a data randomization run directory whose results join the
            method ranking.

    Example:
        >>> CritiqueOptions.all(smprt_samples=10).any(), CritiqueOptions().any()
        (True, False)
    """

    smprt: bool = False
    emprt: bool = False
    random_logit: bool = False
    activation_scales: bool = False
    smprt_samples: int = 50
    smprt_noise: float = 0.1
    smprt_normalize: str = "second_moment"
    smprt_order: str = "bottom_up"
    smprt_methods: Sequence[Any] | Mapping[str, Any] | None = None
    methods: Sequence[Any] | Mapping[str, Any] | None = None
    emprt_bins: int = 100
    data_randomization_run: str | os.PathLike | None = None

    @classmethod
    def all(cls, **kw: Any) -> CritiqueOptions:
        """Every extra on (``--critiques``), with ``kw`` overriding settings."""
        base = {"smprt": True, "emprt": True, "random_logit": True, "activation_scales": True}
        base.update(kw)
        return cls(**base)

    def any(self) -> bool:
        """True when anything beyond the main check is asked for."""
        return bool(self.smprt or self.emprt or self.random_logit or self.activation_scales
                    or self.data_randomization_run)

    def validate(self) -> None:
        """Raise ValueError for settings no extra can run with (called before any work)."""
        s = self.smprt_samples
        if not isinstance(s, int) or isinstance(s, bool) or s < 1:
            raise ValueError(f"--smprt-samples must be a positive integer, got {s!r}")
        if not isinstance(self.smprt_noise, (int, float)) or not self.smprt_noise >= 0:
            raise ValueError(f"--smprt-noise must be a non-negative fraction of the input range, "
                             f"got {self.smprt_noise!r}")
        b = self.emprt_bins
        if not isinstance(b, int) or isinstance(b, bool) or b < 2:
            raise ValueError(f"--emprt-bins must be an integer >= 2, got {b!r}")
        if self.smprt_normalize not in ("second_moment", "none"):
            raise ValueError(f"--smprt-normalize must be 'second_moment' or 'none', got "
                             f"{self.smprt_normalize!r}")
        if self.data_randomization_run is not None:
            load_data_randomization_run(self.data_randomization_run)

    def settings(self) -> dict[str, Any]:
        """JSON-able record of the options (for ``run.json``)."""
        out = asdict(self)
        out["smprt_methods"] = _jsonable_spec(self.smprt_methods)
        out["methods"] = _jsonable_spec(self.methods)
        if self.data_randomization_run is not None:
            out["data_randomization_run"] = str(self.data_randomization_run)
        return out


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
) -> CritiqueOutcome:
    """Compute the extras in ``options`` for the model randomization ``result`` and save them in
    ``out`` (the run directory of ``result``), then the method ranking.

    ``model, x, target, methods, scores, controls, group_by`` must be what the main run was
    given; the seed, init, target mode, batch size and the main order are read from
    ``result.settings`` so every extra uses the same ones. The device is ``device`` if given,
    else the main run's. Failures of single extras are caught and reported in the outcome (and
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

    def check_extra(name: str, params: dict[str, Any], compute: Callable[[], CheckResult]
                    ) -> None:
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
        outcome.written[name] = save_dir_atomically(d, EXTRA_DIRS[name], res.save)

    shared = {"methods": _jsonable_spec(methods), "scores": _jsonable_spec(scores),
              "controls": _jsonable_spec(controls), "group_by": _jsonable_spec(group_by),
              "target_mode": target_mode, "init": init, **{k: str(v) for k, v in common.items()}}

    if options.smprt:
        from .checks import smooth_model_randomization_test

        sm_methods = select_methods(run_methods, options.smprt_methods) \
            if options.smprt_methods is not None else without_noise_methods(run_methods)
        if sm_methods is not None and len(sm_methods) == 0:
            outcome.skipped["smprt"] = ("no method left once the noise-averaged ones "
                                        "(smoothgrad, vargrad, ig_smoothgrad) are removed")
            log(f"critique smprt skipped: {outcome.skipped['smprt']}")
        else:
            params = {**shared, "methods": _jsonable_spec(sm_methods),
                      "samples": options.smprt_samples, "noise": options.smprt_noise,
                      "normalize": options.smprt_normalize, "order": options.smprt_order}
            attempt("smprt", lambda: check_extra("smprt", params, lambda: (
                smooth_model_randomization_test(
                    model, x, target=target, methods=sm_methods, scores=scores,
                    samples=options.smprt_samples, noise=float(options.smprt_noise),
                    order=options.smprt_order, normalize=options.smprt_normalize, init=init,
                    target_mode=target_mode, controls=controls, group_by=group_by,
                    progress=progress, **common))))
    if options.emprt:
        from .checks import efficient_model_randomization_test

        e_order = main_order if main_order in ("bottom_up", "cascading") else "bottom_up"
        params = {**shared, "bins": options.emprt_bins, "order": e_order}
        attempt("emprt", lambda: check_extra("emprt", params, lambda: (
            efficient_model_randomization_test(
                model, x, target=target, methods=methods, bins=options.emprt_bins,
                order=e_order, init=init, target_mode=target_mode, controls=controls,
                group_by=group_by, progress=progress, **common))))
    if options.random_logit:
        from .checks import random_logit_test

        params = {**shared}
        attempt("random_logit", lambda: check_extra("random_logit", params, lambda: (
            random_logit_test(model, x, target=target, methods=methods, scores=scores,
                              controls=controls, progress=progress, **common))))
    if options.activation_scales:
        params = {"order": main_order, "init": init, "group_by": _jsonable_spec(group_by),
                  **{k: str(v) for k, v in common.items()}}
        attempt("activation_scales", lambda: _activation_scales(
            d, model, x, main_order, init, group_by, common, _key(fp, "activation_scales",
                                                                    params), fp, outcome, log))
    attempt("ranking", lambda: _ranking(d, result, options, outcome, log))
    return outcome


def _activation_scales(d: Path, model: nn.Module, x: torch.Tensor, order: str, init: str,
                       group_by: Any, common: dict[str, Any], key: str | None, fp: str | None,
                       outcome: CritiqueOutcome, log: Callable[[str], None]) -> None:
    from .checks import activation_scale_analysis
    from .plots_critiques import activation_scales_figure

    if key is not None and (d / SCALES_CSV).is_file() and _saved_key(d / SCALES_JSON) == key:
        outcome.reused.append("activation_scales")
        outcome.written["activation_scales"] = d / SCALES_CSV
        log(f"critique activation_scales: reusing {d / SCALES_CSV} (same run and settings)")
        return
    df = activation_scale_analysis(model, x, order=order, init=init, seed=common["seed"],
                                   group_by=group_by, batch_size=common["batch_size"],
                                   device=common["device"])
    settings = dict(df.attrs.get("settings", {}))
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
def ranking_inputs(d: str | os.PathLike, result: CheckResult,
                   data_randomization_run: str | os.PathLike | None = None
                   ) -> tuple[dict[str, CheckResult], list[str]]:
    """The checks that rank methods for this run: the main result (unless its order is
    ``independent``, whose last stage is not full randomization), the saved extras in ``d`` and
    a data randomization run. Returns ``({label: result}, notes)``."""
    d = Path(d)
    notes: list[str] = []
    checks: dict[str, CheckResult] = {}
    if result.settings.get("order") == "independent":
        notes.append("MPRT left out: its order is 'independent', so no stage randomizes every "
                     "block")
    else:
        checks[CHECK_LABELS.get(result.check, result.check)] = result
    for sub in EXTRA_DIRS.values():
        if (d / sub / "run.json").is_file():
            try:
                res = CheckResult.load(d / sub)
            except (OSError, ValueError) as err:
                notes.append(f"{sub}/ left out: unreadable ({err})")
                continue
            checks[CHECK_LABELS.get(res.check, res.check)] = res
    if data_randomization_run is not None:
        dr = load_data_randomization_run(data_randomization_run)
        checks[CHECK_LABELS["data_randomization"]] = dr
        if dr.settings.get("valid") is False:
            notes.append("the data randomization run is INVALID (its random-label model did not "
                         f"memorize: {dr.settings.get('invalid_reason', '')}); its ranks are shown "
                         "but should not be trusted")
    return checks, notes


def choose_ranking_metric(checks: Mapping[str, CheckResult]) -> tuple[str | None, list[str]]:
    """The similarity metric shared by the most similarity checks (preferring
    ``spearman_abs``, then ``ssim``, ...), and the similarity checks that lack it."""
    sim = {k: set(r.table["metric"]) for k, r in checks.items()
           if r.check != "efficient_model_randomization"}
    if not sim:
        return None, []
    every = sorted(set().union(*sim.values()))
    pref = [m for m in RANKING_METRICS if m in every] + [m for m in every
                                                          if m not in RANKING_METRICS]
    if not pref:
        return None, list(sim)
    best = max(pref, key=lambda m: (sum(m in s for s in sim.values()), -pref.index(m)))
    return best, [k for k, s in sim.items() if best not in s]


def compute_ranking(checks: Mapping[str, CheckResult]
                    ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Long tables of ranks (``RANKING_COLUMNS``) and Kendall's tau (``TAU_COLUMNS``) of the
    checks, and the settings (metric used, checks left out), via
    :func:`saliency_sanity.checks.method_ranking` (controls excluded).

    Example:
        >>> t = pd.DataFrame({"method": ["a", "b", "c"], "stage": 1, "layer": "x", "sample": 0,
        ...                   "metric": "spearman_abs", "value": [0.1, 0.5, 0.9]})
        >>> r1 = CheckResult(check="random_logit", table=t)
        >>> r2 = CheckResult(check="model_randomization", table=t.assign(value=[.9, .5, .1]))
        >>> ranks, tau, _ = compute_ranking({"random logit": r1, "MPRT": r2})
        >>> float(tau.query("check_a == 'random logit' and check_b == 'MPRT'")["tau"].iloc[0])
        -1.0
    """
    from .checks import method_ranking
    from .checks.ranking import _higher_is_better

    metric, lacking = choose_ranking_metric(checks)
    use = {k: r for k, r in checks.items() if k not in lacking}
    notes = [f"{k} left out: it has no {metric!r} rows" for k in lacking]
    metrics = {k: ("emprt" if r.check == "efficient_model_randomization" else metric)
               for k, r in use.items()}
    ranks, tau = method_ranking(use, metric=metric or "spearman_abs", metrics=metrics)
    means = ranks.attrs["scores"]
    rows = []
    for k in ranks.columns:
        hib = _higher_is_better(metrics[k])
        for method in ranks.index:
            if pd.isna(ranks.loc[method, k]):
                continue
            rows.append([k, method, metrics[k], hib, float(means.loc[method, k]),
                         float(ranks.loc[method, k])])
    long_ranks = pd.DataFrame(rows, columns=RANKING_COLUMNS)
    pval, count = tau.attrs["pvalue"], tau.attrs["n"]
    trows = [[a, b, float(tau.loc[a, b]), float(pval.loc[a, b]), int(count.loc[a, b])]
             for a in tau.index for b in tau.columns]
    long_tau = pd.DataFrame(trows, columns=TAU_COLUMNS)
    settings = {"metric": metric, "metrics": metrics, "checks": list(ranks.columns),
                "controls": "excluded", "notes": notes,
                "tau": "Kendall's tau-b (scipy.stats.kendalltau) over the methods both checks rank"}
    return long_ranks, long_tau, settings


def wide_ranking(long_ranks: pd.DataFrame, long_tau: pd.DataFrame
                 ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """``(ranks, means, tau, n)`` as method x check and check x check tables, in file order.

    Example:
        >>> lr = pd.DataFrame([["A", "g", "m", False, 0.1, 1.0]], columns=RANKING_COLUMNS)
        >>> lt = pd.DataFrame([["A", "A", 1.0, 0.0, 1]], columns=TAU_COLUMNS)
        >>> float(wide_ranking(lr, lt)[0].loc["g", "A"])
        1.0
    """
    checks = list(dict.fromkeys(long_ranks["check"]))
    methods = list(dict.fromkeys(long_ranks["method"]))
    ranks = long_ranks.pivot(index="method", columns="check", values="rank").reindex(
        index=methods, columns=checks)
    means = long_ranks.pivot(index="method", columns="check", values="mean").reindex(
        index=methods, columns=checks)
    tchecks = list(dict.fromkeys(list(long_tau["check_a"]) + list(long_tau["check_b"])))
    tau = long_tau.pivot(index="check_a", columns="check_b", values="tau").reindex(
        index=tchecks, columns=tchecks)
    n = long_tau.pivot(index="check_a", columns="check_b", values="n").reindex(
        index=tchecks, columns=tchecks)
    return ranks, means, tau, n


def _ranking(d: Path, result: CheckResult, options: CritiqueOptions, outcome: CritiqueOutcome,
             log: Callable[[str], None]) -> None:
    from .plots_critiques import ranking_figure

    checks, notes = ranking_inputs(d, result, options.data_randomization_run)
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
def load_data_randomization_run(path: str | os.PathLike) -> CheckResult:
    """Load a data randomization run directory, or raise ValueError saying what is wrong.

    Example:
        >>> load_data_randomization_run("/no/such/dir")
        Traceback (most recent call last):
        ...
        ValueError: --data-randomization-run /no/such/dir is not a folder
    """
    p = Path(path)
    if not p.is_dir():
        raise ValueError(f"--data-randomization-run {p} is not a folder")
    try:
        res = CheckResult.load(p)
    except (OSError, ValueError) as err:
        raise ValueError(f"--data-randomization-run {p}: {err}") from err
    if res.check != "data_randomization":
        raise ValueError(f"--data-randomization-run {p} holds a {res.check!r} run; pass a folder "
                         "written by 'saliency-sanity data-randomization'")
    return res


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


def without_noise_methods(methods: Sequence[Any] | Mapping[str, Any] | None
                          ) -> Sequence[Any] | Mapping[str, Any] | None:
    """``methods`` minus SmoothGrad, VarGrad and IG-SmoothGrad (None stays None: sMPRT's own
    default already leaves them out).

    Example:
        >>> without_noise_methods(["gradient", "smoothgrad"])
        ['gradient']
        >>> without_noise_methods({"sg": ("smoothgrad", {"samples": 5}), "g": "gradient"})
        {'g': 'gradient'}
    """
    if methods is None:
        return None
    if isinstance(methods, Mapping):
        return {k: v for k, v in methods.items() if _spec_name(v, k) not in NOISE_METHODS}
    if isinstance(methods, (str, bytes)):
        methods = [methods]
    return [m for m in methods if _spec_name(m, None) not in NOISE_METHODS]


def _spec_name(spec: Any, label: str | None) -> str | None:
    if isinstance(spec, str):
        return spec
    if isinstance(spec, tuple) and spec and isinstance(spec[0], str):
        return spec[0]
    return getattr(spec, "name", label)


def save_dir_atomically(parent: Path, name: str, save: Callable[[Path], Any]) -> Path:
    """Build ``parent/name`` under a temporary name with ``save(tmp_dir)`` and rename it into
    place (replacing an older one only once the new one is complete); return the path.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp())
        >>> save_dir_atomically(p, "x", lambda t: (t / "a.txt").write_text("1")).name
        'x'
        >>> sorted(q.name for q in p.iterdir())
        ['x']
    """
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=parent))
    final = parent / name
    try:
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o777 & ~mask)
        save(tmp)
        if final.exists():
            old = parent / f".{name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _jsonable_spec(spec: Any) -> Any:
    return json.loads(json.dumps(spec, default=repr, sort_keys=True))


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
