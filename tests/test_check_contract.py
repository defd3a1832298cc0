"""The contract every registered check keeps, tested on each check's own tiny example
(``CheckSpec.example``), as torchmetrics' ``MetricTester`` tests every metric.

A new check is registered with :func:`saliency_sanity.results.spec.register` and is tested here
without a line of its own. A case a check cannot meet today is an ``xfail(strict=True)`` with the
reason, listed in ``KNOWN_GAPS``; a case that does not apply (a check that trains its own models
has no user model to leave untouched) is skipped with the reason.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from torch import nn

from saliency_sanity.engine import RunConfig
from saliency_sanity.results import CheckResult
from saliency_sanity.results import spec as registry
from saliency_sanity.results.spec import CheckSpec, Cli, Example, Ranking, Verdict

pytestmark = pytest.mark.usefixtures("one_thread")

SPECS = registry.specs()
#: Checks that retrain models: no user model to leave untouched, no batch units to resume.
RETRAINING = {"data_randomization", "diffroar", "blockmnist"}
#: Checks whose example takes more than a few seconds: their cases run behind ``slow``.
SLOW = {"blockmnist"}
COMMON = {f.name for f in dataclasses.fields(RunConfig)}
#: (check, case) -> why the check does not meet that case today.
KNOWN_GAPS = {
    ("diffroar", "run_json"): "DiffRoarResult.save writes no stages and none of the engine's "
                              "shared settings (batch_size, device, methods, scores) to run.json",
    ("blockmnist", "run_json"): "blockmnist_experiment returns a dict, not a result that saves "
                                "a run directory",
    ("diffroar", "report"): "a diffroar run directory is written with its page by "
                            "report.shah.write_diffroar_run; CheckResult.load cannot read it",
    ("blockmnist", "report"): "a blockmnist run directory is written with its page by "
                              "report.shah.write_blockmnist_run; CheckResult.load cannot read it",
}


def _cases(case: str) -> list[Any]:
    out = []
    for s in SPECS:
        marks = [pytest.mark.slow] if s.name in SLOW else []
        if (s.name, case) in KNOWN_GAPS:
            marks.append(pytest.mark.xfail(reason=KNOWN_GAPS[s.name, case], strict=True))
        out.append(pytest.param(s, id=s.name, marks=marks))
    return out


def _run(spec: CheckSpec, ex: Example, **over: Any) -> Any:
    return spec.part("run")(*ex.args, **{**ex.kwargs, **over})


def _table(out: Any) -> pd.DataFrame:
    return out["table"] if isinstance(out, dict) else out.table


def _settings(out: Any) -> dict[str, Any]:
    return out["settings"] if isinstance(out, dict) else out.settings


def _stable(table: pd.DataFrame) -> pd.DataFrame:
    """The table without wall-clock columns (a retraining's seconds, whether it was cached)."""
    return table.drop(columns=[c for c in ("seconds", "from_cache") if c in table.columns])


def _takes(spec: CheckSpec, name: str) -> bool:
    params = inspect.signature(spec.part("run")).parameters
    return name in params or (name in COMMON and any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()))


def _models(ex: Example) -> list[nn.Module]:
    return [a for a in [*ex.args, *ex.kwargs.values()] if isinstance(a, nn.Module)]


def _snapshot(model: nn.Module) -> tuple[dict[str, torch.Tensor], list[bool], list[bool]]:
    return ({k: v.detach().clone() for k, v in model.state_dict().items()},
            [m.training for m in model.modules()],
            [p.requires_grad for p in model.parameters()])


def _assert_same_model(model: nn.Module, snap: Any) -> None:
    state, modes, grads = snap
    now = model.state_dict()
    assert list(now) == list(state)
    for k, v in state.items():
        assert torch.equal(now[k], v), f"{k} changed"
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == grads


def assert_declares_everything(spec: CheckSpec) -> None:
    """Every part declared, and every reference resolving to what it should."""
    assert spec.missing() == [], f"{spec.name} does not declare {spec.missing()}"
    assert isinstance(spec.title, str) and spec.title
    assert spec.columns and all(isinstance(c, str) for c in spec.columns)
    for part in ("run", "figures", "report", "summary", "example"):
        if getattr(spec, part) is not None:
            assert callable(spec.part(part)), f"{spec.name}.{part} is not callable"
    assert spec.run is not None and spec.example is not None
    assert spec.verdict is None or (isinstance(spec.verdict, Verdict)
                                    and callable(registry.resolve(spec.verdict.judge))
                                    and spec.verdict.rule)
    if spec.verdict is not None:
        assert isinstance(spec.verdict.question, str) and spec.verdict.question.endswith("?")
        for hook in ("stages", "per_method", "rule_text", "line"):
            fn = getattr(spec.verdict, hook)
            assert fn is None or callable(registry.resolve(fn)), f"{spec.name}.verdict.{hook}"
    if spec.ranking is not None:
        assert isinstance(spec.ranking, Ranking)
        for fn in (spec.ranking.table, spec.ranking.views):
            assert fn is None or callable(registry.resolve(fn))
    if spec.cli is not None:
        assert isinstance(spec.cli, Cli)
        assert callable(registry.resolve(spec.cli.add_parser))
        assert callable(registry.resolve(spec.cli.run))


@pytest.mark.parametrize("spec", [pytest.param(s, id=s.name) for s in SPECS])
def test_every_part_is_declared_and_resolves(spec):
    assert_declares_everything(spec)
    assert isinstance(spec.part("example")(), Example)


def test_the_registry_holds_every_check_once_with_distinct_commands():
    names = [s.name for s in SPECS]
    assert names[:6] == ["model_randomization", "data_randomization", "faithfulness",
                         "localization", "diffroar", "blockmnist"]
    assert {"smooth_model_randomization", "efficient_model_randomization",
            "random_logit"} <= set(names)
    commands = [s.cli.command for s in SPECS if s.cli is not None]
    assert len(commands) == len(set(commands)) == 6
    with pytest.raises(KeyError, match="known checks: .*model_randomization"):
        registry.get("no_such_check")


@pytest.mark.parametrize("spec", _cases("seed"))
def test_same_seed_gives_identical_tables_with_the_declared_columns(spec, global_rng_guard):
    ex = spec.part("example")()
    a, b = _run(spec, ex), _run(spec, ex)
    assert list(_table(a).columns) == list(spec.columns)
    assert len(_table(a)) > 0
    pd.testing.assert_frame_equal(_stable(_table(a)), _stable(_table(b)), check_exact=True)
    if isinstance(a, CheckResult):
        assert a.check == spec.name


@pytest.mark.parametrize("spec", _cases("model"))
def test_the_model_is_untouched_after_success_and_after_an_error(spec):
    ex = spec.part("example")()
    models = _models(ex)
    if not models:
        pytest.skip(f"{spec.name} trains its own models: no user model is passed")
    for m in models:
        m.train()  # a mode the check must not change either way
    snaps = [_snapshot(m) for m in models]
    _run(spec, ex)
    for m, s in zip(models, snaps, strict=True):
        _assert_same_model(m, s)
    with pytest.raises((ValueError, TypeError)):
        _run(spec, ex, **ex.bad)
    for m, s in zip(models, snaps, strict=True):
        _assert_same_model(m, s)


@pytest.mark.parametrize("spec", _cases("bad_input"))
def test_bad_input_raises_a_clear_error(spec):
    ex = spec.part("example")()
    assert ex.bad, f"{spec.name}'s example declares no bad input"
    with pytest.raises((ValueError, TypeError)) as err:
        _run(spec, ex, **ex.bad)
    assert len(str(err.value)) > 20, f"unclear message: {err.value!r}"


@pytest.mark.parametrize("spec", _cases("bad_input_run_dir"))
def test_bad_input_leaves_no_files_in_the_run_directory(spec, tmp_path):
    ex = spec.part("example")()
    assert _takes(spec, "run_dir"), f"{spec.name} takes no run_dir"
    run_dir = tmp_path / "run"
    with pytest.raises((ValueError, TypeError)) as err:
        _run(spec, ex, run_dir=run_dir, **ex.bad)
    if "run_dir" in str(err.value):
        pytest.skip(f"{spec.name} writes no run directory: {err.value}")
    left = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*")) if run_dir.exists() else []
    assert left == [], f"files left behind: {left}"


@pytest.mark.parametrize("spec", _cases("run_json"))
def test_run_json_records_the_check_and_the_common_settings(spec, tmp_path):
    ex = spec.part("example")()
    out = _run(spec, ex)
    out.save(tmp_path)
    meta = json.loads((tmp_path / "run.json").read_text(encoding="utf-8"))
    assert meta["check"] == spec.name
    assert {"settings", "stages"} <= set(meta)
    assert {"seed", "batch_size", "device", "n_samples", "methods", "scores",
            "engine"} <= set(meta["settings"])


@pytest.mark.parametrize("spec", _cases("config"))
def test_config_runconfig_is_honoured_as_the_keywords_are(spec, global_rng_guard):
    ex = spec.part("example")()
    common = {k: v for k, v in ex.kwargs.items() if k in COMMON}
    own = {k: v for k, v in ex.kwargs.items() if k not in COMMON}
    by_config = spec.part("run")(*ex.args, **own,
                                 config=RunConfig(**{**common, "seed": 3}))
    by_keyword = spec.part("run")(*ex.args, **own, **{**common, "seed": 3})
    assert _settings(by_config)["seed"] == _settings(by_keyword)["seed"] == 3
    pd.testing.assert_frame_equal(_stable(_table(by_config)), _stable(_table(by_keyword)),
                                  check_exact=True)


@pytest.mark.parametrize("spec", _cases("report"))
def test_the_report_renders_from_the_run_directory(spec, tmp_path):
    from saliency_sanity.report import build_report

    ex = spec.part("example")()
    out = _run(spec, ex)
    out.save(tmp_path)
    page = build_report(tmp_path).read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert f"<title>{spec.title}" in page.replace("&#x27;", "'")
    again = CheckResult.load(tmp_path)
    pd.testing.assert_frame_equal(again.table, _table(out), check_dtype=False)


# ------------------------------------------------------------------ resume after SIGKILL
#: Checks whose units are batches of inputs written to ``run_dir/partial`` (resumable), slowed
#: down by a plug-in method so that a kill lands midway (the activation scales run no method).
RESUMABLE = [s for s in SPECS if s.name not in RETRAINING and _takes(s, "methods")]

_RESUME_SCRIPT = textwrap.dedent("""
    import sys, time
    from saliency_sanity.methods import get
    from saliency_sanity.results import spec as registry

    spec = registry.get(sys.argv[1])
    ex = spec.part("example")()
    gradient = get("gradient")

    def slow_gradient(model, x, target):  # a plug-in method: slow enough to be killed midway
        time.sleep(0.4)
        return gradient(model, x, target)

    kw = {**ex.kwargs, "methods": {"slow_gradient": slow_gradient}, "batch_size": 1,
          "run_dir": sys.argv[2], "controls": False}
    spec.part("run")(*ex.args, **kw).save(sys.argv[3])
""")


@pytest.mark.slow
@pytest.mark.parametrize("spec", [pytest.param(s, id=s.name) for s in RESUMABLE])
def test_resume_after_sigkill_gives_the_same_table(spec, tmp_path):
    from interrupt import kill_midway

    script = tmp_path / "run.py"
    script.write_text(_RESUME_SCRIPT, encoding="utf-8")
    env = {**__import__("os").environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    out, killed, fresh = tmp_path / "units", tmp_path / "killed", tmp_path / "fresh"
    cmd = [sys.executable, str(script), spec.name, str(out)]
    kill_midway([*cmd, str(killed)], env, out, units=4, at_least=1)
    subprocess.run([*cmd, str(killed)], env=env, check=True)
    subprocess.run([sys.executable, str(script), spec.name, str(tmp_path / "units2"),
                    str(fresh)], env=env, check=True)
    pd.testing.assert_frame_equal(CheckResult.load(killed).table, CheckResult.load(fresh).table,
                                  check_exact=True)


# ------------------------------------------------------------------ an incomplete check
def _toy_run(model: nn.Module, x: torch.Tensor, *, config: Any = None, **common: Any) -> Any:
    return CheckResult(check="toy", table=pd.DataFrame(columns=["method", "value"]))


def test_a_check_missing_a_part_cannot_register_and_fails_the_battery():
    toy = CheckSpec("toy", run=_toy_run, title="Toy", columns=("method", "value"),
                    figures=None, report=None, summary=None, ranking=None, cli=None,
                    example=Example)  # no verdict declared, not even None
    with pytest.raises(ValueError, match=r"check 'toy' does not declare verdict"):
        registry.register(toy)
    assert "toy" not in registry.CHECKS
    with pytest.raises(AssertionError, match="does not declare"):
        assert_declares_everything(toy)
    with pytest.raises(TypeError, match="cli must be a Cli or None"):
        registry.register(dataclasses.replace(toy, verdict=None, cli="toy-command"))
    with pytest.raises(ValueError, match="not a 'module:attribute' reference"):
        registry.register(dataclasses.replace(toy, verdict=None, report="no colon"))
    assert "toy" not in registry.CHECKS
    complete = dataclasses.replace(toy, verdict=None)
    assert_declares_everything(complete)  # declared None where it has none: accepted


# ------------------------------------------------------------------ a new check, end to end
def _toy_add_parser(sub: Any) -> None:
    p = sub.add_parser("toy-check", help="a toy check")
    p.add_argument("--out", required=True)


def _toy_cli_run(args: Any, argv: list[str]) -> int:
    from saliency_sanity.report import write_run

    table = pd.DataFrame({"method": ["g", "g"], "stage": 1, "layer": "fc", "sample": [0, 1],
                          "metric": "ssim", "value": [0.5, 0.25]})
    write_run(CheckResult(check="toy", table=table, settings={"seed": 0}), args.out)
    print("toy: done")
    return 0


def test_a_new_check_needs_only_its_spec_and_one_registration(monkeypatch, tmp_path, capsys):
    from saliency_sanity._registry import Registry
    from saliency_sanity.cli import interrupted_message, main

    fresh: Registry[Any] = Registry("check")
    monkeypatch.setattr(registry, "CHECKS", fresh)
    for s in SPECS:
        registry.register(s)
    toy = CheckSpec("toy", run=_toy_run, title="Toy check", columns=("method", "stage", "layer",
                    "sample", "metric", "value"),
                    figures="saliency_sanity.plots:data_randomization_figures",
                    report="saliency_sanity.report.pages:randomization_page",
                    summary="saliency_sanity.report.hooks:format_table_summary", verdict=None,
                    ranking=Ranking(label="toy"),
                    cli=Cli("toy-check", _toy_add_parser, _toy_cli_run, keeps_run_dir=True),
                    example=Example)
    registry.register(toy)  # the one registration line
    assert main(["toy-check", "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("toy: done")
    page = (tmp_path / "run" / "report.html").read_text(encoding="utf-8")
    assert "<title>Toy check" in page and (tmp_path / "run" / "figures" / "bars_ssim.png").is_file()
    assert main(["list"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("  ")]
    assert [ln.split()[0] for ln in lines] == [*[s.name for s in SPECS], "toy"]
    assert "saliency-sanity toy-check" in lines[-1] and lines[-1].endswith("Toy check")
    import argparse

    msg = interrupted_message(argparse.Namespace(command="toy-check", out="o"))
    assert "finished work is kept in o" in msg


# ------------------------------------------------------------------ a new check's own verdict
def _toy_per_method(result: CheckResult, *, min_samples: int, ci: float, main: tuple[str, ...],
                    margin: float) -> list[dict[str, Any]]:
    means = result.table.groupby("method", sort=False)["value"].mean()
    return [{"method": m, "control": False, "verdict": "pass" if v < margin else "flagged",
             "headline": f"mean {v:.2f}", "ignores": "", "stages": f"n = {min_samples}"}
            for m, v in means.items()]


def _toy_rule_text(margin: float, min_samples: int) -> str:
    return f"a toy method passes when its mean value is below {margin:g}"


def _toy_line(row: Any) -> str:
    return f"{row['headline']} [{row['stages']}]"


def test_a_new_check_declares_its_own_question_and_rule_without_editing_verdicts(monkeypatch):
    from saliency_sanity._registry import Registry
    from saliency_sanity.report.summary import rule_section
    from saliency_sanity.verdicts import QUESTIONS, format_verdict, has_verdict, rule_text, verdict

    fresh: Registry[Any] = Registry("check")
    monkeypatch.setattr(registry, "CHECKS", fresh)
    for s in SPECS:
        registry.register(s)
    own = Verdict(judge=verdict, rule="a toy method passes when its values are small",
                  question="are the toy values small?", per_method=_toy_per_method,
                  rule_text=_toy_rule_text, line=_toy_line)
    toy = CheckSpec("toy", run=_toy_run, title="Toy check", columns=("method", "value"),
                    figures=None, report=None, summary="saliency_sanity.verdicts:format_verdict",
                    verdict=own, ranking=None, cli=None, example=Example)
    with pytest.raises(ValueError, match="its Verdict does not declare question, rule_text"):
        registry.register(dataclasses.replace(toy, verdict=Verdict(
            judge=verdict, rule="r", per_method=_toy_per_method)))
    with pytest.raises(ValueError, match=r"verdict.line 'no colon' is not a 'module:attribute'"):
        registry.register(dataclasses.replace(toy, verdict=dataclasses.replace(
            own, line="no colon")))
    registry.register(toy)
    table = pd.DataFrame({"method": ["g", "g", "h", "h"], "stage": 1, "layer": "fc",
                          "sample": [0, 1, 0, 1], "metric": "ssim",
                          "value": [0.0, 0.1, 0.5, 0.7]})
    result = CheckResult(check="toy", table=table)
    assert has_verdict("toy") and QUESTIONS["toy"] == "are the toy values small?"
    assert list(QUESTIONS)[-1] == "toy" and "toy" in QUESTIONS
    assert verdict(result, margin=0.2)["verdict"].tolist() == ["pass", "flagged"]
    assert rule_text("toy", 0.2) == "a toy method passes when its mean value is below 0.2"
    assert format_verdict(result, margin=0.2, min_samples=3).splitlines() == [
        "verdicts: are the toy values small? (scores: ssim)",
        "  g           PASS          mean 0.05 [n = 3]",
        "  h           FLAGGED       mean 0.60 [n = 3]",
        "rule: a toy method passes when its mean value is below 0.2",
    ]
    section = rule_section(result, margin=0.2)
    assert "a toy method passes when its values are small" in section
    assert "a toy method passes when its mean value is below 0.2" in section
    # the built-in checks still answer their own questions
    assert QUESTIONS["model_randomization"] == "which randomized blocks does each method ignore?"
    assert rule_text("data_randomization").startswith("Similarities between the maps")

