"""The critiques on the command line: ``model-randomization --critiques`` writes sMPRT, eMPRT,
random logit, activation scales and the method ranking into the run directory; the values equal
the Python functions called directly; the report shows every section and is rebuilt without
recomputing; a failing extra leaves the main results intact (exit status 4)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import zoo
from scipy import stats
from test_report import check_page

import saliency_sanity.checks as checks
from saliency_sanity.checks import COLUMNS, CheckResult
from saliency_sanity.checks.activation_scales import COLUMNS_SCALES
from saliency_sanity.cli import EXIT_EXTRA_FAILED, main
from saliency_sanity.io_inputs import load_data
from saliency_sanity.report import write_run
from saliency_sanity.results.ranking import RANKING_COLUMNS, TAU_COLUMNS

METHODS = ["gradient", "gradient_x_input", "guided_backprop", "vargrad"]
SCORES = ["spearman_abs", "ssim"]
CONTROLS = ["random_gaussian"]
SECTIONS = ['<h2 id="null-reference">Null reference', '<h2 id="activation-scales">Activation '
            "scales (Binder et al. 2023, claim 2)", '<h2 id="smprt">sMPRT', '<h2 id="emprt">eMPRT',
            '<h2 id="random-logit">Random logit', '<h2 id="ranking">Method rankings across checks']


def cnn_factory():
    return zoo.make("cnn")[0]


def trained_model(weights) -> torch.nn.Module:
    m = cnn_factory()
    m.load_state_dict(torch.load(weights, weights_only=True))
    return m.eval()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("crit-in")
    x = torch.cat([zoo.make("cnn", seed=0)[1], zoo.make("cnn", seed=1)[1]])  # 8 inputs
    np.savez(d / "data.npz", x=x.numpy(), y=np.arange(8) % 10)
    torch.save(zoo.make("cnn", seed=5)[0].state_dict(), d / "w.pt")
    # a data randomization run over the same methods (values made up; only its table is used)
    rng = np.random.default_rng(0)
    rows = [(m, 1, "random_labels", i, s, float(rng.uniform(0, 1)))
            for m in METHODS + CONTROLS for i in range(6) for s in SCORES]
    dr = CheckResult(check="data_randomization", table=pd.DataFrame(rows, columns=COLUMNS),
                     settings={"valid": True, "controls": CONTROLS})
    write_run(dr, d / "dr", figures=False, report=False)
    return {"npz": d / "data.npz", "weights": d / "w.pt", "dr": d / "dr"}


def cli_args(files, out, *extra: str) -> list[str]:
    return ["model-randomization", "--model", "test_cli_critiques:cnn_factory", "--weights",
            str(files["weights"]), "--data", str(files["npz"]), "--methods", ",".join(METHODS),
            "--scores", ",".join(SCORES), "--controls", ",".join(CONTROLS), "--batch-size", "4",
            "--out", str(out), "--no-progress", *extra]


CRITIQUES = ("--critiques", "--smprt-samples", "3", "--emprt-bins", "20")


@pytest.fixture(scope="module")
def run(files, tmp_path_factory):
    out = tmp_path_factory.mktemp("crit") / "run"
    rc = main(cli_args(files, out, *CRITIQUES, "--data-randomization-run", str(files["dr"])))
    assert rc == 0
    return out


def _same_table(saved: pd.DataFrame, direct: pd.DataFrame) -> None:
    key = ["method", "stage", "layer", "sample", "metric"]
    a = saved.sort_values(key).reset_index(drop=True)
    b = direct[COLUMNS].sort_values(key).reset_index(drop=True)
    assert len(a) == len(b) > 0
    for c in key:
        assert a[c].astype(str).tolist() == b[c].astype(str).tolist(), c
    np.testing.assert_allclose(a["value"].to_numpy(float), b["value"].to_numpy(float),
                               rtol=0, atol=1e-12, equal_nan=True)


def test_every_file_with_its_columns(run):
    for sub in ("", "smprt/", "emprt/", "random_logit/"):
        t = pd.read_csv(run / f"{sub}results.csv")
        assert list(t.columns) == COLUMNS, sub
        assert (run / f"{sub}run.json").is_file()
    assert list(pd.read_csv(run / "activation_scales.csv").columns) == COLUMNS_SCALES
    assert list(pd.read_csv(run / "ranking.csv").columns) == RANKING_COLUMNS
    assert list(pd.read_csv(run / "ranking_tau.csv").columns) == TAU_COLUMNS
    for fig in ("activation_scales", "ranking", "cascading_grid"):
        assert (run / "figures" / f"{fig}.png").read_bytes().startswith(b"\x89PNG")
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]  # no temp files
    st = json.loads((run / "run.json").read_text())["settings"]
    assert st["critiques"]["smprt_samples"] == 3 and st["critiques"]["emprt_bins"] == 20
    assert st["critiques"]["data_randomization_run"].endswith("dr")
    # sMPRT leaves out the noise-averaged methods
    sm = json.loads((run / "smprt" / "run.json").read_text())["settings"]
    assert set(sm["methods"]) == {"gradient", "gradient_x_input", "guided_backprop",
                                  "random_gaussian"}
    assert sm["samples"] == 3 and sm["normalize"] == "second_moment"
    checks_ranked = pd.read_csv(run / "ranking.csv")["check"].unique().tolist()
    assert checks_ranked == ["MPRT", "sMPRT", "eMPRT", "random logit", "data randomization"]


def test_values_equal_the_functions_called_directly(run, files):
    x, _, _ = load_data(str(files["npz"]), n=16, seed=0)
    model = trained_model(files["weights"])
    common = {"seed": 0, "batch_size": 4, "controls": CONTROLS, "progress": False}
    smprt = checks.smooth_model_randomization_test(
        model, x, methods=["gradient", "gradient_x_input", "guided_backprop"], scores=SCORES,
        samples=3, noise=0.1, order="bottom_up", normalize="second_moment", init="paper",
        target_mode="predicted", **common)
    _same_table(pd.read_csv(run / "smprt" / "results.csv"), smprt.table)
    emprt = checks.efficient_model_randomization_test(
        model, x, methods=METHODS, bins=20, order="cascading", init="paper",
        target_mode="predicted", **common)
    _same_table(pd.read_csv(run / "emprt" / "results.csv"), emprt.table)
    rl = checks.random_logit_test(model, x, methods=METHODS, scores=SCORES, **common)
    _same_table(pd.read_csv(run / "random_logit" / "results.csv"), rl.table)
    scales = checks.activation_scale_analysis(model, x, order="cascading", init="paper", seed=0,
                                              batch_size=4, progress=False).table
    saved = pd.read_csv(run / "activation_scales.csv")
    assert saved[["stage", "randomized_block", "block", "position"]].astype(str).values.tolist() \
        == scales[["stage", "randomized_block", "block", "position"]].astype(str).values.tolist()
    np.testing.assert_allclose(saved[["spearman", "spearman_spatial", "scale_ratio"]].to_numpy(),
                               scales[["spearman", "spearman_spatial", "scale_ratio"]].to_numpy(),
                               rtol=0, atol=1e-12, equal_nan=True)
    # the main check is untouched by the extras: same as a plain call
    main_res = checks.model_randomization_test(
        model, x, methods=METHODS, scores=SCORES, order="cascading", init="paper",
        target_mode="predicted", **common)
    _same_table(pd.read_csv(run / "results.csv"), main_res.table)

    # ranking: means and ranks recomputed by hand from the direct results
    dr = CheckResult.load(files["dr"]).table
    sources = {"MPRT": (main_res.table, "spearman_abs", False),
               "sMPRT": (smprt.table, "spearman_abs", False),
               "eMPRT": (emprt.table, "emprt", True),
               "random logit": (rl.table, "spearman_abs", False),
               "data randomization": (dr, "spearman_abs", False)}
    ranking = pd.read_csv(run / "ranking.csv")
    tau = pd.read_csv(run / "ranking_tau.csv")
    by_hand = {}
    for check, (t, metric, higher) in sources.items():
        sub = t[(t["metric"] == metric) & (t["stage"] == t["stage"].max())
                & ~t["method"].isin(CONTROLS)]
        means = sub.groupby("method")["value"].mean()
        ranks = pd.Series(stats.rankdata(-means if higher else means), index=means.index)
        by_hand[check] = ranks
        got = ranking[ranking["check"] == check].set_index("method")
        assert set(got.index) == set(means.index), check
        np.testing.assert_allclose(got.loc[means.index, "mean"], means, rtol=1e-12)
        np.testing.assert_array_equal(got.loc[means.index, "rank"], ranks)
        assert (got["higher_is_better"] == higher).all()
    for a in sources:
        for b in sources:
            common_m = by_hand[a].index.intersection(by_hand[b].index)
            want = stats.kendalltau(by_hand[a][common_m], by_hand[b][common_m]).statistic
            row = tau[(tau["check_a"] == a) & (tau["check_b"] == b)].iloc[0]
            assert row["tau"] == pytest.approx(want, abs=1e-12), (a, b)
            assert row["n"] == len(common_m)


def test_report_has_every_section_and_valid_images(run):
    text = (run / "report.html").read_text(encoding="utf-8")
    p = check_page(text)
    assert len(p.imgs) >= 5  # grid, 2 curves, activation scales, ranking
    pos = [text.index(s) for s in ["<h2>Figures</h2>"] + SECTIONS + ["<h2>Settings</h2>"]]
    assert pos == sorted(pos)
    for phrase in ("dotted lines", "Lower similarity is better", "Higher q is better",
                   "Kendall", "data randomization", "3 noisy copies", "20-bin"):
        assert phrase in text, phrase
    assert "The checks disagree" in text or "rank the methods alike" in text
    if "The checks disagree" in text:  # the method whose rank moves most is named
        assert "Largest rank change" in text
    assert any(w in text for w in ("PRESERVED", "do NOT preserve"))


def test_report_rebuilds_from_files_without_recomputing(run, tmp_path, monkeypatch, capsys):
    import saliency_sanity.checks.ranking as ranking
    import saliency_sanity.engine.evaluator as evaluator

    def boom(*a, **k):
        pytest.fail("recomputed")

    for name in ("smooth_model_randomization_test", "efficient_model_randomization_test",
                 "random_logit_test", "activation_scale_analysis", "model_randomization_test",
                 "method_ranking"):
        monkeypatch.setattr(checks, name, boom)
    monkeypatch.setattr(evaluator.Evaluator, "unit", boom)
    monkeypatch.setattr(ranking, "method_ranking", boom)
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    (copy / "report.html").unlink()
    (copy / "figures" / "ranking.png").unlink()  # redrawn from ranking.csv
    (copy / "figures" / "activation_scales.png").unlink()
    assert main(["report", str(copy)]) == 0
    text = (copy / "report.html").read_text(encoding="utf-8")
    for s in SECTIONS:
        assert s in text
    assert len(check_page(text).imgs) == len(list((run / "figures").glob("*.png")))
    # no critique files: no critique sections (the null reference belongs to the main check)
    for f in ("smprt", "emprt", "random_logit"):
        shutil.rmtree(copy / f)
    for f in ("activation_scales.csv", "ranking.csv", "ranking_tau.csv"):
        (copy / f).unlink()
    assert main(["report", str(copy)]) == 0
    text = (copy / "report.html").read_text(encoding="utf-8")
    assert SECTIONS[0] in text
    assert all(s not in text for s in SECTIONS[1:])


def test_identical_rerun_reuses_the_extras(run, files, tmp_path, monkeypatch, capsys):
    copy = tmp_path / "again"
    shutil.copytree(run, copy)

    def boom(*a, **k):
        raise AssertionError("recomputed")

    for name in ("smooth_model_randomization_test", "efficient_model_randomization_test",
                 "random_logit_test", "activation_scale_analysis"):
        monkeypatch.setattr(checks, name, boom)
    rc = main(cli_args(files, copy, *CRITIQUES, "--data-randomization-run", str(files["dr"])))
    assert rc == 0
    err = capsys.readouterr().err
    assert err.count("reusing") == 4
    # other settings: that extra is recomputed (and here fails: exit 4, the rest intact)
    rc = main(cli_args(files, copy, "--emprt", "--emprt-bins", "30"))
    assert rc == EXIT_EXTRA_FAILED
    assert pd.read_csv(copy / "emprt" / "results.csv").equals(
        pd.read_csv(run / "emprt" / "results.csv"))  # the old eMPRT kept


def test_a_failing_extra_leaves_the_main_results_intact(run, files, tmp_path, monkeypatch,
                                                        capsys):
    def boom(*a, **k):
        raise RuntimeError("boom in eMPRT")

    monkeypatch.setattr(checks, "efficient_model_randomization_test", boom)
    # and random logit fails while saving, after its results.csv was written
    orig_save = CheckResult.save

    def failing_save(self, directory):
        orig_save(self, directory)
        if self.check == "random_logit":
            raise OSError(28, "No space left on device")
        return directory

    monkeypatch.setattr(CheckResult, "save", failing_save)
    out = tmp_path / "r"
    rc = main(cli_args(files, out, "--emprt", "--random-logit", "--activation-scales"))
    assert rc == EXIT_EXTRA_FAILED
    err = capsys.readouterr().err
    assert "boom in eMPRT" in err and "emprt" in err and "No space left" in err
    assert "main results" in err
    assert pd.read_csv(out / "results.csv").equals(pd.read_csv(run / "results.csv"))
    assert (out / "run.json").is_file() and (out / "activation_scales.csv").is_file()
    assert not (out / "emprt").exists() and not (out / "random_logit").exists()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no partial dirs
    text = (out / "report.html").read_text(encoding="utf-8")
    check_page(text)
    assert SECTIONS[1] in text and SECTIONS[3] not in text


@pytest.mark.parametrize("extra, message", [
    (("--smprt", "--smprt-samples", "0"), "--smprt-samples"),
    (("--emprt", "--emprt-bins", "1"), "--emprt-bins"),
    (("--data-randomization-run", "MAIN"), "holds a 'model_randomization' run"),
    (("--data-randomization-run", "/no/such/dir"), "is not a folder"),
])
def test_bad_critique_options_fail_before_any_work(run, files, tmp_path, capsys, extra,
                                                    message):
    extra = tuple(str(run) if a == "MAIN" else a for a in extra)
    out = tmp_path / "bad"
    assert main(cli_args(files, out, *extra)) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_demo_runs_its_critiques(tmp_path, monkeypatch):
    """The demo with a tiny stand-in model: critiques written, their settings in run.json and
    in the report."""
    import saliency_sanity.demo as demo

    model, x = zoo.make("cnn")

    class Trained:
        from_cache, train_acc, test_acc, key = True, 1.0, 1.0, "tiny"

    Trained.model = model

    class DS:
        x_test = x

    monkeypatch.setattr(demo, "demo_model", lambda **k: (Trained, DS))
    monkeypatch.setattr(demo, "DEMO_METHODS", {"gradient": "gradient",
                                               "smoothgrad": ("smoothgrad", {"samples": 4}),
                                               "guided_backprop": "guided_backprop"})
    opts = demo.CritiqueOptions(**{**demo.DEMO_CRITIQUES.settings(), "smprt_samples": 2,
                                   "methods": None})
    run = demo.demo_run(tmp_path / "demo", n_samples=4, progress=False, log=lambda s: None,
                        critiques=opts, localization=False)  # its own test: test_localization_face
    assert run.outcome is not None and not run.outcome.failed
    for f in ("smprt/results.csv", "emprt/results.csv", "random_logit/results.csv",
              "activation_scales.csv", "ranking.csv"):
        assert len(pd.read_csv(run.out / f)) > 0, f
    ranks = pd.read_csv(run.out / "ranking.csv")
    assert {"MPRT", "sMPRT", "eMPRT", "random logit"} <= set(ranks["check"])
    st = json.loads((run.out / "run.json").read_text())["settings"]
    assert st["critiques"]["smprt_methods"] == ["gradient", "gradient_x_input", "guided_backprop"]
    sm = json.loads((run.out / "smprt" / "run.json").read_text())["settings"]
    assert set(sm["methods"]) == {"gradient", "gradient_x_input", "guided_backprop",
                                  "edge_sobel", "random_gaussian", "random_uniform"}
    text = (run.out / "report.html").read_text(encoding="utf-8")
    assert "2 noisy copies" in text
    check_page(text)


def test_run_critiques_leaves_model_and_global_rng_alone(tmp_path, global_rng_guard):
    from saliency_sanity.critiques import CritiqueOptions, run_critiques

    model, x = zoo.make("mlp")
    snap = zoo.snapshot(model)
    res = checks.model_randomization_test(model, x, methods=["gradient", "gradient_x_input"],
                                          scores=["spearman_abs"], controls=False,
                                          progress=False, run_dir=tmp_path)
    outcome = run_critiques(res, tmp_path, CritiqueOptions.all(smprt_samples=2), model=model, x=x,
                            methods=["gradient", "gradient_x_input"], scores=["spearman_abs"],
                            controls=False, progress=False, log=lambda s: None)
    assert not outcome.failed and set(outcome.written) == {
        "smprt", "emprt", "random_logit", "activation_scales", "ranking"}
    zoo.assert_unchanged(model, snap)
