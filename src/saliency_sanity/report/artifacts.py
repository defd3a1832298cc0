"""The critique files of a run directory, read once for the report (nothing is recomputed).

Example:
    >>> import tempfile
    >>> art = load_critiques(tempfile.mkdtemp())
    >>> art.empty
    True
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..results import CheckResult
from ..results.files import (
    EXTRA_DIRS,
    RANKING_CSV,
    RANKING_JSON,
    RANKING_TAU_CSV,
    SCALES_CSV,
    SCALES_JSON,
)
from ..results.ranking import RANKING_COLUMNS, TAU_COLUMNS
from ._util import PNG_SIGNATURE


@dataclass
class CritiqueArtifacts:
    """What a run directory holds of the critiques (None / empty where absent)."""

    smprt: CheckResult | None = None
    emprt: CheckResult | None = None
    random_logit: CheckResult | None = None
    faithfulness: CheckResult | None = None
    scales: pd.DataFrame | None = None
    scales_settings: dict[str, Any] = field(default_factory=dict)
    ranking: pd.DataFrame | None = None
    tau: pd.DataFrame | None = None
    ranking_settings: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, bytes] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return (self.smprt is None and self.emprt is None and self.random_logit is None
                and self.faithfulness is None and self.scales is None and self.ranking is None
                and not self.notes)


def load_critiques(run_dir: str | os.PathLike) -> CritiqueArtifacts:
    """Read the critiques' files of ``run_dir`` (see the module docs); never raises for a bad
    file, it is reported in ``notes`` instead.

    Example:
        >>> # art = load_critiques("runs/demo"); art.emprt.summary()
    """
    d = Path(run_dir)
    art = CritiqueArtifacts()
    for attr, sub in EXTRA_DIRS.items():
        if (d / sub).is_dir():
            try:
                setattr(art, attr, CheckResult.load(d / sub))
            except (OSError, ValueError, KeyError) as err:
                art.notes.append(f"{sub}/ could not be read: {err}")
    if (d / SCALES_CSV).is_file():
        try:
            art.scales = pd.read_csv(d / SCALES_CSV, dtype={"randomized_block": str,
                                                            "block": str, "position": str})
            art.scales_settings = _json(d / SCALES_JSON).get("settings", {})
        except (OSError, ValueError, pd.errors.ParserError) as err:
            art.notes.append(f"{SCALES_CSV} could not be read: {err}")
            art.scales = None
    if (d / RANKING_CSV).is_file() and (d / RANKING_TAU_CSV).is_file():
        try:
            ranking = pd.read_csv(d / RANKING_CSV, dtype={"check": str, "method": str})
            tau = pd.read_csv(d / RANKING_TAU_CSV, dtype={"check_a": str, "check_b": str})
            if list(ranking.columns) != RANKING_COLUMNS or list(tau.columns) != TAU_COLUMNS:
                raise ValueError("unexpected columns")
            art.ranking, art.tau = ranking, tau
            art.ranking_settings = _json(d / RANKING_JSON)
        except (OSError, ValueError, pd.errors.ParserError) as err:
            art.notes.append(f"{RANKING_CSV} / {RANKING_TAU_CSV} could not be read: {err}")
    for p in sorted((d / EXTRA_DIRS["faithfulness"] / "figures").glob("faithfulness_*.png")):
        data = p.read_bytes()
        if data.startswith(PNG_SIGNATURE):
            art.figures[p.stem] = data
    for stem in ("activation_scales", "ranking"):
        p = d / "figures" / f"{stem}.png"
        if p.is_file():
            data = p.read_bytes()
            if data.startswith(PNG_SIGNATURE):
                art.figures[stem] = data
    return art


def _json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        out = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return out if isinstance(out, dict) else {}


def _draw(draw: Callable[[Path], Any]) -> bytes | None:
    """PNG bytes of a figure drawn from saved tables (None if it cannot be drawn)."""
    import matplotlib.pyplot as plt

    with tempfile.TemporaryDirectory(prefix="saliency-sanity-fig-") as tmp:
        p = Path(tmp) / "f.png"
        try:
            plt.close(draw(p))
        except (ValueError, KeyError, TypeError):
            return None
        return p.read_bytes() if p.is_file() else None


# ---------------------------------------------------------------------------------------------
# sections
# ---------------------------------------------------------------------------------------------
