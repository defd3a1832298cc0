"""``execute``: validate -> plan -> units -> evaluator -> store -> result, for every check."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..results import CheckResult
from .config import RunConfig
from .evaluator import Pair, RunOutput, View, batch_units, evaluate
from .store import UnitStore, fingerprint


def progress_bar(enabled: bool, total: int, desc: str, unit: str = "maps") -> Any:
    """A tqdm bar on stderr (silent when ``enabled`` is False)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, unit=unit)


def execute(
    check: str,
    *,
    plan: Any,
    views: Sequence[View],
    pairs: Sequence[Pair],
    x: torch.Tensor,
    target: torch.Tensor | None,
    target_mode: str,
    method_objs: Mapping[str, Any],
    score_objs: Mapping[str, Any],
    config: RunConfig,
    settings: Mapping[str, Any],
    models: Sequence[nn.Module],
    targets: Mapping[str, torch.Tensor] | None = None,
    reuse_bytes: int = 0,
    desc: str | None = None,
    more_settings: Callable[[RunOutput], Mapping[str, Any]] | None = None,
    curves: Any = None,
    probe: Any = None,
    post: Callable[[RunOutput], RunOutput] | None = None,
) -> CheckResult:
    """Run a check's units through the evaluator and return its :class:`CheckResult`.

    ``settings`` (JSON-able, without the common ones, which ``config`` records) and the
    ``models`` and inputs make the run's fingerprint. With ``config.run_dir``, each finished
    unit is written to the run directory's store, a run started again resumes from the units
    done, a finished identical run is loaded instead of recomputed, and the result is saved
    there at the end.

    ``probe`` (arrays per unit, see :class:`~.evaluator.Evaluator`) and ``post`` (turns the
    finished :class:`RunOutput` into the one the result is made of, e.g. a check whose table is
    built from probe arrays) are for checks whose units measure something other than pairs of
    maps.
    """
    runner = make_runner(config, x.device)  # before any file is written: a missing extra
    n_examples = max(0, min(config.n_examples, int(x.shape[0])))
    units = batch_units(int(x.shape[0]), config.batch_size)
    full = {"check": check, **settings,
            **config.record(x, target, x.device, target_mode, method_objs, score_objs,
                            model=plan.model(0))}
    fp = None
    store = None
    if config.run_dir is not None:
        stable = {k: v for k, v in full.items() if k != "versions"}
        fp = fingerprint(list(models), [x, target, *(targets or {}).values()], stable)
        store = UnitStore(config.run_dir, fp, {"check": check, "n_samples": int(x.shape[0])})
        store.open()
        finished = finished_run(store.run_dir, fp)
        if finished is not None:
            store.clear()
            return finished
        done = len(store.done() & {u.key for u in units})
        if done and config.progress:
            import sys

            print(f"resuming: {done} of {len(units)} units done", file=sys.stderr)
    bar = progress_bar(config.progress, len(units) * len(views), desc or check,
                       unit="maps")
    try:
        out = evaluate(plan, views, pairs, x, target, target_mode, method_objs, score_objs,
                       units, config.seed, n_examples, on_step=lambda: bar.update(1),
                       store=store, targets=targets, reuse_bytes=reuse_bytes,
                       curves=curves, probe=probe, runner=runner,
                       dtype=config.autocast_dtype)
    finally:
        bar.close()
    if post is not None:
        out = post(out)
    full["fingerprint"] = fp
    full["engine"] = {"units": len(units), "stage_models_held_at_most": out.peak_held}
    if config.backend != "local":  # recorded outside the fingerprint: runs resume across
        full["engine"]["backend"] = config.backend
    if more_settings is not None:
        full.update(more_settings(out))
    result = CheckResult(check=check, table=out.table, settings=full, stages=out.stages,
                         examples=out.examples, null=out.null)
    if store is not None:
        result.save(store.run_dir)
        store.clear()
    return result


def make_runner(config: RunConfig, device: torch.device) -> Any:
    """The runner of ``config.backend``: None (the local default) or a Ray runner (Ray is
    imported only then; without it, an ImportError names the extra to install)."""
    if config.backend == "local":
        return None
    from .ray_backend import RayRunner

    return RayRunner(config.ray_address, config.ray_options, device)


def finished_run(run_dir: str | Path, fp: str) -> CheckResult | None:
    """The saved result of this very run (same fingerprint), if it was completed before."""
    d = Path(run_dir)
    if not ((d / "run.json").is_file() and (d / "results.csv").is_file()):
        return None
    try:
        done = CheckResult.load(d)
    except (OSError, ValueError):
        return None
    return done if done.settings.get("fingerprint") == fp else None
