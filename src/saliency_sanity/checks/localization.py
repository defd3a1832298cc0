"""The localization check (Rao, Boehle, Schiele 2022): is the attribution where the answer is
known to be?

On n x n grids of images of distinct classes (:func:`saliency_sanity.grids.make_grids`), each
method explains, at each layer (input, middle, final or a module name), the head of each cell in
three settings (GridPG, DiFull, DiPart: :class:`saliency_sanity.grids.Setting`); the score is the
share of the map's positive mass inside the head's cell (:mod:`saliency_sanity.localization`).

It runs on the engine: units are batches of grids (``batch-000003``), one view per setting, and a
probe that computes that setting's scores (and the maps AggAtt averages) for the unit; the unit
store makes the run resumable. The table has the columns ``method, setting, layer, sample,
head, metric, value``; metric ``localization`` and, with smoothing, ``localization_smoothed``.
AggAtt bins are in ``result.examples["maps"]["<method>:<setting>:<layer>"]`` (bins 0..5).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ..engine import RunConfig, RunOutput, View, execute, prepare, resolve_methods
from ..grids import GridSet, Setting, layout, resolve_layer
from ..grids.settings import SETTINGS
from ..localization import (
    ABS_METHODS,
    BINS,
    aggatt_bins,
    at_layer,
    channel_sum,
    gaussian_smooth,
    localization,
    masses,
    setting_layer_maps,
    smoothing_settings,
    to_top_left,
    upsample,
)
from ..randomization import FixedPlan, StageSpec, fresh_copy
from ..results import CheckResult, columns_for
from ..results.spec import CheckSpec, Cli, Example
from ._examples import tiny_inputs, tiny_model

LAYERS = ("input", "middle", "final")


def _names(value: Any, known: Sequence[str] | None, what: str) -> list[str]:
    items = [value] if isinstance(value, str) else list(value)
    if not items:
        raise ValueError(f"no {what} given")
    if known is not None:
        bad = [v for v in items if v not in known]
        if bad:
            raise ValueError(f"unknown {what} {bad}; choose among {', '.join(known)}")
    if len(set(items)) != len(items):
        raise ValueError(f"{what} listed twice: {items}")
    return items


class _Holder(nn.Module):
    """A model of the plan: the private copy in one setting, with the ``at`` layer the CAM
    methods' settings are resolved on."""

    def __init__(self, net: nn.Module, setting: str) -> None:
        super().__init__()
        self.net, self.at, self.setting = net, nn.Identity(), setting

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.at(x))


def localization_test(
    model: nn.Module,
    grids: GridSet,
    *,
    methods: Sequence[Any] | Mapping[str, Any] | None = None,
    settings: Sequence[str] = SETTINGS,
    layers: Sequence[str] = LAYERS,
    smoothing: Any = None,
    heads: Mapping[str, Sequence[int]] | None = None,
    split: str | None = None,
    absolute: Sequence[str] = ABS_METHODS,
    aggatt_size: int = 64,
    config: RunConfig | None = None,
    **common: Any,
) -> CheckResult:
    """Localization of every method, setting, layer and head on grid images.

    Args:
        model: a classifier for one cell's images (B, C, H, W) -> logits.
        grids: a :class:`~saliency_sanity.grids.GridSet`.
        methods: as :func:`saliency_sanity.model_randomization_test` (default: the default
            methods that apply; controls as ``controls=``).
        settings: from ``gridpg``, ``difull``, ``dipart``.
        layers: ``input``, ``middle``, ``final`` (found automatically) or module names.
        smoothing: None (off), True (Gaussian, sigma = a tenth of the cell side), a sigma in
            pixels or ``{"sigma": ..., "kernel_size": ...}``: adds ``localization_smoothed``.
        heads: per setting, the heads scored (default: every cell in GridPG, the top-left and
            bottom-right cells in DiFull and DiPart, as the paper).
        split: DiPart's split module (default: found automatically).
        absolute: methods whose maps enter as absolute values (the paper: gradient, guided
            backprop).
        aggatt_size: AggAtt maps are kept at most this many pixels high and wide.
        config, **common: the common settings (:class:`RunConfig`: ``seed``, ``run_dir``,
            ``batch_size``, ...); a keyword given here replaces the one in ``config``.

    Example:
        >>> from torch import nn
        >>> from saliency_sanity.grids import GridSet
        >>> net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(),
        ...                     nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 4))
        >>> g = GridSet(torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0)),
        ...             torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0]]), torch.zeros(2, 4).long())
        >>> r = localization_test(net, g, methods=["gradient"], settings=["difull"],
        ...                       layers=["input"],
        ...                       controls=False, progress=False)
        >>> r.table["value"].tolist()
        [1.0, 1.0, 1.0, 1.0]
    """
    cfg = RunConfig.from_kwargs(config, common)
    if not isinstance(grids, GridSet):
        raise TypeError(f"grids must be a GridSet (saliency_sanity.grids.make_grids), got "
                        f"{type(grids).__name__}")
    x, _, _, dev = prepare(model, grids.images, None, None, cfg.device)
    labels = grids.labels.to(dev)
    n, cell = grids.n, grids.cell
    settings = _names(settings, SETTINGS, "settings")
    layers = _names(layers, None, "layers")
    trained = fresh_copy(model, dev)
    for p in trained.parameters():
        p.requires_grad_(False)
    cell0 = x[:1, :, :cell[0], :cell[1]]
    with torch.no_grad():
        out = trained(cell0)
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        raise ValueError("the model must map one cell's images (B, C, H, W) to logits "
                         "(B, classes)")
    if int(labels.max()) >= out.shape[1]:
        raise ValueError(f"grid labels go up to {int(labels.max())} but the model has "
                         f"{out.shape[1]} classes")
    lay = layout(trained, cell0)
    resolved = {name: resolve_layer(trained, lay, name) for name in layers}
    objs = {s: Setting(trained, s, n, cell0, split=split, lay=lay) for s in settings}
    heads_by = {s: list((heads or {}).get(s, range(n * n) if s == "gridpg" else
                                          sorted({0, n * n - 1}))) for s in settings}
    for s, hs in heads_by.items():
        if not hs or any(not 0 <= int(k) < n * n for k in hs):
            raise ValueError(f"heads for {s} must be cell indices in 0..{n * n - 1}, got {hs}")
    method_objs = resolve_methods(methods, cfg.controls, model, cell0)
    bad = [label for label in method_objs if "|" in label or ":" in label]
    if bad:
        raise ValueError(f"method labels may not contain '|' or ':': {bad}")
    layer_methods = {label: at_layer(m) for label, m in method_objs.items()}
    smooth = smoothing_settings(smoothing, cell)
    size = (int(x.shape[2]), int(x.shape[3]))
    agg_hw = (min(size[0], aggatt_size), min(size[1], aggatt_size))
    for s in settings:  # fail early: every setting's layers before any work
        for name, ln in resolved.items():
            if ln is not None:
                try:
                    objs[s].front(ln, x[:1])
                except ValueError as err:
                    raise ValueError(f"{s}, layer {name!r}: {err}") from err

    def probe(holder: nn.Module, xb: torch.Tensor, unit: Any) -> dict[str, np.ndarray]:
        s = holder.setting
        out: dict[str, np.ndarray] = {"samples": np.arange(unit.start, unit.stop)}
        with torch.enable_grad():
            for name, ln in resolved.items():
                maps = setting_layer_maps(objs[s], ln, xb, labels[unit.span], heads_by[s],
                                          layer_methods, (cfg.seed, s, name, unit.index))
                for k, label, m in maps:
                    summed = channel_sum(m, label in absolute or
                                         getattr(method_objs[label], "name", "") in absolute)
                    up = upsample(summed, size)
                    key = f"{label}|{name}|{k}"
                    out[f"{key}|localization"] = localization(up, k, n).cpu().numpy()
                    if smooth is not None:
                        sm = gaussian_smooth(up, smooth["sigma"], smooth["kernel_size"])
                        out[f"{key}|localization_smoothed"] = localization(sm, k, n).cpu().numpy()
                    inside, _ = masses(up, k, n)
                    out[f"{key}|inside"] = inside.cpu().numpy()
                    pos = torch.relu(up)
                    if tuple(pos.shape[2:]) != agg_hw:
                        pos = F.adaptive_avg_pool2d(pos, agg_hw)
                    out[f"{key}|agg"] = pos[:, 0].float().cpu().numpy()
        return out

    views = [View(s, i, s) for i, s in enumerate(settings)]
    plan = FixedPlan([_Holder(trained, s) for s in settings],
                     [StageSpec(i, (), s) for i, s in enumerate(settings)])
    record = {"n": n, "cell": list(cell), "settings": settings,
              "layers": {k: ("(input)" if v is None else v) for k, v in resolved.items()},
              "heads": heads_by, "split": lay.split, "gridpg_head": (
                  "converted to a convolution" if lay.kernel is not None else "as is"),
              "smoothing": smooth, "absolute": list(absolute), "aggatt_bins": list(BINS),
              "aggatt_size": list(agg_hw), "n_grids": len(grids),
              "chance": 1.0 / (n * n)}
    post = _post(settings, list(resolved), list(method_objs), heads_by, n,
                 metrics=["localization"] + (["localization_smoothed"] if smooth else []),
                 n_examples=cfg.n_examples, x=x)
    return execute("localization", plan=plan, views=views, pairs=[], x=x, target=None,
                   target_mode="fixed", method_objs=layer_methods, score_objs={}, config=cfg,
                   settings=record, models=[model], targets={"labels": labels},
                   desc="localization", probe=probe, post=post)


def _post(settings: list[str], layers: list[str], labels: list[str],
          heads: Mapping[str, list[int]], n: int, metrics: list[str], n_examples: int,
          x: torch.Tensor) -> Any:
    """Build the tidy table and the AggAtt bins from the units' probe arrays."""

    def post(out: RunOutput) -> RunOutput:
        cols: dict[str, list[Any]] = {c: [] for c in columns_for("localization")}
        agg: dict[str, dict[int, np.ndarray]] = {}
        for s in settings:
            for label in labels:
                for layer in layers:
                    maps, scores, inside, hs = [], [], [], []
                    for ch in out.chunks:
                        samples = ch[f"probe|{s}|samples"]
                        for k in heads[s]:
                            key = f"probe|{s}|{label}|{layer}|{k}"
                            for metric in metrics:
                                v = ch[f"{key}|{metric}"]
                                cols["method"] += [label] * len(v)
                                cols["setting"] += [s] * len(v)
                                cols["layer"] += [layer] * len(v)
                                cols["sample"] += samples.tolist()
                                cols["head"] += [k] * len(v)
                                cols["metric"] += [metric] * len(v)
                                cols["value"] += v.tolist()
                            maps.append(ch[f"{key}|agg"])
                            scores.append(ch[f"{key}|localization"])
                            inside.append(ch[f"{key}|inside"])
                            hs.append(np.full(len(samples), k))
                    if maps:
                        m = to_top_left(np.concatenate(maps), np.concatenate(hs), n)
                        means, _ = aggatt_bins(m, np.concatenate(scores),
                                               np.concatenate(inside))
                        agg[f"{label}:{s}:{layer}"] = {b: means[b] for b in range(len(means))}
        table = pd.DataFrame(cols, columns=columns_for("localization"))
        table["head"] = table["head"].astype(np.int64)
        table["sample"] = table["sample"].astype(np.int64)
        k = max(0, min(n_examples, int(x.shape[0])))
        examples = {"inputs": x[:k].detach().cpu().numpy(), "samples": np.arange(k),
                    "targets": {}, "maps": agg}
        out.table, out.examples = table, examples
        return out

    return post



def _example() -> Example:
    x = tiny_inputs(4)
    cells = torch.cat([torch.cat([x[0], x[1]], 2), torch.cat([x[2], x[3]], 2)], 1)
    grids = GridSet(cells[None].repeat(2, 1, 1, 1), torch.tensor([[0, 1, 2, 3]] * 2),
                    torch.tensor([[0, 1, 2, 3]] * 2))
    return Example(args=(tiny_model(), grids),
                   kwargs={"methods": ["gradient"], "settings": ["gridpg", "difull"],
                            "seed": 0, "progress": False, "batch_size": 2},
                   bad={"settings": ["nowhere"]})


SPEC = CheckSpec(
    "localization",
    run=localization_test,
    title="Localization in controlled settings (Rao, Boehle, Schiele 2022)",
    columns=("method", "setting", "layer", "sample", "head", "metric", "value"),
    figures="saliency_sanity.plots_localization:save_localization_figures",
    report="saliency_sanity.report.pages:localization_page",
    summary="saliency_sanity.report.localization:format_localization_summary",
    verdict=None,  # scores against chance, no pass / fail
    ranking=None,
    cli=Cli("localization", "saliency_sanity.cli._args:add_localization",
            "saliency_sanity.cli.commands:_cmd_localization", keeps_run_dir=True),
    example=_example,
)

__all__ = ["LAYERS", "localization_test"]
