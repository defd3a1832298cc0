"""Several independent trainings on one data set, each a Ray task (``backend="ray"``).

This process looks each run up in the trainer cache first, puts the data set in Ray's object
store once, trains only the missing runs as tasks (``cache_dir=False`` there: workers write
nothing) and records each trained model in the cache as it comes back, atomically: only this
process writes, and the models are the local ones, bit for bit on CPU (each task uses this
process's torch thread count).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def train_task(factory: Any, ds: Any, config: Any, kw: dict[str, Any], adversarial: Any
               ) -> Any:
    """One training on a Ray worker; the model comes back on the CPU."""
    from .. import training

    res = training.train(factory, ds, config, cache_dir=False, progress=False,
                         model_kwargs=kw, adversarial=adversarial)
    res.model.cpu()
    return res


def train_on_ray(factory: Any, ds: Any, jobs: Sequence[tuple[Any, Any]],
                 model_kwargs: Mapping[str, Any], cache_dir: Any, address: str | None = None,
                 options: Mapping[str, Any] | None = None) -> list[Any]:
    """The ``training.TrainResult`` of each ``(config, adversarial)`` job, in order: from the
    cache, or trained as a Ray task and then written to the cache here."""
    from ..engine import ray_backend
    from ..training.cache import cached_result, store_result

    kw = dict(model_kwargs)
    found = [cached_result(factory, ds, c, cache_dir, model_kwargs=kw, adversarial=a)
             for c, a in jobs]
    todo = [i for i, r in enumerate(found) if r is None]
    if todo:
        ref = ray_backend.put(ds, address)
        calls = [((factory, ref, jobs[i][0], kw, jobs[i][1]), {}) for i in todo]
        for j, res in ray_backend.iter_calls(train_task, calls, address, options):
            cfg, adv = jobs[todo[j]]
            found[todo[j]] = store_result(res, factory, ds, cfg, cache_dir, model_kwargs=kw,
                                          adversarial=adv)
    return found
