"""Verdicts: what a researcher may conclude from a run, one answer per question.

- :func:`verdict`: one row per method, verdict pass / flagged / inconclusive (invalid for a
  data randomization run that did not memorize), a headline and, for model randomization, the
  randomized blocks the method ignores (:data:`RULE`, docs/verdicts.md).
- :func:`stage_verdicts`: the per-stage table behind a model randomization verdict.
- :func:`data_verdicts`: the per-score table behind a data randomization verdict.
- :func:`format_verdict`: the verdicts as the terminal prints them.

Each check's question, rows per method and rule in words are its ``Verdict`` part
(:mod:`saliency_sanity.results.spec`): :func:`model_method_verdicts` and :func:`model_rule_text`
for model randomization, :func:`data_method_verdicts`, :func:`data_rule_text` and
:func:`data_verdict_line` for data randomization.

Example:
    >>> from saliency_sanity import verdicts
    >>> verdicts.VERDICTS
    ('pass', 'flagged', 'inconclusive', 'invalid')
"""

from ._common import MAIN_SCORES, RANDOM_CONTROLS, layers_by_stage
from .data import (
    DATA_COLUMNS,
    DATA_RULE,
    data_method_verdicts,
    data_rule_text,
    data_verdict_line,
    data_verdicts,
)
from .stages import STAGE_COLUMNS, stage_verdicts
from .verdict import (
    QUESTIONS,
    RULE,
    VERDICT_COLUMNS,
    VERDICTS,
    format_verdict,
    has_verdict,
    model_method_verdicts,
    model_rule_text,
    rule_text,
    verdict,
)

__all__ = [
    "DATA_COLUMNS", "DATA_RULE", "MAIN_SCORES", "QUESTIONS", "RANDOM_CONTROLS", "RULE",
    "STAGE_COLUMNS", "VERDICTS", "VERDICT_COLUMNS", "data_method_verdicts", "data_rule_text",
    "data_verdict_line", "data_verdicts", "format_verdict", "has_verdict", "layers_by_stage",
    "model_method_verdicts", "model_rule_text", "rule_text", "stage_verdicts", "verdict",
]
