"""DiffROAR's retrainings as Ray tasks (``diffroar(..., backend="ray")``).

The run's :class:`~._retrain.RetrainSetup` (data, attributions, trainer settings) goes to Ray's
object store once; each retraining not finished yet -- no row in ``run_dir/units/`` and no
finished model in the trainer cache -- is one task, which trains on its worker and writes
nothing there. This process (the driver) receives each trained model as it finishes, records it
in the trainer cache and writes the unit's row, atomically, once: the run directory is the one a
local run writes, and a run interrupted on one backend resumes on the other. A task uses as
many torch threads as the driver, so the accuracies are the local ones, bit for bit on CPU.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from .._io import write_json
from ._retrain import RetrainSetup, RetrainUnit, saved_row, unit_path, unit_row, unit_training


def retrain_task(unit: RetrainUnit, setup: RetrainSetup) -> tuple[Any, float]:
    """One retraining on a Ray worker: nothing written there; the model comes back on the CPU
    with the seconds it took."""
    from .. import training

    ds, cfg = unit_training(unit, setup)
    t0 = time.perf_counter()
    res = training.train(setup.factory, ds, cfg, cache_dir=False, progress=False,
                         model_kwargs=dict(setup.model_kwargs))
    res.model.cpu()
    return res, time.perf_counter() - t0


def run_units_on_ray(units: Sequence[RetrainUnit], setup: RetrainSetup,
                     run_dir: str | os.PathLike | None, address: str | None = None,
                     options: Mapping[str, Any] | None = None, progress: bool = False,
                     desc: str = "diffroar") -> list[dict[str, Any]]:
    """The rows of ``units`` (in their order), the missing ones trained as Ray tasks."""
    from tqdm.auto import tqdm

    from ..engine import ray_backend
    from ..training.cache import cached_result, store_result

    ray_backend.require_ray()
    fp = setup.fingerprint()
    kw = dict(setup.model_kwargs)
    rows: list[dict[str, Any] | None] = [saved_row(u, fp, run_dir) for u in units]
    todo = []
    for i, u in enumerate(units):
        if rows[i] is not None:
            continue
        ds, cfg = unit_training(u, setup)
        t0 = time.perf_counter()
        res = cached_result(setup.factory, ds, cfg, setup.cache_dir, model_kwargs=kw)
        if res is None:
            todo.append(i)
        else:  # trained before (another method's k = 1 run, a killed run): no task needed
            rows[i] = _finish(units[i], setup, res, time.perf_counter() - t0, fp, run_dir)
    bar = tqdm(total=len(units), initial=len(units) - len(todo), desc=desc,
               disable=not progress, leave=False)
    try:
        if todo:
            ref = ray_backend.put(dataclasses.replace(setup, cache_dir=False, progress=False),
                                  address)
            calls = [((units[i], ref), {}) for i in todo]
            for j, (res, seconds) in ray_backend.iter_calls(retrain_task, calls, address,
                                                            options):
                i = todo[j]
                if setup.cache_dir is not False:
                    ds, cfg = unit_training(units[i], setup)
                    res = store_result(res, setup.factory, ds, cfg, setup.cache_dir,
                                       model_kwargs=kw)
                rows[i] = _finish(units[i], setup, res, seconds, fp, run_dir)
                bar.update(1)
    finally:
        bar.close()
    return [r for r in rows if r is not None]


def _finish(unit: RetrainUnit, setup: RetrainSetup, res: Any, seconds: float, fp: str,
            run_dir: str | os.PathLike | None) -> dict[str, Any]:
    row = unit_row(unit, setup, res, seconds, fp)
    path = unit_path(unit, run_dir)
    if path is not None:
        write_json(path, row)
    return {**row, "from_cache": False}
