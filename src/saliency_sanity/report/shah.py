"""Run directories and report sections of the Shah et al. 2021 experiments (DiffROAR, BlockMNIST).

A DiffROAR run directory holds ``results.csv`` (one row per retraining, a ``model`` column:
standard / robust / random), ``diffroar.csv`` (DiffROAR, KAR, ROAR per model and k),
``run.json``, ``figures/`` and ``report.html``; the subfolders ``standard/``, ``robust/``,
``random/`` hold each run's unit rows, trained models and attributions (resume state).
A BlockMNIST run directory holds ``results.csv`` (per-image shares), ``summary.csv``,
``run.json``, ``maps.pt``, ``figures/`` and ``report.html``.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .._io import atomic_save, atomic_write, write_json
from ._util import _num, _png_uri, _table, e
from .html import _CSS

NAN = float("nan")


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{e(title)} &middot; saliency-sanity</title><style>{_CSS}</style></head>"
            f"<body><main>{body}</main></body></html>")


def _figs(paths: Sequence[Path], captions: Sequence[str]) -> str:
    return "".join(f'<figure><img alt="{e(c)}" src="{_png_uri(p.read_bytes())}">'
                   f"<figcaption>{e(c)}</figcaption></figure>"
                   for p, c in zip(paths, captions, strict=True))


def diffroar_section(summary: pd.DataFrame, settings: Mapping[str, Any]) -> str:
    """The DiffROAR report section (HTML): headline, per-k table, validity, settings.

    Example:
        >>> s = pd.DataFrame({"model": ["standard"], "k": [0.1], "diffroar": [0.02],
        ...                   "diffroar_std": [0.01], "repeat_spread": [0.01], "kar": [0.9],
        ...                   "roar": [0.8], "within_spread": [False]})
        >>> "DiffROAR" in diffroar_section(s, {"runs": {}})
        True
    """
    rows = [[e(r["model"]), _num(r["k"], 2), _num(r["diffroar"]), _num(r["diffroar_std"]),
             _num(r.get("diffroar_se", NAN)), _num(r.get("p_value", NAN)),
             _num(r.get("n_top", NAN), 0),
             _num(r["repeat_spread"]), "yes" if r["within_spread"] else "no",
             _num(r["kar"]), _num(r["roar"])]
            for _, r in summary.iterrows()]
    table = _table(["model", "k", "DiffROAR", "std (pairs)", "SE", "Welch p", "repeats",
                    "repeat spread", "|DiffROAR| &le; spread", "KAR acc(top-k)",
                    "acc(bottom-k)"], rows,
                   numeric=[False] + [True] * 7 + [False] + [True] * 2)
    notes = []
    for label, run in settings.get("runs", {}).items():
        orig = run.get("original") or {}
        acc = (f"original test acc {_num(orig.get('test_acc'))}"
               + (f", robust {_num(orig['robust_test_acc'])}"
                  if orig.get("robust_test_acc") is not None else "")) if orig else "no model"
        state = "valid" if run.get("valid", True) else f"INVALID: {e(run.get('invalid_reason'))}"
        epochs = (run.get("original_trainer") or {}).get("epochs")
        trained = f" ({epochs} epochs)" if epochs is not None and orig else ""
        notes.append(f"<li><b>{e(label)}</b>: {acc}{trained}; {run.get('repeats', '?')} "
                     f"retrainings per k and side; {state}</li>")
    return (f"<section><h2>DiffROAR, ROAR and KAR with retraining</h2>"
            f"<p>DiffROAR(k) = test accuracy of models retrained on the top-k attributed "
            f"coordinates minus on the bottom-k (Shah et al. 2021); positive means the map ranks "
            f"the features the task needs first. <i>random</i> is the random-map control (expected "
            f"about 0: within the repeat-to-repeat spread, and Welch's test of top against bottom "
            f"not significant). SE = standard error of the difference of the two sides' "
            f"means.</p><ul>{''.join(notes)}</ul>{table}</section>")


def write_diffroar_run(results: Mapping[str, Any], out: str | os.PathLike,
                       command: Sequence[str] | None = None,
                       extra: Mapping[str, Any] | None = None) -> Path:
    """Write the combined run directory of several :func:`~saliency_sanity.checks.diffroar`
    results (label -> DiffRoarResult): tables, figures, report.

    Example:
        >>> # write_diffroar_run({"standard": r1, "robust": r2, "random": r0}, "runs/d")
    """
    from ..plots_shah import plot_diffroar, plot_roar_kar

    d = Path(out)
    table = pd.concat([r.table.assign(model=label) for label, r in results.items()],
                      ignore_index=True)
    summary = pd.concat([r.summary.assign(model=label) for label, r in results.items()],
                        ignore_index=True)
    table = table[["model", *[c for c in table.columns if c != "model"]]]
    summary = summary[["model", *[c for c in summary.columns if c != "model"]]]
    settings: dict[str, Any] = {"runs": {k: r.settings for k, r in results.items()},
                                **dict(extra or {})}
    if command is not None:
        settings["command"] = shlex.join(command)
    settings["valid"] = all(r.valid for r in results.values())
    atomic_write(d / "results.csv", lambda p: table.to_csv(p, index=False))
    atomic_write(d / "diffroar.csv", lambda p: summary.to_csv(p, index=False))
    write_json(d / "run.json", {"check": "diffroar", "settings": settings})
    sums = {label: r.summary for label, r in results.items()}
    figs = [plot_diffroar(sums, d / "figures" / "diffroar.png"),
            plot_roar_kar(sums, d / "figures" / "roar_kar.png")]
    body = (f"<h1>DiffROAR &middot; {e(next(iter(results.values())).settings.get('dataset'))}"
            f"</h1>{diffroar_section(summary, settings)}"
            + _figs(figs, ["DiffROAR(k), band = mean +- std over all top x bottom repeat pairs",
                           "KAR (keep top-k) and ROAR (remove top r) from the same retrainings"])
            + f"<h2>Settings</h2><pre>{e(settings.get('command', ''))}</pre>")
    atomic_write(d / "report.html",
                 lambda p: p.write_text(_page("DiffROAR", body), encoding="utf-8"))
    return d


def blockmnist_section(summary: pd.DataFrame, settings: Mapping[str, Any]) -> str:
    """The BlockMNIST report section (HTML).

    Example:
        >>> s = pd.DataFrame({"model": ["robust"], "mass_share_mean": [0.8],
        ...                   "mass_share_median": [0.8], "topk_share_mean": [0.9],
        ...                   "test_acc": [0.9], "robust_test_acc": [0.7]})
        >>> "signal block" in blockmnist_section(s, {})
        True
    """
    rows = [[e(r["model"]), _num(r["mass_share_mean"]), _num(r["mass_share_median"]),
             _num(r["topk_share_mean"]), _num(r["test_acc"]), _num(r["robust_test_acc"])]
            for _, r in summary.iterrows()]
    table = _table(["model", "mass share (mean)", "mass share (median)", "top-k share (mean)",
                    "test acc", "PGD test acc"], rows, numeric=[False] + [True] * 5)
    return (f"<section><h2>BlockMNIST: attribution on the signal block</h2><p>Each image stacks "
            f"a digit (the signal block, the only one that tells the label) and a fixed null "
            f"block. The share of |gradient| mass on the signal block is 0.5 by chance; Shah et "
            f"al. 2021 report that robust models' gradients concentrate on the signal block."
            f"</p>{table}<p>{e(settings.get('maps', ''))}; top-k = {e(settings.get('top_k'))} "
            f"of the pixels.</p></section>")


def write_blockmnist_run(outcome: Mapping[str, Any], out: str | os.PathLike,
                         command: Sequence[str] | None = None) -> Path:
    """Write a BlockMNIST run directory from :func:`checks.blockmnist.blockmnist_experiment`'s
    outcome: tables, maps, figures, report.

    Example:
        >>> # write_blockmnist_run(blockmnist_experiment(), "runs/b")
    """
    from ..plots_shah import plot_block_maps, plot_signal_share_hist

    d = Path(out)
    settings = dict(outcome["settings"])
    if command is not None:
        settings["command"] = shlex.join(command)
    table, summary = outcome["table"], outcome["summary"]
    atomic_write(d / "results.csv", lambda p: table.to_csv(p, index=False))
    atomic_write(d / "summary.csv", lambda p: summary.to_csv(p, index=False))
    write_json(d / "run.json", {"check": "blockmnist", "settings": settings,
                                "summary": summary.to_dict(orient="records")})
    atomic_save(d / "maps.pt", {"x": outcome["x"], "y": outcome["y"], "mask": outcome["mask"],
                                **outcome["maps"]})
    figs = [plot_block_maps(outcome["x"], outcome["maps"], outcome["mask"],
                            d / "figures" / "blockmnist_maps.png"),
            plot_signal_share_hist(table, d / "figures" / "signal_share.png"),
            plot_signal_share_hist(table, d / "figures" / "signal_topk_share.png",
                                   column="topk_share")]
    body = (f"<h1>BlockMNIST &middot; {e(settings.get('dataset'))}</h1>"
            f"{blockmnist_section(summary, settings)}"
            + _figs(figs, ["inputs (signal block outlined) and |gradient| maps, standard vs "
                           "robust", "per-image share of |gradient| mass on the signal block",
                           "per-image share of the top-k pixels on the signal block"])
            + f"<h2>Settings</h2><pre>{e(settings.get('command', ''))}</pre>")
    atomic_write(d / "report.html",
                 lambda p: p.write_text(_page("BlockMNIST", body), encoding="utf-8"))
    return d
