"""The checks' verdict hooks as the report and the terminal use them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from ..results import CheckResult
from ..results.spec import find as find_check
from ..results.spec import get as get_check
from ..results.spec import resolve
from ..verdicts import format_stage_summary, format_summary


@dataclass(frozen=True)
class Hook:
    """A check's verdict hook with its parts resolved (:class:`~saliency_sanity.results.spec.
    Verdict`): ``judge``, ``rule`` and ``stages`` (None without stage readings)."""

    judge: Callable[..., pd.DataFrame]
    rule: str
    stages: Callable[..., pd.DataFrame] | None


def verdict_hook(result: CheckResult) -> Hook:
    """The verdict hook of ``result``'s check; a check that is not registered, or declares no
    verdict, is judged as model randomization's extras are (its rule and verdict, no stage
    readings) when its page is the randomization page.

    Example:
        >>> import pandas as pd
        >>> hook = verdict_hook(CheckResult(check="model_randomization", table=pd.DataFrame()))
        >>> hook.judge.__name__, hook.stages.__name__
        ('verdicts', 'stage_verdicts')
    """
    spec = find_check(result.check)
    own = spec is not None and spec.verdict is not None
    if spec is None or spec.verdict is None:
        spec = get_check("model_randomization")
    v = spec.verdict
    stages = resolve(v.stages) if own and v.stages is not None else None
    return Hook(judge=resolve(v.judge), rule=v.rule, stages=stages)


def format_model_randomization_summary(result: CheckResult, margin: float = 0.1) -> str:
    """What the terminal shows after a model randomization run: the stage-by-stage headlines
    first (which blocks each method ignores), then the verdicts at full randomization.

    Example:
        >>> import pandas as pd
        >>> r = CheckResult(check="model_randomization", table=pd.DataFrame(
        ...     columns=["method", "stage", "layer", "sample", "metric", "value"]))
        >>> isinstance(format_model_randomization_summary(r), str)
        True
    """
    return format_stage_summary(result) + "\n\n" + format_summary(result, margin=margin)
