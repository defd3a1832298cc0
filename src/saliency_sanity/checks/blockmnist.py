"""BlockMNIST (Shah et al. 2021): how much of a map lies on the block that carries the label.

:func:`signal_share` scores maps against the known signal block; :func:`blockmnist_experiment`
trains a standard and an adversarially robust model on BlockMNIST and scores their input
gradients (``|gradient|``, the magnitude Shah et al. rank by) on test images.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch

from ..engine import RunConfig
from ..results.spec import CheckSpec, Cli, Example
from ._masking import cached_attributions

#: the common settings (:class:`RunConfig`) the experiment uses; the others raise when set
RUN_SETTINGS = ("seed", "progress", "backend", "ray_address", "ray_options")


def signal_share(maps: torch.Tensor, signal_mask: torch.Tensor,
                 top_k: float = 0.1) -> pd.DataFrame:
    """Per image: the share of the positive attribution mass inside the signal block
    (``mass_share``) and the share of the top-k attributed pixels inside it (``topk_share``).

    ``maps``: (N, C, H, W) or (N, H, W); channels are summed to one value per pixel after taking
    the positive part (pass ``|map|`` to count magnitude). ``signal_mask``: bool, (N, 1, H, W),
    (N, C, H, W) or (N, H, W). ``top_k``: the fraction of pixels counted (ranked by the summed
    positive value, ties by pixel index). Chance level of both shares is the signal block's share
    of the pixels (0.5 for BlockMNIST). An image without positive mass gets NaN.

    Example:
        >>> m = torch.tensor([[[1.0, 3.0], [0.0, -2.0]]])
        >>> s = torch.tensor([[[True, False], [True, False]]])
        >>> signal_share(m, s, top_k=0.25).round(3).values.tolist()
        [[0.25, 0.0]]
    """
    if not isinstance(maps, torch.Tensor) or not isinstance(signal_mask, torch.Tensor):
        raise TypeError("maps and signal_mask must be torch tensors")
    if maps.dim() == 3:
        maps = maps.unsqueeze(1)
    if signal_mask.dim() == 3:
        signal_mask = signal_mask.unsqueeze(1)
    if maps.dim() != 4 or signal_mask.dim() != 4:
        raise ValueError(f"maps must be (N, C, H, W) or (N, H, W), got {tuple(maps.shape)}")
    if (signal_mask.shape[0] != maps.shape[0] or signal_mask.shape[2:] != maps.shape[2:]
            or signal_mask.shape[1] not in (1, maps.shape[1])):
        raise ValueError(f"signal_mask {tuple(signal_mask.shape)} does not fit maps "
                         f"{tuple(maps.shape)}: one mask per image, same height and width")
    if not 0.0 < top_k <= 1.0:
        raise ValueError(f"top_k must be a fraction in (0, 1], got {top_k}")
    pos = maps.detach().double().clamp_min(0).sum(1).flatten(1)
    sig = signal_mask.bool().any(1).flatten(1) if signal_mask.shape[1] > 1 else \
        signal_mask.bool()[:, 0].flatten(1)
    total = pos.sum(1)
    mass = torch.where(total > 0, (pos * sig).sum(1) / total.clamp_min(1e-300),
                       torch.full_like(total, float("nan")))
    n_top = max(1, int(round(top_k * pos.shape[1])))
    order = torch.argsort(pos, dim=1, descending=True, stable=True)[:, :n_top]
    topk = sig.gather(1, order).double().mean(1)
    topk = torch.where(total > 0, topk, torch.full_like(topk, float("nan")))
    return pd.DataFrame({"mass_share": mass.numpy(), "topk_share": topk.numpy()})


def blockmnist_experiment(
    base: str = "mnist",
    *,
    n_train: int = 2000,
    n_test: int = 500,
    n_maps: int = 200,
    classes: int | Sequence[int] = 10,
    p_top: float = 0.5,
    architecture: str = "mnist_cnn",
    width: float = 0.25,
    epochs: int = 8,
    attack: Any = None,
    method: Any = "gradient",
    top_k: float = 0.1,
    cache_dir: str | os.PathLike | None = None,
    target_train_acc: float | None = None,
    config: RunConfig | None = None,
    **common: Any,
) -> dict[str, Any]:
    """Train a standard and a PGD-trained model on BlockMNIST; signal shares of their maps.

    Returns ``{"table": per-image shares (model, image, mass_share, topk_share, signal_top),
    "summary": per model mean / median shares with test and robust accuracy, "maps": {model:
    tensor}, "x", "y", "mask", "settings"}``. ``attack``: a ``training.PGD`` (default l2,
    eps 1.0, 5 steps of 0.5, no random start). Maps are ``|method|`` of the true label's logit.
    Both models train ``epochs`` epochs (Adam lr 1e-3, batch 64, seed ``seed``); with
    ``target_train_acc`` they stop there, and a model that never reaches it makes the outcome
    invalid (``settings["valid"]``). ``config``, ``**common``: the common settings
    (:class:`~saliency_sanity.engine.RunConfig`) that apply here, a keyword replacing the one in
    ``config``: ``seed`` (data, training, attack), ``progress``, and ``backend="ray"``, which
    trains the two models as two Ray tasks in parallel (``ray_address``, ``ray_options``); this
    process alone writes them to the cache; the same models and tables, bit for bit on CPU. The
    other common settings do not apply and raise an error when set.

    Example:
        >>> out = blockmnist_experiment(n_train=32, n_test=16, n_maps=4, classes=2, epochs=1,
        ...     width=0.05, cache_dir=False, progress=False)  # doctest: +SKIP
    """
    from .. import training
    from ..data import load_blockmnist

    run = RunConfig.from_kwargs(config, common)
    run.reject_unused(RUN_SETTINGS, "blockmnist_experiment")
    seed, progress, backend = run.seed, run.progress, run.backend
    if backend == "ray":  # before any training: a missing extra says how to install it
        from ..engine.ray_backend import require_ray

        require_ray()
    attack = attack if attack is not None else training.PGD("l2", eps=1.0, steps=5)
    ds = load_blockmnist(n_train, n_test, base, classes, p_top, seed)
    cfg = training.TrainConfig(epochs=epochs, target_train_acc=target_train_acc, seed=seed)
    kw = {"width": width, "input_size": (56, 28)}
    if backend == "ray":
        from ._ray_train import TrainJob, train_on_ray

        std, rob = train_on_ray([TrainJob(architecture, cfg, kw, adv, data=ds)
                                 for adv in (None, attack)], cache_dir, run.ray_address,
                                run.ray_options)
        runs = {"standard": std, "robust": rob}
    else:
        runs = {
            "standard": training.train(architecture, ds, cfg, cache_dir=cache_dir,
                                       progress=progress, model_kwargs=kw),
            "robust": training.train(architecture, ds, cfg, cache_dir=cache_dir,
                                     progress=progress, model_kwargs=kw, adversarial=attack),
        }
    n_maps = min(n_maps, ds.n_test)
    x, y, mask = ds.x_test[:n_maps], ds.y_test[:n_maps], ds.mask_test[:n_maps]
    attr_dir = None if cache_dir is False else os.path.join(
        cache_dir if cache_dir is not None else training.default_cache_dir(), "attributions")
    rows, summary, maps = [], [], {}
    for name, res in runs.items():
        a = cached_attributions(res.model, x, y, method, attr_dir).abs()
        maps[name] = a
        sh = signal_share(a, mask, top_k)
        sh.insert(0, "image", range(n_maps))
        sh.insert(0, "model", name)
        sh["signal_top"] = mask[:, 0, 0, 0].numpy()
        rows.append(sh)
        robust_acc = res.robust_test_acc
        if robust_acc is None:  # the standard model under the same attack, for comparison
            robust_acc = training.robust_accuracy(res.model, attack, ds.x_test, ds.y_test, seed)
        summary.append({
            "model": name, "mass_share_mean": float(sh["mass_share"].mean()),
            "mass_share_median": float(sh["mass_share"].median()),
            "topk_share_mean": float(sh["topk_share"].mean()),
            "train_acc": float(res.train_acc), "test_acc": float(res.test_acc),
            "robust_test_acc": float(robust_acc), "epochs": int(res.epochs),
            "cache_key": res.key})
    settings = {"base": base, "n_train": n_train, "n_test": n_test, "n_maps": n_maps,
                "classes": classes if isinstance(classes, int) else list(classes),
                "p_top": p_top, "architecture": architecture, "model_kwargs": kw,
                "train_config": cfg.__dict__, "attack": attack.settings(),
                "method": method if isinstance(method, str) else repr(method),
                "maps": "|map| of the true label's logit", "top_k": top_k, "seed": seed,
                "dataset": ds.name, "dataset_fingerprint": ds.fingerprint()}
    missed = [f"the {s['model']} model reached {s['train_acc']:.1%} training accuracy, below "
              f"the target {target_train_acc:.0%}" for s in summary
              if target_train_acc is not None and s["train_acc"] < target_train_acc]
    settings["valid"] = not missed
    settings["invalid_reason"] = "; ".join(missed)
    return {"table": pd.concat(rows, ignore_index=True), "summary": pd.DataFrame(summary),
            "maps": maps, "x": x, "y": y, "mask": mask, "settings": settings}


def _example() -> Example:
    return Example(kwargs={"n_train": 40, "n_test": 20, "n_maps": 8, "classes": 2, "epochs": 1,
                           "cache_dir": False, "progress": False, "seed": 0},
                   bad={"top_k": 2.0})


#: The outcome is a dict of tables, maps and settings, written with its figures and page by
#: ``report.shah.write_blockmnist_run`` (the CLI runner): no figures or page function of its own.
SPEC = CheckSpec(
    "blockmnist",
    run=blockmnist_experiment,
    title="BlockMNIST: attribution on the signal block (Shah, Jain, Netrapalli 2021)",
    columns=("model", "image", "mass_share", "topk_share", "signal_top"),
    figures=None,
    report=None,
    summary=None,
    verdict=None,
    ranking=None,
    cli=Cli("blockmnist", "saliency_sanity.cli.shah:add_blockmnist",
            "saliency_sanity.cli.shah:_cmd_blockmnist", keeps_run_dir=True),
    example=_example,
)
