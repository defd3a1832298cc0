"""The rows of a check's tables: per-unit column arrays, the tidy table assembled from the
chunks of every unit, the example maps and the stages' output changes."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..results import COLUMNS


# ------------------------------------------------------------------------------------ rows
def score_quietly(score: Any, a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """``score(a, b)`` as float64 NumPy; per-batch NaN warnings are left to :func:`warn_nan`."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(constant|NaN|nan).*")
        return score(a, b).detach().double().cpu().numpy()


def append_rows(cols: dict[str, list[np.ndarray]], method: str, stage: int, layer: Any,
                samples: np.ndarray, metric: str, vals: np.ndarray) -> None:
    """Append one row per sample to the column lists ``cols``."""
    n = len(samples)
    cols["method"].append(np.full(n, method))
    cols["stage"].append(np.full(n, stage, dtype=np.int64))
    cols["layer"].append(np.full(n, "" if layer is None else str(layer)))
    cols["sample"].append(samples.astype(np.int64))
    cols["metric"].append(np.full(n, metric))
    cols["value"].append(vals.astype(np.float64))


def _cat(parts: list[np.ndarray], col: str) -> np.ndarray:
    if parts:
        return np.concatenate(parts)
    return np.array([], dtype=np.float64 if col == "value" else
                    (np.int64 if col in ("stage", "sample") else "<U1"))


_DTYPES = {"method": object, "stage": np.int64, "layer": object, "sample": np.int64,
           "metric": object, "value": np.float64}


def frame(chunks: Sequence[Mapping[str, np.ndarray]], prefix: str) -> pd.DataFrame:
    """The tidy table from the chunks' columns (strings as Python str objects)."""
    data = {}
    for c in COLUMNS:
        parts = [ch[f"{prefix}{c}"] for ch in chunks if f"{prefix}{c}" in ch]
        col = np.concatenate(parts) if parts else np.array([])
        data[c] = col.astype(_DTYPES[c], copy=False)
    return pd.DataFrame(data, columns=COLUMNS, copy=False)


def warn_nan(table: pd.DataFrame) -> None:
    """One warning for all NaN values of a table (constant maps), by method and metric."""
    nan = table[table["value"].isna()]
    if len(nan):
        where = ", ".join(
            f"{m}/{s}: {c}" for (m, s), c in nan.groupby(["method", "metric"]).size().items()
        )
        warnings.warn(
            f"{len(nan)} similarity values are NaN (undefined for constant maps): {where}",
            RuntimeWarning,
            stacklevel=4,
        )


def fill_output_change(stages: list[dict[str, Any]], chunk0: Mapping[str, np.ndarray]) -> None:
    """Stage output changes measured on the first unit (kept in its chunk, so a resumed run
    reports them too); warn once about stages whose outputs did not change at all."""
    for pos, stage in enumerate(stages):
        prefix = f"oc|{pos}|"
        change = {k[len(prefix):]: float(v) for k, v in chunk0.items() if k.startswith(prefix)}
        if not change:
            stage["output_change"] = {}
            continue
        stage["unchanged"] = bool(change.pop("unchanged", 0.0))
        stage["output_change"] = change
    dead = [s["index"] for s in stages if s.get("unchanged")]
    if dead:
        warnings.warn(
            f"stage(s) {dead}: randomizing left the model's outputs on the first batch "
            "bit-identical to the trained model's (blocks not used by the forward pass?)",
            RuntimeWarning,
            stacklevel=4,
        )


def _examples(chunks: Sequence[Mapping[str, np.ndarray]], x: torch.Tensor, n: int,
              labels: list[str], stages: list[int]) -> dict[str, Any]:
    ex: dict[str, Any] = {"inputs": x[:n].detach().cpu().numpy(), "samples": np.arange(n),
                          "targets": {}, "maps": {label: {} for label in labels}}
    if n == 0:
        return ex
    for k in stages:
        parts = [ch[f"targets|{k}"] for ch in chunks if f"targets|{k}" in ch]
        ex["targets"][k] = np.concatenate(parts)[:n]
        for label in labels:
            key = f"maps|{label}|{k}"
            ex["maps"][label][k] = np.concatenate([ch[key] for ch in chunks if key in ch])[:n]
    return ex
