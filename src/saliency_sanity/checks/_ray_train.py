"""Independent trainings as Ray tasks (``backend="ray"``): the one path of DiffROAR's
retrainings, BlockMNIST's two models and the data randomization test's two models.

This process (the driver) looks each training up in the trainer cache first, puts what the
tasks need in Ray's object store once (each distinct data set or shared setup), trains only the
missing runs as tasks (``cache_dir=False`` there: workers write nothing) and records each
trained model in the cache as it comes back, atomically: only this process writes, and the
models are the local ones, bit for bit on CPU (each task uses this process's torch thread
count).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TrainJob:
    """One training, as ``training.train(factory, data, config, model_kwargs=...,
    adversarial=...)`` would run it. The data set is ``data``, or ``build(source)`` when a
    ``build`` is given: then ``source`` is what goes to the workers (shared by many jobs and sent
    once), and each builds its data set from it there (DiffROAR masks the shared data per unit);
    this process builds it only to look the run up in the cache.

    Example:
        >>> job = TrainJob("mnist_mlp", config=None, data="ds")
        >>> job.dataset()
        'ds'
    """

    factory: Any
    config: Any
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    adversarial: Any = None
    data: Any = None
    source: Any = None
    build: Callable[[Any], Any] | None = None

    def dataset(self) -> Any:
        """The job's data set (built from ``source`` when the job has a ``build``)."""
        return self.data if self.build is None else self.build(self.source)

    def shipped(self) -> Any:
        """What a task receives: ``source`` with a ``build``, else the data set."""
        return self.data if self.build is None else self.source


def train_task(factory: Any, shipped: Any, build: Callable[[Any], Any] | None, config: Any,
               kw: dict[str, Any], adversarial: Any, device: str | None) -> tuple[Any, float]:
    """One training on a Ray worker: nothing written there; the model comes back on the CPU
    with the seconds it took."""
    from .. import training

    ds = shipped if build is None else build(shipped)
    t0 = time.perf_counter()
    res = training.train(factory, ds, config, cache_dir=False, progress=False,
                         model_kwargs=kw, adversarial=adversarial, device=device)
    res.model.cpu()
    return res, time.perf_counter() - t0


def train_on_ray(jobs: Sequence[TrainJob], cache_dir: Any, address: str | None = None,
                 options: Mapping[str, Any] | None = None, device: Any = None,
                 on_result: Callable[[int, Any, float], None] | None = None) -> list[Any]:
    """The ``training.TrainResult`` of each job, in order: from the trainer cache at
    ``cache_dir``, or trained as a Ray task (on the cluster at ``address``, with the task
    ``options``; ``device`` as for ``training.train``) and then written to the cache here.
    ``on_result(index, result, seconds)`` is called as each one is there (cache hits first,
    then the tasks as they finish), so that the caller can write it at once.

    Example:
        >>> # std, rob = train_on_ray([TrainJob("mnist_cnn", cfg, data=ds),
        >>> #                          TrainJob("mnist_cnn", cfg, data=ds, adversarial=pgd)], None)
    """
    from ..engine import ray_backend
    from ..training.cache import cached_result, store_result

    ray_backend.require_ray()
    found: list[Any] = [None] * len(jobs)
    todo = []
    for i, job in enumerate(jobs):
        t0 = time.perf_counter()
        res = cached_result(job.factory, job.dataset(), job.config, cache_dir,
                            model_kwargs=dict(job.model_kwargs), device=device,
                            adversarial=job.adversarial)
        if res is None:
            todo.append(i)
            continue
        found[i] = res  # trained before (another method's k = 1 run, a killed run): no task
        if on_result is not None:
            on_result(i, res, time.perf_counter() - t0)
    if not todo:
        return found
    refs: dict[int, Any] = {}  # id of what is shipped -> its object reference: each sent once
    for i in todo:
        obj = jobs[i].shipped()
        if id(obj) not in refs:
            refs[id(obj)] = ray_backend.put(obj, address)
    dev = ray_backend.worker_device(device)
    calls = [((jobs[i].factory, refs[id(jobs[i].shipped())], jobs[i].build, jobs[i].config,
               dict(jobs[i].model_kwargs), jobs[i].adversarial, dev), {}) for i in todo]
    for k, (res, seconds) in ray_backend.iter_calls(train_task, calls, address, options,
                                                    device or "cpu"):
        i = todo[k]
        job = jobs[i]
        if cache_dir is not False:
            res = store_result(res, job.factory, job.dataset(), job.config, cache_dir,
                               model_kwargs=dict(job.model_kwargs), device=device,
                               adversarial=job.adversarial)
        found[i] = res
        if on_result is not None:
            on_result(i, res, seconds)
    return found
