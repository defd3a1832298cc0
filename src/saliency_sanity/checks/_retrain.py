"""The retraining units of ROAR / KAR / DiffROAR and their small store.

Every retraining is an independent :class:`RetrainUnit` with a stable key; :func:`run_unit`
runs one (a scheduler may run them in parallel, in any order) and writes its row atomically to
``run_dir/units/<key>.json``; the trained model is cached by the trainer (per-epoch
checkpoints), so a killed run resumes without retraining what finished.

:func:`run_units_on_ray` runs the units not finished yet -- no row in ``run_dir/units/`` and
no finished model in the trainer cache -- as Ray tasks (``checks._ray_train``): the run's
:class:`RetrainSetup` goes to Ray's object store once and each worker masks the data for its
unit; this process records each trained model in the trainer cache and writes the unit's row,
atomically, once: the run directory is the one a local run writes, and a run interrupted on one
backend resumes on the other.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .._io import write_json
from ..data import Dataset
from ..engine import derive_seed
from ._masking import check_k, masked_dataset
from ._ray_train import TrainJob, train_on_ray

KS = (1.0, 0.9, 0.7, 0.5, 0.3, 0.2, 0.1, 0.05)
SIDES = ("top", "bottom")


@dataclass(frozen=True)
class RetrainUnit:
    """One retraining: fraction ``k``, ``side``, ``repeat`` and the training seed; ``key`` is
    stable across processes (it names the unit's file).

    Example:
        >>> u = RetrainUnit(k=0.1, side="top", repeat=1, seed=5)
        >>> u.key
        'k0.1-top-r1'
    """

    k: float
    side: str
    repeat: int
    seed: int

    @property
    def key(self) -> str:
        return f"k{self.k:g}-{self.side}-r{self.repeat}"


def plan_units(ks: Sequence[float] = KS, repeats: int = 2, seed: int = 0) -> list[RetrainUnit]:
    """The retraining units of a run; each (k, side, repeat) has its own training seed, the
    same for every method (so k = 1 runs are shared through the trainer's cache), independent
    across k (so one side's luckier seeds do not shift the whole curve).

    Example:
        >>> [u.key for u in plan_units(ks=(1.0, 0.5), repeats=1)]
        ['k1-top-r0', 'k1-bottom-r0', 'k0.5-top-r0', 'k0.5-bottom-r0']
    """
    if int(repeats) != repeats or repeats < 1:
        raise ValueError(f"repeats must be an integer >= 1, got {repeats}")
    ks = [check_k(k) for k in ks]
    if not ks or len(set(ks)) != len(ks):
        raise ValueError(f"ks must be distinct fractions in (0, 1], got {list(ks)}")
    return [RetrainUnit(k, side, r, derive_seed(seed, "retrain", f"{k:g}", side, r) % 2**31)
            for k in ks for r in range(int(repeats)) for side in SIDES]


@dataclass
class RetrainSetup:
    """What every unit of one run shares (picklable when the factory is a name or a module-level
    function): the data, the attributions ranking it, the trainer settings. With
    ``per_repeat``, ``attr_train[r]`` / ``attr_test[r]`` are repeat r's maps (the random-map
    control draws a map per repeat)."""

    factory: Any
    data: Dataset
    attr_train: torch.Tensor
    attr_test: torch.Tensor
    method: str
    config: Any
    model_kwargs: dict[str, Any]
    per: str = "coordinate"
    fill: str = "scalar"
    cache_dir: Any = None
    progress: bool = False
    per_repeat: bool = False

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update(json.dumps([repr(self.factory), self.data.fingerprint(), self.method,
                             dataclasses.asdict(self.config), self.model_kwargs, self.per,
                             self.fill, self.per_repeat], sort_keys=True, default=repr).encode())
        for t in (self.attr_train, self.attr_test):
            h.update(t.contiguous().numpy().tobytes())
        return h.hexdigest()[:16]


def unit_path(unit: RetrainUnit, run_dir: str | os.PathLike | None) -> Path | None:
    """Where a unit's finished row is written (None without a run directory)."""
    return Path(run_dir) / "units" / f"{unit.key}.json" if run_dir is not None else None


def saved_row(unit: RetrainUnit, setup_fp: str, run_dir: str | os.PathLike | None
              ) -> dict[str, Any] | None:
    """The unit's row written by an earlier run of the same setup, else None (a damaged row is
    recomputed; the model itself comes from the trainer cache)."""
    path = unit_path(unit, run_dir)
    if path is None or not path.is_file():
        return None
    try:
        row = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return {**row, "from_cache": True} if row.get("setup") == setup_fp else None


def unit_training(unit: RetrainUnit, setup: RetrainSetup) -> tuple[Dataset, Any]:
    """The masked data set and the trainer settings of one unit."""
    return unit_data(unit, setup), unit_config(unit, setup)


def unit_data(unit: RetrainUnit, setup: RetrainSetup) -> Dataset:
    """The masked data set a unit trains on (built on a Ray worker from the shared setup)."""
    a_tr, a_te = ((setup.attr_train[unit.repeat], setup.attr_test[unit.repeat])
                  if setup.per_repeat else (setup.attr_train, setup.attr_test))
    return masked_dataset(setup.data, a_tr, a_te, unit.k, unit.side, setup.per, setup.fill)


def unit_config(unit: RetrainUnit, setup: RetrainSetup) -> Any:
    """The trainer settings of a unit: the run's, with the unit's seed, on true labels."""
    return dataclasses.replace(setup.config, seed=unit.seed, label_seed=None)


def unit_row(unit: RetrainUnit, setup: RetrainSetup, res: Any, seconds: float, setup_fp: str
             ) -> dict[str, Any]:
    """The table row of a unit's finished training ``res`` (as written to its file)."""
    return {"method": setup.method, "k": unit.k, "side": unit.side, "repeat": unit.repeat,
            "seed": unit.seed, "test_acc": float(res.test_acc),
            "train_acc": float(res.train_acc), "epochs": int(res.epochs),
            "reached_target": (bool(res.reached_target)
                               if setup.config.target_train_acc is not None else None),
            "cache_key": res.key, "seconds": seconds, "setup": setup_fp}


def run_unit(unit: RetrainUnit, setup: RetrainSetup, run_dir: str | os.PathLike | None = None
             ) -> dict[str, Any]:
    """Train one unit (or load its finished row from ``run_dir``) and return its table row.

    Example:
        >>> # rows = [run_unit(u, setup, "runs/x") for u in plan_units()]  # any order, any worker
    """
    from .. import training

    fp = setup.fingerprint()
    row = saved_row(unit, fp, run_dir)
    if row is not None:
        return row
    ds, cfg = unit_training(unit, setup)
    t0 = time.perf_counter()
    res = training.train(setup.factory, ds, cfg, cache_dir=setup.cache_dir,
                         progress=setup.progress, model_kwargs=dict(setup.model_kwargs))
    row = unit_row(unit, setup, res, time.perf_counter() - t0, fp)
    path = unit_path(unit, run_dir)
    if path is not None:
        write_json(path, row)
    return {**row, "from_cache": False}


def run_units_on_ray(units: Sequence[RetrainUnit], setup: RetrainSetup,
                     run_dir: str | os.PathLike | None, address: str | None = None,
                     options: Mapping[str, Any] | None = None, progress: bool = False,
                     desc: str = "diffroar") -> list[dict[str, Any]]:
    """The rows of ``units`` (in their order), the missing ones trained as Ray tasks."""
    from tqdm.auto import tqdm

    fp = setup.fingerprint()
    rows: list[dict[str, Any] | None] = [saved_row(u, fp, run_dir) for u in units]
    todo = [i for i, r in enumerate(rows) if r is None]
    shipped = dataclasses.replace(setup, cache_dir=False, progress=False)
    jobs = [TrainJob(setup.factory, unit_config(units[i], setup), setup.model_kwargs,
                     source=shipped, build=functools.partial(unit_data, units[i]))
            for i in todo]
    bar = tqdm(total=len(units), initial=len(units) - len(todo), desc=desc,
               disable=not progress, leave=False)

    def finish(j: int, res: Any, seconds: float) -> None:
        unit = units[todo[j]]
        row = unit_row(unit, setup, res, seconds, fp)
        path = unit_path(unit, run_dir)
        if path is not None:
            write_json(path, row)
        rows[todo[j]] = {**row, "from_cache": False}
        bar.update(1)

    try:
        train_on_ray(jobs, setup.cache_dir, address, options, on_result=finish)
    finally:
        bar.close()
    return [r for r in rows if r is not None]
