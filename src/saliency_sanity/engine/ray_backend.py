"""The Ray backend: every unit of work a Ray task, results streamed back to this process.

``RunConfig(backend="ray")`` hands :func:`~.evaluator.evaluate` a :class:`RayRunner`. It puts
the evaluator's inputs -- the plan (the private copy of the model, or the given models), the
inputs and targets, the methods and scores, views, pairs and curves -- in Ray's object store
once (``ray.put``), and submits one task per unit that is not finished yet. A worker rebuilds
the evaluator from that one object the first time it meets the run and keeps it for the run's
next units (its stage models and activation reuse stay warm); a task returns only its unit's
chunk of column arrays. The driver -- this process -- receives the chunks as they finish and
alone writes them to the run directory's store, once each, atomically: the run directory is the
one a local run writes, and a run interrupted on one backend resumes on the other.

Numbers are the local ones, bit for bit on CPU: a unit's result depends only on its key (seeds
derive from the run's seed, the stage and the unit's index, never from the order units run in),
and each task uses as many torch threads as this process (matrix products may add in another
order with another thread count). A worker killed mid-unit (a node lost, out of memory) makes
Ray run the task again (``max_retries``); an error raised by the code is not retried but raised
here, and the units finished before it stay saved.

Ray is imported only here, and only when the Ray backend is asked for.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .._imports import require
from .evaluator import Evaluator, Unit

#: how often Ray runs a task again whose worker died (system failures only, not exceptions)
MAX_RETRIES = 3

# worker side: the evaluator of the run a worker is serving (one run at a time)
_WORKER: dict[str, Evaluator] = {}


def require_ray() -> Any:
    """The ``ray`` module, or an ImportError that says how to install it."""
    return require("ray")


def connect(address: str | None = None) -> Any:
    """Ray, initialized: the cluster already initialized in this process, else the one at
    ``address`` (None: ``$RAY_ADDRESS`` or a new local cluster on this machine)."""
    ray = require_ray()
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING,
                 log_to_driver=True)
    return ray


def _models(plan: Any) -> list[torch.nn.Module]:
    """The modules a plan holds (a stage plan's trained copy, a fixed plan's models)."""
    if hasattr(plan, "models"):
        return list(plan.models)
    return [plan.trained]


def _to_device(spec: dict[str, Any], device: torch.device | str) -> dict[str, Any]:
    """The evaluator's arguments with the plan's models and every tensor on ``device``; the
    models move in place (they are the plan's private copies)."""
    for m in _models(spec["plan"]):
        m.to(device)
    out = dict(spec)
    for k in ("x", "target"):
        if out[k] is not None:
            out[k] = out[k].to(device)
    if out["targets"]:
        out["targets"] = {k: v.to(device) for k, v in out["targets"].items()}
    return out


def run_unit(token: str, box: list[Any], unit: Unit, threads: int, device: str
             ) -> tuple[dict[str, np.ndarray], int, int]:
    """The Ray task: one unit's chunk, the operations reused in it and the most stage models
    held so far by this worker. ``box`` holds the object-store reference of the evaluator's
    arguments (in a list, so Ray does not fetch it for every task)."""
    ev = _WORKER.get(token)
    if ev is None:
        import ray

        _WORKER.clear()  # a worker serves one run at a time: drop the previous run's models
        ev = Evaluator(**_to_device(ray.get(box[0]), device))
        _WORKER[token] = ev
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        hits = ev.reuse.hits if ev.reuse is not None else 0
        with torch.inference_mode(False), torch.enable_grad():
            chunk = ev.unit(unit, False, lambda: None)
        after = ev.reuse.hits if ev.reuse is not None else 0
        return chunk, after - hits, int(ev.plan.peak_held)
    finally:
        torch.set_num_threads(before)


def _worker_device(device: torch.device) -> str:
    """The device name on a worker: Ray shows a task its own GPU(s) as ``cuda:0`` ..."""
    return "cuda" if device.type == "cuda" else str(device)


def task_options(options: Mapping[str, Any] | None, device: torch.device, threads: int,
                 max_cpus: float | None = None) -> dict[str, Any]:
    """Ray options of every unit's task: ``options`` over the defaults (one GPU per task on
    CUDA; as many CPUs as torch threads, at most the largest node's; retries on worker death).

    Example:
        >>> task_options(None, torch.device("cuda"), 4, max_cpus=2)["num_gpus"]
        1
        >>> task_options({"num_cpus": 3}, torch.device("cpu"), 1)["num_cpus"]
        3
    """
    cpus = float(threads) if max_cpus is None else float(min(threads, max(1.0, max_cpus)))
    out: dict[str, Any] = {"num_cpus": cpus, "max_retries": MAX_RETRIES,
                           "retry_exceptions": False}
    if device.type == "cuda":
        out["num_gpus"] = 1
    out.update(dict(options or {}))
    return out


class RayRunner:
    """Runs units as Ray tasks (see the module docstring); streams ``(unit, chunk)`` back.

    Args:
        address: the Ray cluster (see :func:`connect`).
        options: Ray task options over :func:`task_options`' defaults.
        device: where the workers compute (default: the device of the inputs).
    """

    def __init__(self, address: str | None = None, options: Mapping[str, Any] | None = None,
                 device: torch.device | str | None = None) -> None:
        require_ray()  # fail before any work when the extra is missing
        self.address, self.options = address, dict(options or {})
        self.device = None if device is None else torch.device(device)
        self.reused = 0
        self.peak_held = 0
        self.tasks = 0

    def run(self, ev: Evaluator, units: Sequence[Unit], last: int,
            on_step: Callable[[], None]) -> Iterator[tuple[Unit, dict[str, np.ndarray]]]:
        if not units:
            return
        ray = connect(self.address)
        device = self.device or ev.x.device
        ref = _put(ray, ev.spec, device)
        max_cpus = max((n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n["Alive"]),
                       default=None)
        opts = task_options(self.options, device, torch.get_num_threads(), max_cpus)
        task = ray.remote(run_unit).options(**opts)
        token = uuid.uuid4().hex
        threads = int(torch.get_num_threads())
        pending = {task.remote(token, [ref], u, threads, _worker_device(device)): u
                   for u in units}
        self.tasks += len(pending)
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for r in ready:
                    unit = pending.pop(r)
                    chunk, hits, peak = ray.get(r)
                    self.reused += int(hits)
                    self.peak_held = max(self.peak_held, int(peak))
                    for _ in ev.views:
                        on_step()
                    yield unit, chunk
        finally:
            for r in pending:  # an error (or a failed write here): stop the rest
                ray.cancel(r)
            del ref

    def stats(self, ev: Evaluator) -> tuple[int, int]:
        return self.reused, self.peak_held


def call(fn: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any],
         threads: int) -> Any:
    """The Ray task of :func:`run_calls`: ``fn(*args, **kwargs)`` with ``threads`` torch
    threads."""
    import ray

    args = [ray.get(a) if isinstance(a, ray.ObjectRef) else a for a in args]  # put() values
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return fn(*args, **kwargs)
    finally:
        torch.set_num_threads(before)


def iter_calls(fn: Callable[..., Any],
               calls: Sequence[tuple[Sequence[Any], Mapping[str, Any]]],
               address: str | None = None, options: Mapping[str, Any] | None = None,
               device: torch.device | str = "cpu") -> Iterator[tuple[int, Any]]:
    """Independent calls ``fn(*args, **kwargs)`` as Ray tasks (one retraining each, ...):
    ``(index, result)`` pairs as the tasks finish, so that the caller (the driver) can write
    each result as it arrives. Each task uses this process's torch thread count (the same
    numbers as a local call, bit for bit on CPU) and :func:`task_options`' resources (one GPU
    per task on CUDA); a worker that dies is retried. Arguments are sent once per call: put
    large shared ones in the object store first (:func:`put`). Closing the iterator early (an
    error in the caller) cancels the tasks not finished yet."""
    if not calls:
        return
    ray = connect(address)
    threads = int(torch.get_num_threads())
    max_cpus = max((n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n["Alive"]),
                   default=None)
    opts = task_options(options, torch.device(device), threads, max_cpus)
    task = ray.remote(call).options(**opts)
    pending = {task.remote(fn, list(a), dict(k), threads): i for i, (a, k) in enumerate(calls)}
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for r in ready:
                yield pending.pop(r), ray.get(r)
    finally:
        for r in pending:
            ray.cancel(r)


def run_calls(fn: Callable[..., Any], calls: Sequence[tuple[Sequence[Any], Mapping[str, Any]]],
              address: str | None = None, options: Mapping[str, Any] | None = None,
              device: torch.device | str = "cpu") -> list[Any]:
    """:func:`iter_calls`' results in the order of ``calls``."""
    out: list[Any] = [None] * len(calls)
    for i, res in iter_calls(fn, calls, address, options, device):
        out[i] = res
    return out


def put(value: Any, address: str | None = None) -> Any:
    """``value`` in Ray's object store (sent once; a task given the reference gets the value)."""
    return connect(address).put(value)


def worker_device(device: torch.device | str | None) -> str | None:
    """The device a task names (its own GPU is ``cuda``); None stays None."""
    return None if device is None else _worker_device(torch.device(device))


def _put(ray: Any, spec: dict[str, Any], device: torch.device) -> Any:
    """The evaluator's arguments in the object store, once: held stage models dropped (workers
    build their own); models and tensors sent from the CPU when computing on an accelerator (a
    worker moves them to its own device) and moved back here afterwards."""
    spec["plan"].release()
    home = spec["x"].device
    sent = spec if device.type == "cpu" and home.type == "cpu" else _to_device(spec, "cpu")
    try:
        return ray.put(sent)
    except Exception as err:  # pickling: a TorchScript model, a lambda holding a lock ...
        raise TypeError(
            f"the model, inputs or methods cannot be sent to Ray workers ({err}); use the "
            "local backend, or pass a picklable model (an nn.Module, not a TorchScript one)"
        ) from err
    finally:
        if sent is not spec:
            _to_device(spec, home)
