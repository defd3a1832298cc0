"""What the verdict rules share: the main scores, the random-map controls, score orientation,
t-intervals and per-sample values of one method, score and stage.

Example:
    >>> import pandas as pd
    >>> layers_by_stage(pd.DataFrame({"stage": [1, 1, 2], "layer": ["fc", "fc", "conv"]}))
    {1: 'fc', 2: 'conv'}
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from ..results import CheckResult
from ..results.spec import find, resolve, specs

#: The paper's scores; a verdict combines these (every score when neither was computed).
MAIN_SCORES = ("spearman_abs", "ssim")
#: The random-map controls: their similarity is what noise shares with anything.
RANDOM_CONTROLS = ("random_gaussian", "random_uniform")


def _t_interval(v: np.ndarray, ci: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided ``ci`` t-interval of the mean (NaN bounds for fewer than 2 values)."""
    from scipy import stats

    n = v.size
    mean = float(v.mean())
    sd = float(v.std(ddof=1)) if n > 1 else math.nan
    if n < 2 or not math.isfinite(sd):
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + ci / 2, n - 1) * sd / math.sqrt(n))
    return mean, mean - half, mean + half


def _score_meta(result: CheckResult, metric: str) -> tuple[bool, float]:
    """(higher_is_better, perfect similarity P in raw units) for ``metric``."""
    meta = (result.settings.get("scores") or {}).get(metric)
    if meta is None:
        try:
            from .. import scores as _scores

            meta = _scores.get(metric).settings()
        except Exception:
            meta = {}
    hib = bool(meta.get("higher_is_better", True))
    rng = meta.get("range") or ([-1.0, 1.0] if hib else [0.0, math.inf])
    perfect = float(rng[1] if hib else rng[0])
    if not math.isfinite(perfect):
        perfect = 1.0 if hib else 0.0
    return hib, perfect


def layers_by_stage(table: pd.DataFrame) -> dict[int, str]:
    """Each stage's layer label in a results table.

    Example:
        >>> layers_by_stage(pd.DataFrame({"stage": [2], "layer": ["fc1"]}))
        {2: 'fc1'}
    """
    return table.drop_duplicates("stage").set_index("stage")["layer"].astype(str).to_dict()


def _values(table: pd.DataFrame, method: str, metric: str, stage: int) -> pd.Series:
    """Per-sample values (mean over duplicate rows) of one method, score and stage."""
    g = table[(table["method"] == method) & (table["metric"] == metric)
              & (table["stage"] == stage)]
    return g.groupby("sample")["value"].mean()


def _main_used(metrics: list[str] | set[str], main: tuple[str, ...] | list[str]) -> list[str]:
    """The main scores present, in ``main``'s order; every score when none is present."""
    present = list(dict.fromkeys(metrics))
    return [m for m in main if m in set(present)] or present


def declared_by(part: str, fn: Callable[..., Any]) -> list[str]:
    """The registered checks whose verdict hook (``CheckSpec.verdict``) declares ``fn`` as its
    ``part`` (``"judge"`` or ``"stages"``), in registration order.

    Example:
        >>> from saliency_sanity.verdicts import stage_verdicts
        >>> declared_by("stages", stage_verdicts)
        ['model_randomization']
    """
    return [s.name for s in specs() if s.verdict is not None
            and getattr(s.verdict, part) is not None and resolve(getattr(s.verdict, part)) is fn]


def require_declared(result: CheckResult, part: str, fn: Callable[..., Any]) -> None:
    """Raise a ``ValueError`` unless ``result``'s check declares ``fn`` as its verdict hook's
    ``part`` (the registry says which checks a rule reads).

    Example:
        >>> from saliency_sanity.verdicts import stage_verdicts
        >>> require_declared(CheckResult(check="faithfulness", table=pd.DataFrame()), "stages",
        ...                  stage_verdicts)
        Traceback (most recent call last):
        ...
        ValueError: stage_verdicts needs a model randomization result, got 'faithfulness'
    """
    spec = find(result.check)
    v = spec.verdict if spec is not None else None
    if v is not None and getattr(v, part) is not None and resolve(getattr(v, part)) is fn:
        return
    names = " or ".join(n.replace("_", " ") for n in declared_by(part, fn)) or "no registered"
    raise ValueError(f"{fn.__name__} needs a {names} result, got {result.check!r}")
