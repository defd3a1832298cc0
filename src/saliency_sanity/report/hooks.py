"""The checks' verdict hooks as the report and the terminal use them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from ..results import CheckResult
from ..results.spec import find as find_check
from ..results.spec import resolve


@dataclass(frozen=True)
class Hook:
    """A check's verdict hook with its parts resolved (:class:`~saliency_sanity.results.spec.
    Verdict`): ``judge``, ``rule`` and ``stages`` (None without stage readings)."""

    judge: Callable[..., pd.DataFrame]
    rule: str
    stages: Callable[..., pd.DataFrame] | None


def verdict_hook(result: CheckResult) -> Hook | None:
    """The verdict hook of ``result``'s check; None for a check that is not registered or
    declares no verdict.

    Example:
        >>> import pandas as pd
        >>> hook = verdict_hook(CheckResult(check="model_randomization", table=pd.DataFrame()))
        >>> hook.judge.__name__, hook.stages.__name__
        ('verdict', 'stage_verdicts')
        >>> verdict_hook(CheckResult(check="faithfulness", table=pd.DataFrame())) is None
        True
    """
    spec = find_check(result.check)
    if spec is None or spec.verdict is None:
        return None
    v = spec.verdict
    stages = resolve(v.stages) if v.stages is not None else None
    return Hook(judge=resolve(v.judge), rule=v.rule, stages=stages)


def format_table_summary(result: CheckResult, margin: float = 0.1) -> str:
    """What the terminal shows after a run of a check without a verdict: the result's summary
    table (mean and interval per method and score), rounded to three decimals.

    Example:
        >>> import pandas as pd
        >>> t = pd.DataFrame({"method": "g", "stage": 1, "layer": "fc", "sample": [0, 1],
        ...                   "metric": "ssim", "value": [0.5, 0.7]})
        >>> "ssim" in format_table_summary(CheckResult(check="random_logit", table=t))
        True
    """
    return result.summary().round(3).to_string(index=False)


def per_score_verdicts(result: CheckResult, margin: float = 0.1,
                       min_samples: int = 5) -> pd.DataFrame | None:
    """The table of ``result``'s verdict hook when it judges per method and score (data
    randomization: :func:`~saliency_sanity.verdicts.data_verdicts`), the numbers behind the one
    verdict per method; None for a check whose judge is the one verdict itself (model
    randomization, whose numbers are its stage readings) or that has no verdict.

    Example:
        >>> import pandas as pd
        >>> per_score_verdicts(CheckResult(check="model_randomization", table=pd.DataFrame()))
    """
    from ..verdicts import verdict

    hook = verdict_hook(result)
    if hook is None or hook.judge is verdict:
        return None
    return hook.judge(result, margin=margin, min_samples=min_samples)
