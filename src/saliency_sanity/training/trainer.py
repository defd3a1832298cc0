"""Trainer: Adam + cross-entropy, early stop at a target training accuracy, per-epoch checkpoints.

Determinism: the model is initialized from ``config.seed`` (factories take ``seed``), batches are
shuffled by a ``torch.Generator`` seeded with ``config.seed``, and any use of the global RNG by the
model itself (e.g. dropout) happens inside ``torch.random.fork_rng`` seeded with ``config.seed``,
so the caller's global RNG state is left exactly as it was. After every epoch the model,
optimizer, generator states, epoch and history are written atomically (``_io.atomic_save``: tmp
file + os.replace); an interrupted run resumes from there and ends bit-identical to an
uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from .._arch import logits_of
from .._hash import update_with_state
from .._io import atomic_save, write_json
from ..data import Dataset
from ._checkpoint import _load_checkpoint
from .adversarial import PGD, robust_accuracy
from .config import TrainConfig, TrainResult

_FORMAT = 1  # bump when the training procedure changes: old cache entries are then not reused
_EVAL_BATCH = 1000
#: Intra-op threads while training, whatever the caller's setting: a CPU kernel's reduction order
#: depends on the thread count, so a fixed count makes a trained model the same bit for bit
#: whoever trains it (a test under one thread, the CLI under the machine's default).
TRAIN_THREADS = 2


def default_cache_dir() -> Path:
    """``$SALIENCY_SANITY_CACHE`` if set, else ``~/.cache/saliency-sanity``.

    Example:
        >>> isinstance(default_cache_dir(), Path)
        True
    """
    env = os.environ.get("SALIENCY_SANITY_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "saliency-sanity"


def permuted_labels(y: torch.Tensor, seed: int) -> torch.Tensor:
    """The label vector reordered by a permutation from ``torch.Generator().manual_seed(seed)``.

    A true permutation (class counts are kept, labels are not resampled); the global RNG is not
    used.

    Example:
        >>> y = torch.tensor([0, 0, 1, 2])
        >>> z = permuted_labels(y, seed=0)
        >>> sorted(z.tolist()), torch.equal(z, permuted_labels(y, seed=0))
        ([0, 0, 1, 2], True)
    """
    y = torch.as_tensor(y)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(int(seed)))
    return y[perm].long()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Fraction of ``x`` classified as ``y`` (arg-max of the logits), evaluated in batches.

    Evaluates in whatever mode the model is in; ``train`` calls it in eval mode.

    Example:
        >>> lin = nn.Linear(2, 2)
        >>> with torch.no_grad():
        ...     _ = lin.weight.copy_(torch.eye(2)); _ = lin.bias.zero_()
        >>> accuracy(lin, torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]))
        0.5
    """
    if len(y) == 0:
        return float("nan")
    correct = 0
    for i in range(0, len(y), batch_size):
        correct += int((logits_of(model(x[i : i + batch_size])).argmax(1)
                         == y[i : i + batch_size]).sum())
    return correct / len(y)


# ------------------------------------------------------------------------------ model building

Factory = str | Callable[..., nn.Module]


def _describe(factory: Factory, kwargs: dict[str, Any]) -> dict[str, Any]:
    if isinstance(factory, str):
        return {"name": factory, "settings": kwargs}
    args: list[Any] = []
    fn: Any = factory
    while isinstance(fn, functools.partial):
        args = [*map(repr, fn.args), *args]
        kwargs = {**fn.keywords, **kwargs}
        fn = fn.func
    name = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"
    return {"name": name, "args": args, "settings": {k: repr(v) for k, v in kwargs.items()}}


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _build(factory: Factory, kwargs: dict[str, Any], seed: int) -> nn.Module:
    if isinstance(factory, str):
        from .. import models

        return models.get(factory, seed=seed, **kwargs)
    if _accepts(factory, "seed"):
        return factory(seed=seed, **kwargs)
    with torch.random.fork_rng(devices=[]):  # a factory that draws from the global RNG
        torch.manual_seed(seed)
        return factory(**kwargs)


def _state_hash(model: nn.Module) -> str:
    h = hashlib.blake2b(digest_size=8)
    update_with_state(h, model.state_dict())
    return h.hexdigest()


def cache_key(
    factory: Factory,
    dataset: Dataset,
    config: TrainConfig,
    model_kwargs: dict[str, Any] | None = None,
    init_hash: str | None = None,
    device: str | torch.device | None = None,
    adversarial: PGD | None = None,
) -> str:
    """The cache key of a run: readable prefix + hash of architecture, data, labels, settings.

    The hash covers the architecture name and settings (and, when given, a hash of the initial
    weights, so a changed architecture or init does not reuse stale checkpoints), the data set
    name, sizes, split seed and a content hash, the label seed and every hyper-parameter.

    Example:
        >>> from saliency_sanity import data
        >>> ds = data.load("mnist", n_train=10, n_test=10)
        >>> cache_key("mnist_cnn", ds, TrainConfig(label_seed=2))[:22]
        'mnist_cnn-mnist-rand2-'
    """
    desc = _describe(factory, dict(model_kwargs or {}))
    payload = {
        "format": _FORMAT,
        "model": desc,
        "init": init_hash,
        "data": {
            "name": dataset.name,
            "n_train": dataset.n_train,
            "n_test": dataset.n_test,
            "seed": dataset.seed,
            "content": dataset.fingerprint(),
        },
        "config": dataclasses.asdict(config),
        "torch": torch.__version__.split("+")[0],
    }
    if device is not None and torch.device(device).type != "cpu":  # other kernels, other bits
        payload["device"] = torch.device(device).type
    if adversarial is not None:  # absent for standard training: earlier cache keys stay valid
        payload["adversarial"] = adversarial.settings()
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=repr).encode())
    short = desc["name"].rsplit(".", 1)[-1].replace("<", "").replace(">", "")
    labels = "true" if config.label_seed is None else f"rand{config.label_seed}"
    if adversarial is not None:
        labels += f"-pgd{adversarial.norm}"
    return f"{short}-{dataset.name}-{labels}-{digest.hexdigest()[:16]}"


# ------------------------------------------------------------------------------------ training


def train(
    factory_name_or_callable: Factory,
    dataset: Dataset,
    config: TrainConfig | None = None,
    cache_dir: str | os.PathLike[str] | None | Literal[False] = None,
    progress: bool = True,
    *,
    model_kwargs: dict[str, Any] | None = None,
    device: str | torch.device | None = None,
    adversarial: PGD | None = None,
    _stop_after_epochs: int | None = None,
) -> TrainResult:
    """Train a model on ``dataset`` (true or seeded-permuted labels) with caching and resume.

    ``factory_name_or_callable``: a registered model name (``models.list()``) or a callable
    returning an ``nn.Module``; it is called with ``seed=config.seed`` (when it accepts ``seed``)
    and ``**model_kwargs``; for registered models ``num_classes`` defaults to the data set's.
    ``cache_dir``: where checkpoints go (``None`` = ``default_cache_dir()``, ``False`` = no
    checkpoints). A finished run found there is loaded (``from_cache=True``) instead of retrained;
    an unfinished one is resumed from its last epoch. ``progress`` shows a tqdm bar on stderr.
    ``device``: where to train (default the CPU); the model is built and its initial weights
    hashed on the CPU, then moved; runs on an accelerator are cached apart from CPU runs.
    ``adversarial``: a :class:`~saliency_sanity.training.PGD` attack for adversarial training
    (each batch replaced by its perturbation; random starts from a generator seeded from
    ``config.seed`` and checkpointed); the result then has ``robust_test_acc`` (PGD on the test
    set after the last epoch) next to ``test_acc``.

    Example:
        >>> from saliency_sanity import data
        >>> ds = data.load("mnist", n_train=64, n_test=32)
        >>> cfg = TrainConfig(epochs=2, target_train_acc=None, label_seed=0)
        >>> r = train("mnist_mlp", ds, cfg, cache_dir=False, progress=False,
        ...           model_kwargs={"width": 0.05})
        >>> r.epochs, len(r.history), r.model.training
        (2, 2, False)
    """
    config = config if config is not None else TrainConfig()
    kwargs = dict(model_kwargs or {})
    if isinstance(factory_name_or_callable, str):
        kwargs.setdefault("num_classes", dataset.num_classes)
    model = _build(factory_name_or_callable, kwargs, config.seed)
    if adversarial is not None and not isinstance(adversarial, PGD):
        raise TypeError(f"adversarial must be a training.PGD, got {type(adversarial).__name__}")
    key = cache_key(factory_name_or_callable, dataset, config, kwargs, _state_hash(model),
                    device=device, adversarial=adversarial)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    model.to(dev)

    y_train = dataset.y_train.long()
    if config.label_seed is not None:
        y_train = permuted_labels(y_train, config.label_seed)
    x_train, x_test, y_test = dataset.x_train, dataset.x_test, dataset.y_test.long()
    x_train, y_train, x_test, y_test = (t.to(dev) for t in (x_train, y_train, x_test, y_test))

    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    shuffle = torch.Generator().manual_seed(config.seed)
    adv_gen = torch.Generator().manual_seed(config.seed + 7919)  # PGD random starts
    history: list[dict[str, Any]] = []
    start = 0
    rng_state: torch.Tensor | None = None

    path: Path | None = None
    if cache_dir is not False:
        root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        root.mkdir(parents=True, exist_ok=True)
        path = root / f"{key}.pt"
        state = _load_checkpoint(path, key)
        if state is not None:
            model.load_state_dict(state["model"])
            history = list(state["history"])
            if state["done"]:
                model.eval()
                return TrainResult(
                    model=model,
                    train_acc=float(state["train_acc"]),
                    test_acc=float(state["test_acc"]),
                    epochs=int(state["epoch"]),
                    reached_target=bool(state["reached_target"]),
                    robust_test_acc=state.get("robust_test_acc"),
                    from_cache=True,
                    key=key,
                    history=history,
                    checkpoint=path,
                )
            optimizer.load_state_dict(state["optimizer"])
            shuffle.set_state(state["shuffle_rng"])
            adv_gen.set_state(state.get("adv_rng", adv_gen.get_state()))
            rng_state = state["global_rng"]
            start = int(state["epoch"])

    from tqdm.auto import tqdm

    bar = tqdm(
        total=config.epochs, initial=start, desc=key, file=sys.stderr, disable=not progress,
        leave=False,
    )
    n, bs = len(y_train), config.batch_size
    train_acc = test_acc = float("nan")
    robust_acc: float | None = None
    reached = False
    threads_before = torch.get_num_threads()
    torch.set_num_threads(TRAIN_THREADS)
    try:
        rng_devices = [dev] if dev.type == "cuda" else []
        with torch.random.fork_rng(devices=rng_devices):  # model-internal randomness only
            if rng_state is None:
                torch.manual_seed(config.seed)
            else:
                torch.random.set_rng_state(rng_state)
            for epoch in range(start, config.epochs):
                t0 = time.perf_counter()
                model.train()
                perm = torch.randperm(n, generator=shuffle)
                total_loss = 0.0
                for i in range(0, n, bs):
                    idx = perm[i : i + bs].to(dev)
                    xb = x_train[idx]
                    if adversarial is not None:
                        xb = adversarial.perturb(model, xb, y_train[idx], adv_gen)
                    loss = F.cross_entropy(logits_of(model(xb)), y_train[idx])
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    total_loss += float(loss.detach()) * len(idx)
                model.eval()
                train_acc = accuracy(model, x_train, y_train, _EVAL_BATCH)
                test_acc = accuracy(model, x_test, y_test, _EVAL_BATCH)
                history.append(
                    {
                        "epoch": epoch + 1,
                        "loss": total_loss / max(n, 1),
                        "train_acc": train_acc,
                        "test_acc": test_acc,
                        "seconds": time.perf_counter() - t0,
                    }
                )
                target = config.target_train_acc
                reached = target is not None and train_acc >= target
                done = reached or epoch + 1 == config.epochs
                if done and adversarial is not None:
                    robust_acc = robust_accuracy(model, adversarial, x_test, y_test, config.seed)
                    history[-1]["robust_test_acc"] = robust_acc
                if path is not None:
                    atomic_save(path, {
                        "key": key,
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "shuffle_rng": shuffle.get_state(),
                        "adv_rng": adv_gen.get_state(),
                        "robust_test_acc": robust_acc,
                        "global_rng": torch.random.get_rng_state(),
                        "epoch": epoch + 1,
                        "history": history,
                        "done": done,
                        "train_acc": train_acc,
                        "test_acc": test_acc,
                        "reached_target": reached,
                    })
                    write_json(path.with_suffix(".json"), {
                        "key": key,
                        "model": _describe(factory_name_or_callable, kwargs),
                        "dataset": {"name": dataset.name, "n_train": n,
                                    "n_test": len(y_test), "seed": dataset.seed},
                        "config": dataclasses.asdict(config),
                        "done": done,
                        "history": history,
                    })
                bar.update(1)
                bar.set_postfix(train=f"{train_acc:.3f}", test=f"{test_acc:.3f}")
                if done:
                    break
                if _stop_after_epochs is not None and epoch + 1 >= _stop_after_epochs:
                    raise KeyboardInterrupt(f"stopped after epoch {epoch + 1} (simulated)")
    finally:
        torch.set_num_threads(threads_before)
        bar.close()
    model.eval()
    return TrainResult(
        model=model,
        train_acc=train_acc,
        test_acc=test_acc,
        epochs=len(history),
        reached_target=reached,
        robust_test_acc=robust_acc,
        from_cache=False,
        key=key,
        history=history,
        checkpoint=path,
    )
