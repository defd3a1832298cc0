"""One verdict per method: :func:`verdict`.

For the model randomization test the question is *which randomized blocks does this method
ignore?* (:data:`RULE`; docs/verdicts.md gives the reasons). The answer is read from the
per-stage table :func:`~saliency_sanity.verdicts.stage_verdicts`: a method is **flagged** when its
maps stay (keep more than half of their similarity) at a stage where the model's predictions
changed, **pass** when its maps changed wherever it is judged, **inconclusive** otherwise. The
last stage is one row of that table, read by the same rule: there is no separate end-of-curve
verdict.

For the data randomization test (do the maps depend on the labels?) :func:`verdict` reads
:func:`~saliency_sanity.verdicts.data_verdicts`, with the same vocabulary.

What differs per check (its question, its rows per method, its rule in words, its line in the
terminal) is declared in the check's :class:`~saliency_sanity.results.spec.Verdict` part and
read from the registry here: a new check with a verdict needs no edit in this package.

Example:
    >>> import pandas as pd
    >>> from saliency_sanity.checks import CheckResult
    >>> rows = [(m, k, f"L{k}", i, "ssim", v + 0.01 * (i % 3))
    ...         for m, vals in (("stays", (0.95, 0.9)), ("moves", (0.2, 0.05)))
    ...         for k, v in zip((1, 2), vals) for i in range(6)]
    >>> cols = ["method", "stage", "layer", "sample", "metric", "value"]
    >>> table = pd.DataFrame(rows, columns=cols)
    >>> stages = [{"index": k, "output_change": {"prediction_agreement": 0.1}} for k in (0, 1, 2)]
    >>> r = CheckResult(check="model_randomization", table=table, null=table.assign(value=0.0),
    ...                 stages=stages, settings={"order": "cascading"})
    >>> verdict(r)[["method", "verdict", "ignores"]].values.tolist()
    [['stays', 'flagged', 'L1, L2'], ['moves', 'pass', '']]
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pandas as pd

from ..results import CheckResult
from ..results.spec import CheckSpec, find, resolve, specs
from ._common import MAIN_SCORES, _main_used
from .stages import stage_verdicts

#: The verdict vocabulary, the same for every check.
VERDICTS = ("pass", "flagged", "inconclusive", "invalid")
#: Columns of :func:`verdict`: one row per method (controls included).
VERDICT_COLUMNS = ["method", "control", "verdict", "headline", "ignores", "stages"]

#: The model randomization rule in words (the report and the terminal print it).
RULE = (
    "At each randomized stage, a method's maps are compared with the trained model's maps on "
    "every main score (spearman_abs and ssim; every score when neither was computed) as "
    "retained = (similarity - floor) / (perfect - floor), the floor being the similarity "
    "between the maps of two fully and independently randomized models (the null at full "
    "randomization, else the mean of the random-map controls). At a stage where most of the "
    "model's predictions changed (agreement with the trained model below 1/2), the stage reads "
    "insensitive when the 95% t-interval of retained over samples lies above 1/2 on every main "
    "score; it reads changed when that interval lies below 1/2 on every main score, ambiguous "
    "otherwise; a stage where most predictions were kept is not judged unless the maps "
    "changed. A method is FLAGGED when any stage reads insensitive (it ignores the blocks "
    "randomized there) or when its maps do not depend on the model at all (floor = perfect "
    "similarity); it PASSES when every stage reads changed or is not judged, with at least "
    "one changed; otherwise it is INCONCLUSIVE (an ambiguous stage, fewer than 5 non-NaN "
    "samples). Random-map controls pass (noise resembles nothing) and the edge detector is "
    "flagged (its maps ignore the model): a pass says the maps follow the model's parameters, "
    "not that they explain the model well."
)

class _Questions(Mapping[str, str]):
    """Each registered check's question (``Verdict.question``), read from the registry."""

    def __getitem__(self, check: str) -> str:
        return _verdict_spec(check).verdict.question

    def __iter__(self) -> Iterator[str]:
        return iter([s.name for s in specs() if s.verdict is not None])

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return repr(dict(self))


#: Each check's question, printed above its verdicts: ``QUESTIONS[check]`` is the
#: ``Verdict.question`` its spec declares.
QUESTIONS: Mapping[str, str] = _Questions()

_HALF_NOTE = (" (there the intervals straddle 1/2 or the scores disagree; more samples may "
              "decide)")


def verdict(result: CheckResult, *, min_samples: int = 5, ci: float = 0.95,
            main: Sequence[str] = MAIN_SCORES, margin: float = 0.1) -> pd.DataFrame:
    """The verdict per method (controls included) of a model or data randomization result.

    Columns (:data:`VERDICT_COLUMNS`): ``method, control, verdict`` (one of :data:`VERDICTS`:
    pass / flagged / inconclusive, and invalid for a data randomization run whose random-label
    model did not memorize), ``headline`` (the answer in a sentence), ``ignores`` (model
    randomization: the randomized blocks the method ignores, comma-separated; ``"the labels"``
    for a flagged data randomization method; empty otherwise) and ``stages`` (each stage's
    reading over the main scores, e.g. ``"fc2: insensitive; fc1: changed"``; per score for data
    randomization). ``main``: the scores a stage must agree on; ``margin`` applies to data
    randomization only (docs/report.md). The per-stage numbers behind a model randomization
    verdict are :func:`~saliency_sanity.verdicts.stage_verdicts`.

    Example:
        >>> import pandas as pd
        >>> from saliency_sanity.checks import CheckResult
        >>> verdict(CheckResult(check="model_randomization", table=pd.DataFrame())).empty
        True
    """
    per_method = resolve(_verdict_spec(result.check).verdict.per_method)
    rows = per_method(result, min_samples=min_samples, ci=ci, main=tuple(main), margin=margin)
    return pd.DataFrame(rows, columns=VERDICT_COLUMNS)


def has_verdict(check: str) -> bool:
    """Whether results of ``check`` have a verdict: the check is registered with a verdict hook
    (``CheckSpec.verdict``, :mod:`saliency_sanity.results.spec`).

    Example:
        >>> has_verdict("model_randomization"), has_verdict("faithfulness")
        (True, False)
    """
    spec = find(check)
    return spec is not None and spec.verdict is not None


def _verdict_spec(check: str) -> CheckSpec:
    """The spec of ``check``, which must declare a verdict."""
    spec = find(check)
    if spec is None or spec.verdict is None:
        raise ValueError(f"no verdict rule for a {check!r} result; verdicts exist for: "
                         f"{', '.join(s.name for s in specs() if s.verdict is not None)}")
    return spec


def rule_text(check: str = "model_randomization", margin: float = 0.1,
              min_samples: int = 5) -> str:
    """The rule behind :func:`verdict` for ``check``, in words.

    Example:
        >>> rule_text().startswith("At each randomized stage")
        True
        >>> rule_text("faithfulness")
        Traceback (most recent call last):
        ...
        ValueError: no verdict rule for a 'faithfulness' result; verdicts exist for: \
model_randomization, data_randomization
    """
    return str(resolve(_verdict_spec(check).verdict.rule_text)(margin, min_samples))


def model_rule_text(margin: float = 0.1, min_samples: int = 5) -> str:
    """The model randomization rule in words (:data:`RULE`; ``margin`` and ``min_samples``
    are taken for the ``Verdict.rule_text`` hook and do not change it).

    Example:
        >>> model_rule_text() == RULE
        True
    """
    return RULE


def format_verdict(result: CheckResult, *, margin: float = 0.1, min_samples: int = 5) -> str:
    """:func:`verdict` as plain text (what the terminal shows after a run): the question, one
    line per method (``FLAGGED`` / ``PASS`` / ...) with its headline, then the rule.

    Example:
        >>> import pandas as pd
        >>> from saliency_sanity.checks import CheckResult
        >>> format_verdict(CheckResult(check="model_randomization", table=pd.DataFrame()))
        'verdicts: none (empty result)'
    """
    v = verdict(result, min_samples=min_samples, margin=margin)
    if v.empty:
        return "verdicts: none (empty result)"
    present = set(result.table["metric"])
    main = ", ".join(_main_used(list(present), MAIN_SCORES))
    width = max(len(str(m)) for m in v["method"]) + 10
    hook = _verdict_spec(result.check).verdict
    line = resolve(hook.line) if hook.line is not None else None
    lines = [f"verdicts: {hook.question} (scores: {main})"]
    for _, r in v.iterrows():
        name = str(r["method"]) + (" (control)" if r["control"] else "")
        text = str(r["headline"]) if line is None else str(line(r))
        lines.append(f"  {name:<{width}} {str(r['verdict']).upper():<13} {text}")
    lines.append("rule: " + rule_text(result.check, margin, min_samples))
    return "\n".join(lines)


def model_method_verdicts(result: CheckResult, *, min_samples: int = 5, ci: float = 0.95,
                          main: Sequence[str] = MAIN_SCORES, margin: float = 0.1
                          ) -> list[dict[str, Any]]:
    """One row per method of a model randomization result for :func:`verdict` (its
    ``Verdict.per_method`` hook), read from :func:`~saliency_sanity.verdicts.stage_verdicts`;
    ``margin`` is taken for the hook and not used.

    Example:
        >>> import pandas as pd
        >>> from saliency_sanity.checks import CheckResult
        >>> model_method_verdicts(CheckResult(check="model_randomization", table=pd.DataFrame()))
        []
    """
    sv = stage_verdicts(result, min_samples=min_samples, ci=ci)
    if sv.empty:
        return []
    order = result.settings.get("order", "cascading")
    used = _main_used(list(sv["metric"]), tuple(main))
    rows = []
    for method, g in sv[sv["metric"].isin(used)].groupby("method", sort=False):
        per_stage = [(str(gs["layer"].iloc[0]), _combine(list(gs["reading"])), gs)
                     for _, gs in g.groupby("stage", sort=True)]
        verdict_, ignores, headline = _judge(per_stage, order, min_samples)
        rows.append({"method": method, "control": bool(g["control"].any()),
                     "verdict": verdict_, "headline": headline, "ignores": ", ".join(ignores),
                     "stages": "; ".join(f"{lay}: {r}" for lay, r, _ in per_stage)})
    return rows


def _combine(readings: list[str]) -> str:
    """One stage's reading over the scores: unanimous readings stand; else ambiguous."""
    for special in ("too few samples", "model-independent", "model unchanged"):
        if special in readings:
            return special
    if all(r == readings[0] for r in readings):
        return readings[0]
    return "ambiguous"


def _judge(per_stage: list[tuple[str, str, pd.DataFrame]], order: str, min_samples: int
           ) -> tuple[str, list[str], str]:
    """(verdict, blocks ignored, headline) from each stage's combined reading."""
    layers = [lay for lay, _, _ in per_stage]
    readings = [r for _, r, _ in per_stage]
    if "model-independent" in readings:
        return "flagged", layers, ("never changes: its maps do not depend on the model (two "
                                   "unrelated random models give the same maps)")
    hits = [i for i, r in enumerate(readings) if r == "insensitive"]
    if hits:
        return "flagged", *_flagged(per_stage, hits, order)
    if readings and all(r == "changed" for r in readings):
        return "pass", [], "changes with every randomized block"
    if "too few samples" in readings:
        n = min(int(gs["n"].min()) for _, _, gs in per_stage)
        return "inconclusive", [], (
            f"inconclusive: too few samples (n = {n} non-NaN, need {min_samples}) at "
            + ", ".join(lay for lay, r in zip(layers, readings, strict=True)
                        if r == "too few samples"))
    detail = _where(layers, readings, ("changed", "ambiguous", "model unchanged"))
    if "changed" in readings and "ambiguous" not in readings:
        return "pass", [], "changes wherever the predictions change: " + detail
    if "ambiguous" in readings:
        return "inconclusive", [], "inconclusive: " + detail + _HALF_NOTE
    return "inconclusive", [], ("inconclusive: the predictions never changed, so no stage "
                                "could be judged (" + detail + ")")


def _where(layers: list[str], readings: list[str], labels: Sequence[str]) -> str:
    parts = []
    for label in labels:
        at = [lay for lay, r in zip(layers, readings, strict=True) if r == label]
        if at:
            parts.append(f"{label} at {', '.join(at)}")
    return "; ".join(parts)


def _flagged(per_stage: list[tuple[str, str, pd.DataFrame]], hits: list[int], order: str
             ) -> tuple[list[str], str]:
    """The blocks ignored and the headline of a method with insensitive stages ``hits``."""
    layers = [lay for lay, _, _ in per_stage]
    readings = [r for _, r, _ in per_stage]
    if order == "independent":  # stage k randomizes block k alone
        ignored = [layers[i] for i in hits]
        text = (f"barely changes when {', '.join(ignored)} "
                f"{'are' if len(ignored) > 1 else 'is'} randomized, although the predictions "
                "change completely")
    else:  # stage k randomizes the first k blocks of the order
        top = hits[-1] + 1
        ignored = layers[:top]
        where = "top" if order == "cascading" else "first"
        text = (f"barely changes while the {where} {top} block{'s are' if top > 1 else ' is'} "
                f"randomized ({', '.join(ignored)}), although the predictions change "
                "completely")
    frames = [per_stage[i][2] for i in hits]
    agree = pd.concat([gs["prediction_agreement"] for gs in frames]).dropna()
    if len(agree):
        text += (f" (agreement with the trained model {agree.min():.0%}-{agree.max():.0%}"
                 if agree.min() != agree.max() else
                 f" (agreement with the trained model {agree.min():.0%}")
        kept = pd.concat([gs["retained_mean"] for gs in frames]).dropna()
        text += f"; maps keep {kept.min():.0%}-{kept.max():.0%} of their similarity)"
    notes = {src[src.index("(constant") + 1:-1] for gs in frames
             for src in gs.get("floor_source", pd.Series(dtype=str)).dropna()
             if "(constant null maps" in src}
    if notes:
        text += ("; caution, degenerate floor: " + "; ".join(sorted(notes))
                 + ", read the per-stage numbers")
    if order != "independent":
        between = [i for i in range(hits[-1]) if readings[i] != "insensitive"]
        if between:
            text += "; " + _where([layers[i] for i in between],
                                  [readings[i] for i in between],
                                  ("model unchanged", "ambiguous", "changed"))
    return ignored, text
