"""The registry of checks: what each check declares, read by the plots, the report and the CLI.

A check declares every part of itself in one :class:`CheckSpec` and registers it with
:func:`register` (``checks/__init__.py`` holds one such line per built-in check). Nothing else
branches on a check's name: the figures, the report page, the terminal summary, the verdict, the
ranking and the subcommand are looked up here by ``CheckResult.check``.

A part that lives in a higher layer than the check (the report page, the CLI runner) is named by
a ``"module:attribute"`` reference, imported when first used, as entry points are: the check's
module does not import the report or the CLI, and the layers keep pointing downwards.

Every part must be declared: a part the check does not have is declared as ``None``; a part left
out makes :func:`register` fail, naming it.

This module imports no torch.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .._registry import Registry

#: A part: the object itself, or a ``"package.module:attribute"`` reference imported on use.
Part = Any


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


#: The default of every part: a part still MISSING at registration is an error.
MISSING: Any = _Missing()


def resolve(part: Part) -> Any:
    """The object a part names: a ``"module:attribute"`` reference imported, anything else as is.

    Example:
        >>> resolve("os.path:join")("a", "b")
        'a/b'
        >>> resolve(len) is len
        True
    """
    if not isinstance(part, str) or ":" not in part:
        return part
    module, _, attr = part.partition(":")
    obj: Any = importlib.import_module(module)
    for name in attr.split("."):
        obj = getattr(obj, name)
    return obj


@dataclass(frozen=True)
class Cli:
    """A check's subcommand.

    Attributes:
        command: the subcommand's name (``saliency-sanity <command>``).
        add_parser: ``add_parser(subparsers)`` adds the subcommand and its options.
        run: ``run(args, argv) -> exit status``: runs the check, writes the run directory and
            prints what the terminal shows.
        keeps_run_dir: True when an interrupted run leaves its finished work in ``--out`` and the
            same command continues it (the message after Ctrl-C says so).

    Example:
        >>> Cli("demo-check", "argparse:ArgumentParser", "builtins:print", False).command
        'demo-check'
    """

    command: str
    add_parser: Part
    run: Part
    keeps_run_dir: bool


@dataclass(frozen=True)
class Ranking:
    """How :mod:`saliency_sanity.checks.ranking` ranks a check's methods.

    Attributes:
        table: ``table(result)``: a table with the columns of ``COLUMNS`` ranked at its last
            stage; None ranks the result's own table.
        views: ``views(result) -> {label: result}``: one ranking per score (e.g. faithfulness);
            None for one ranking per result.
        label: the check's column in the ranking tables (e.g. ``"MPRT"``); None: its name.
        group: ``"randomization"`` or ``"faithfulness"``: the report contrasts the two groups'
            rankings.

    Example:
        >>> Ranking(table=None, views=None).table is None
        True
    """

    table: Part = None
    views: Part = None
    label: str | None = None
    group: str = "randomization"


@dataclass(frozen=True)
class Verdict:
    """A check's verdict and the headlines of its report.

    Attributes:
        judge: ``judge(result, margin=..., min_samples=...)``: the check's verdict table, either
            the one verdict per method itself (model randomization:
            :func:`saliency_sanity.verdicts.verdict`) or the verdict per method and score behind
            it (data randomization: :func:`saliency_sanity.verdicts.data_verdicts`), which the
            report shows as its detail table. A check with a verdict is answered by
            :func:`saliency_sanity.verdicts.verdict` and ``has_verdict``.
        rule: the rule in one plain sentence, shown above the formula in the report.
        stages: ``stages(result, min_samples=...)``: the stage-by-stage readings behind the
            verdict (:func:`saliency_sanity.verdicts.stage_verdicts`); None when the check has
            no stages to read.
        question: the question the verdict answers, printed above the verdicts (``"which
            randomized blocks does each method ignore?"``).
        per_method: ``per_method(result, *, min_samples, ci, main, margin) -> [row]``: one dict
            per method with the columns of :data:`saliency_sanity.verdicts.VERDICT_COLUMNS`,
            the rows of :func:`saliency_sanity.verdicts.verdict`.
        rule_text: ``rule_text(margin, min_samples) -> str``: the full rule in words
            (:func:`saliency_sanity.verdicts.rule_text`, the terminal and the report's fold-out).
        line: ``line(row) -> str``: the text after a method's verdict word in
            :func:`saliency_sanity.verdicts.format_verdict`, given its row of
            :func:`~saliency_sanity.verdicts.verdict`; None: the row's headline.

    ``question``, ``per_method`` and ``rule_text`` must be declared: :func:`register` names the
    ones left out.

    Example:
        >>> v = Verdict(judge="saliency_sanity.verdicts:verdict", rule="flagged when ...",
        ...             question="does it work?", per_method="builtins:list",
        ...             rule_text="builtins:str")
        >>> v.stages is None, v.line is None
        (True, True)
    """

    judge: Part
    rule: str
    stages: Part = None
    question: str = MISSING
    per_method: Part = MISSING
    rule_text: Part = MISSING
    line: Part = None


#: The parts of a :class:`Verdict` that name a function (a ``"module:attribute"`` reference).
VERDICT_HOOKS = ("judge", "stages", "per_method", "rule_text", "line")


@dataclass(frozen=True)
class Example:
    """A tiny run of a check, for the contract tests: ``run(*args, **kwargs)`` in a few
    seconds; ``bad``: keyword overrides that make the input invalid (the check must raise a
    ``ValueError`` or ``TypeError`` saying what is wrong).

    Example:
        >>> Example(args=(1,), kwargs={"seed": 0}, bad={"seed": "x"}).bad
        {'seed': 'x'}
    """

    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    bad: dict[str, Any] = field(default_factory=dict)


#: The parts every check declares (None where it has none), in the order of :class:`CheckSpec`.
PARTS = ("run", "title", "columns", "figures", "report", "summary", "verdict", "ranking", "cli",
         "example")


@dataclass(frozen=True)
class CheckSpec:
    """Everything about one check, in one place.

    Attributes:
        name: the check's name, as in ``CheckResult.check`` and ``run.json``.
        run: the check itself, ``run(model, data, *, ..., config=None, **common)``.
        title: the heading of its report page and its line in ``saliency-sanity list``.
        columns: the key and value columns of its table (``COLUMNS`` for most checks).
        figures: ``figures(result, directory) -> [paths]``: its figures, drawn from a result.
        report: ``report(result, figures, *, title, margin, min_samples, critiques) -> html``:
            its report page.
        summary: ``summary(result, margin) -> str``: what the terminal shows after a run and
            ``saliency-sanity report``.
        verdict: a :class:`Verdict`, or None for a check without one.
        ranking: a :class:`Ranking`, or None when its methods are not ranked.
        cli: a :class:`Cli`, or None for a check run only from the API or as an extra.
        example: ``example() -> Example``: a tiny run for the contract tests.

    Example:
        >>> spec = CheckSpec("toy", run=len, title="Toy", columns=("method", "value"),
        ...                  figures=None, report=None, summary=None, verdict=None,
        ...                  ranking=None, cli=None, example=Example)
        >>> spec.missing()
        []
        >>> CheckSpec("toy", run=len).missing()[:2]
        ['title', 'columns']
    """

    name: str
    run: Part = MISSING
    title: str = MISSING
    columns: tuple[str, ...] = MISSING
    figures: Part = MISSING
    report: Part = MISSING
    summary: Part = MISSING
    verdict: Verdict | None = MISSING
    ranking: Ranking | None = MISSING
    cli: Cli | None = MISSING
    example: Part = MISSING

    def missing(self) -> list[str]:
        """The parts not declared (still :data:`MISSING`)."""
        return [p for p in PARTS if getattr(self, p) is MISSING]

    def part(self, name: str) -> Any:
        """The part ``name``, its reference resolved (:func:`resolve`)."""
        return resolve(getattr(self, name))


def _validate(spec: CheckSpec) -> None:
    if not isinstance(spec, CheckSpec):
        raise TypeError(f"register() takes a CheckSpec, got {type(spec).__name__}")
    missing = spec.missing()
    if missing:
        raise ValueError(
            f"check {spec.name!r} does not declare {', '.join(missing)}: every part of a "
            f"CheckSpec is required ({', '.join(PARTS)}); declare a part the check does not "
            "have as None")
    wrong = [(p, t) for p, t in (("verdict", Verdict), ("ranking", Ranking), ("cli", Cli))
             if getattr(spec, p) is not None and not isinstance(getattr(spec, p), t)]
    if wrong:
        raise TypeError(f"check {spec.name!r}: " + "; ".join(
            f"{p} must be a {t.__name__} or None, got {type(getattr(spec, p)).__name__}"
            for p, t in wrong))
    hooks = [(p, getattr(spec, p)) for p in ("run", "figures", "report", "summary", "example")]
    if spec.verdict is not None:
        _validate_verdict(spec.name, spec.verdict)
        hooks += [(f"verdict.{p}", getattr(spec.verdict, p)) for p in VERDICT_HOOKS]
    for p, value in hooks:
        if isinstance(value, str) and (":" not in value or value.startswith(":")):
            raise ValueError(f"check {spec.name!r}: {p} {value!r} is not a 'module:attribute' "
                             "reference")
    if (isinstance(spec.columns, str) or not spec.columns
            or not all(isinstance(c, str) for c in spec.columns)):
        raise ValueError(f"check {spec.name!r}: columns must be a non-empty sequence of column "
                         f"names, got {spec.columns!r}")


def _validate_verdict(name: str, v: Verdict) -> None:
    missing = [p for p in ("question", "per_method", "rule_text") if getattr(v, p) is MISSING]
    if missing:
        raise ValueError(f"check {name!r}: its Verdict does not declare {', '.join(missing)} "
                         "(the question it answers, the rows per method, the rule in words)")
    if not isinstance(v.question, str) or not v.question:
        raise ValueError(f"check {name!r}: Verdict.question must be a non-empty string, got "
                         f"{v.question!r}")
    none = [p for p in ("judge", "per_method", "rule_text") if getattr(v, p) is None]
    if none:
        raise ValueError(f"check {name!r}: Verdict.{', Verdict.'.join(none)} cannot be None; "
                         "a check without a verdict declares verdict=None")


#: Every registered check: ``CHECKS.factory(name)`` is its run function,
#: ``CHECKS.meta(name)["spec"]`` its :class:`CheckSpec`.
CHECKS: Registry[Any] = Registry("check")


def register(spec: CheckSpec) -> CheckSpec:
    """Register ``spec``; fails with a message naming every part it does not declare.

    Example:
        >>> register(CheckSpec("half-declared", run=len))
        Traceback (most recent call last):
        ...
        ValueError: check 'half-declared' does not declare title, columns, figures, report, \
summary, verdict, ranking, cli, example: every part of a CheckSpec is required (run, title, \
columns, figures, report, summary, verdict, ranking, cli, example); declare a part the check \
does not have as None
    """
    _validate(spec)
    spec = dataclasses.replace(spec, columns=tuple(spec.columns))
    CHECKS.register(spec.name, spec=spec)(_runner(spec))
    return spec


def _runner(spec: CheckSpec) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        return spec.part("run")(*args, **kwargs)

    run.__doc__ = f"Run the {spec.name} check."
    return run


def _builtins() -> None:
    """Register the built-in checks (importing :mod:`saliency_sanity.checks` registers them)."""
    importlib.import_module("saliency_sanity.checks")


def get(name: str) -> CheckSpec:
    """The spec of check ``name``; an unknown name raises a ``KeyError`` listing the known ones.

    Example:
        >>> get("model_randomization").cli.command
        'model-randomization'
    """
    if name not in CHECKS:
        _builtins()
    return CHECKS.meta(name)["spec"]


def find(name: str) -> CheckSpec | None:
    """The spec of check ``name``, or None when no check of that name is registered.

    Example:
        >>> find("no such check") is None
        True
    """
    if name not in CHECKS:
        _builtins()
    return CHECKS.meta(name)["spec"] if name in CHECKS else None


def specs() -> list[CheckSpec]:
    """Every registered check, in registration order (the CLI's order).

    Example:
        >>> [s.name for s in specs()][:2]
        ['model_randomization', 'data_randomization']
    """
    _builtins()
    return [CHECKS.meta(n)["spec"] for n in CHECKS.names()]


def ranking_label(name: str) -> str:
    """The label of check ``name`` in the ranking tables: its ``Ranking.label``, else its name.

    Example:
        >>> ranking_label("model_randomization"), ranking_label("no such check")
        ('MPRT', 'no such check')
    """
    spec = find(name)
    ranking = spec.ranking if spec is not None else None
    return ranking.label if ranking is not None and ranking.label else name


def by_command(command: str) -> CheckSpec | None:
    """The check whose subcommand is ``command``, or None.

    Example:
        >>> by_command("localization").name, by_command("list")
        ('localization', None)
    """
    return next((s for s in specs() if s.cli is not None and s.cli.command == command), None)
