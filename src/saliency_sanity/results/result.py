"""The result of a check: a tidy table, settings, stage information and example maps."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._io import atomic_write, write_json
from .spec import find

COLUMNS = ["method", "stage", "layer", "sample", "metric", "value"]
#: columns read back as text (block and layer names such as "3" stay strings)
TEXT_COLUMNS = ("method", "layer", "metric", "setting", "randomized_block", "block", "position")


def columns_for(check: str) -> list[str]:
    """The table columns of a check's result: those its :class:`~.spec.CheckSpec` declares
    (e.g. localization: a setting and a head instead of a stage), ``COLUMNS`` for a check that
    is not registered.

    Example:
        >>> columns_for("model_randomization") == COLUMNS
        True
        >>> columns_for("localization")[:3]
        ['method', 'setting', 'layer']
    """
    spec = find(check)
    return list(spec.columns) if spec is not None else list(COLUMNS)


def mean_interval(values: Any, ci: float = 0.95) -> tuple[int, float, float, float]:
    """Of the non-NaN ``values``: their count n, mean, sample standard deviation (ddof 1) and
    the half-width of the two-sided ``ci`` Student-t interval of the mean; the mean is NaN
    when n = 0, the std and half-width when n < 2.

    Example:
        >>> n, mean, std, half = mean_interval([1.0, 2.0, 3.0, float("nan")])
        >>> n, mean, std, round(half, 4)
        (3, 2.0, 1.0, 2.4841)
    """
    from scipy import stats

    v = np.asarray(values, dtype=float)
    ok = v[~np.isnan(v)]
    n = int(ok.size)
    mean = float(ok.mean()) if n else math.nan
    if n < 2:
        return n, mean, math.nan, math.nan
    std = float(ok.std(ddof=1))
    return n, mean, std, float(stats.t.ppf(0.5 + ci / 2, n - 1) * std / math.sqrt(n))

@dataclass
class CheckResult:
    """What a check returns.

    Attributes:
        table: one row per (method, stage, sample, metric) with exactly the columns
            ``method, stage, layer, sample, metric, value`` (another check's columns:
            :func:`columns_for`, e.g. localization's ``method, setting, layer, sample, head,
            metric, value``).
        settings: everything needed to reproduce the run (JSON-able).
        stages: one dict per stage: index, block, layers, output_change, unchanged.
        examples: maps kept for figures: ``{"inputs": (n, ...), "targets": {stage: (n,)},
            "maps": {method: {stage: (n, ...)}}}`` as numpy arrays.
        check: the check's name, e.g. ``"model_randomization"``.
        null: for model randomization, the null reference with the columns of ``table``: at
            stage k, the similarity between the maps of two independently randomized copies of
            the model (same blocks randomized, different seeds). None when not computed.

    Example:
        >>> r = CheckResult(check="demo", table=pd.DataFrame(columns=COLUMNS))
        >>> r.summary().empty
        True
    """

    check: str
    table: pd.DataFrame
    settings: dict[str, Any] = field(default_factory=dict)
    stages: list[dict[str, Any]] = field(default_factory=list)
    examples: dict[str, Any] = field(default_factory=dict)
    null: pd.DataFrame | None = None

    def summary(self, ci: float = 0.95, null: bool = False) -> pd.DataFrame:
        """Mean, standard deviation, count and a ``ci`` interval of the mean per method, stage
        and metric (t-interval over samples; NaN samples are left out and counted in ``n_nan``).
        ``null=True`` summarizes the null reference instead of the table."""

        keys = [c for c in columns_for(self.check) if c not in ("sample", "value")]
        cols = [*keys, "mean", "std", "n", "n_nan", "lo", "hi"]
        table = self.null if null else self.table
        if table is None or table.empty:
            return pd.DataFrame(columns=cols)
        rows = []
        for key, g in table.groupby(keys, sort=False):
            n, mean, std, half = mean_interval(g["value"], ci)
            rows.append([*key, mean, std, n, len(g) - n, mean - half, mean + half])
        return pd.DataFrame(rows, columns=cols)

    # ----------------------------------------------------------------------------- persistence
    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``results.csv``, ``null.csv``, ``run.json`` and ``examples.npz`` into
        ``directory``.

        All or nothing: each file is written atomically, and if one fails (a full disk) the
        files this call created are removed again, so no incomplete result is left.
        """
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        table = self.table[columns_for(self.check)]
        writes: list[tuple[str, Any]] = [
            ("results.csv", lambda p: table.to_csv(p, index=False)),
        ]
        if self.null is not None:
            null = self.null[COLUMNS]
            writes.append(("null.csv", lambda p: null.to_csv(p, index=False)))
        if self.examples:
            flat = _flatten_examples(self.examples)
            writes.append(("examples.npz", lambda p: _savez(p, flat)))
        created: list[Path] = []
        try:
            for name, write in writes:
                existed = (d / name).exists()
                atomic_write(d / name, write)
                if not existed:
                    created.append(d / name)
            # run.json last: its presence marks a complete result
            existed = (d / "run.json").exists()
            write_json(d / "run.json", {"check": self.check, "settings": self.settings,
                                        "stages": self.stages})
            if not existed:
                created.append(d / "run.json")
        except BaseException:
            for p in created:
                p.unlink(missing_ok=True)
            raise
        return d

    @classmethod
    def load(cls, directory: str | os.PathLike) -> CheckResult:
        """Read a run directory written by :meth:`save`."""
        d = Path(directory)
        missing = [f for f in ("results.csv", "run.json") if not (d / f).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{d} is not a saliency-sanity run directory: missing {', '.join(missing)}"
            )
        meta = json.loads((d / "run.json").read_text(encoding="utf-8"))
        cols = columns_for(meta.get("check", ""))
        table = _read_table(d / "results.csv", cols)
        null = _read_table(d / "null.csv", cols) if (d / "null.csv").is_file() else None
        examples: dict[str, Any] = {}
        if (d / "examples.npz").is_file():
            with np.load(d / "examples.npz", allow_pickle=False) as z:
                examples = _unflatten_examples({k: z[k] for k in z.files})
        return cls(check=meta["check"], table=table, settings=meta.get("settings", {}),
                   stages=meta.get("stages", []), examples=examples, null=null)


def _read_table(path: Path, columns: list[str] = COLUMNS) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, dtype=dict.fromkeys(TEXT_COLUMNS, str))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not a readable results table: {err}") from err
    if list(table.columns) != columns:
        raise ValueError(f"{path} has columns {list(table.columns)}, expected {columns}")
    if "layer" in table:
        table["layer"] = table["layer"].fillna("")
    return table


def _savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as fh:
        np.savez_compressed(fh, **arrays)


def _flatten_examples(ex: dict[str, Any]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    if "inputs" in ex:
        out["inputs"] = np.asarray(ex["inputs"])
    if "samples" in ex:
        out["samples"] = np.asarray(ex["samples"])
    for stage, t in ex.get("targets", {}).items():
        out[f"targets|{stage}"] = np.asarray(t)
    for method, per_stage in ex.get("maps", {}).items():
        for stage, m in per_stage.items():
            out[f"maps|{method}|{stage}"] = np.asarray(m)
    return out


def _unflatten_examples(flat: dict[str, np.ndarray]) -> dict[str, Any]:
    ex: dict[str, Any] = {"maps": {}, "targets": {}}
    for key, arr in flat.items():
        parts = key.split("|")
        if parts[0] in ("inputs", "samples"):
            ex[parts[0]] = arr
        elif parts[0] == "targets":
            ex["targets"][int(parts[1])] = arr
        elif parts[0] == "maps":
            ex["maps"].setdefault(parts[1], {})[int(parts[2])] = arr
    return ex
