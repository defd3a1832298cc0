"""Verdicts: what a researcher may conclude from a model randomization run.

- :func:`verdicts` (:mod:`.end`): pass / fail / inconclusive per method and score at full
  randomization, against the null reference; :func:`method_summary`, :func:`format_summary`.
- :func:`stage_verdicts`, :func:`stage_headlines` (:mod:`.stages`): a reading per stage (how much
  the maps changed, against how much the model did) and one headline per method, e.g. "barely
  changes while the top 2 blocks are randomized".

Example:
    >>> from saliency_sanity import verdicts
    >>> callable(verdicts.verdicts) and callable(verdicts.stage_headlines)
    True
"""

from .end import (
    MAIN_SCORES,
    RANDOM_CONTROLS,
    RULE,
    VERDICT_COLUMNS,
    format_summary,
    method_summary,
    rule_text,
    verdicts,
)
from .stages import (
    HEADLINE_COLUMNS,
    STAGE_COLUMNS,
    STAGE_RULE,
    format_stage_summary,
    stage_headlines,
    stage_verdicts,
)

__all__ = [
    "HEADLINE_COLUMNS", "MAIN_SCORES", "RANDOM_CONTROLS", "RULE", "STAGE_COLUMNS", "STAGE_RULE",
    "VERDICT_COLUMNS", "format_stage_summary", "format_summary", "method_summary", "rule_text",
    "stage_headlines", "stage_verdicts", "verdicts",
]
