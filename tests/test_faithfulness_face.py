"""The faces of the faithfulness check: the CLI command (run directory, resume, clear errors that
leave no files), the report page and section, the ranking by every faithfulness score beside the
randomization checks, and the experimental-gap sentence generated from the numbers."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import zoo
from scipy import stats

from saliency_sanity import faithfulness as F
from saliency_sanity import methods
from saliency_sanity.checks import CheckResult, faithfulness_test
from saliency_sanity.checks.faithfulness import (
    faithfulness_scores,
    faithfulness_summary,
    ranking_views,
)
from saliency_sanity.checks.ranking import compute_ranking, expand_views, method_ranking
from saliency_sanity.cli import main
from saliency_sanity.engine import derive_seed
from saliency_sanity.plots_faithfulness import curve_summary
from saliency_sanity.report.faithfulness import faithfulness_section, scores_table
from saliency_sanity.report.ranking import gap_sentence

pytestmark = pytest.mark.usefixtures("one_thread")


def cnn_factory():
    return zoo.make("cnn")[0]


BASE = ["faithfulness", "--model", "test_faithfulness_face:cnn_factory", "--methods",
        "gradient", "--controls", "random_gaussian", "--batch-size", "2", "--no-progress"]


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------
def test_cli_writes_a_run_directory_with_the_core_curves(tmp_path, npz, capsys):
    out = tmp_path / "run"
    argv = BASE + ["--data", str(npz), "--metrics", "region_perturbation,road", "--region", "4",
                   "--steps", "5", "--replacement", "black", "--percentages", "0.25,0.5",
                   "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "region perturbation AOPC" in printed and "ROAD gap" in printed
    names = {p.name for p in out.iterdir()}
    assert {"results.csv", "run.json", "report.html", "figures"} <= names
    assert sorted(p.name for p in (out / "figures").iterdir()) == [
        "faithfulness_region_perturbation.png", "faithfulness_road.png"]
    run = json.loads((out / "run.json").read_text())
    assert run["check"] == "faithfulness"
    st = run["settings"]
    assert st["metrics"]["region_perturbation"] == {"region": 4, "steps": 5,
                                                   "replacement": "black"}
    assert st["metrics"]["road"]["percentages"] == [0.25, 0.5]
    assert "faithfulness" in st["command"]
    # the rows are the functional core's curves on the same model, maps and seeds
    t = pd.read_csv(out / "results.csv")
    model, x = zoo.make("cnn")
    for b, sl in enumerate([slice(0, 2), slice(2, 4)]):
        xb = x[sl]
        tb = methods.predicted_targets(model, xb)
        maps = methods.get("gradient")(model, xb, tb)
        seed = derive_seed(0, "faithfulness", b)
        want = F.region_perturbation(model, xb, maps, tb, region=4, steps=5, order="morf",
                                     replacement="black", seed=seed)
        got = t[(t.method == "gradient") & (t.metric == "region_perturbation_morf")
                & t["sample"].isin(range(sl.start, sl.stop))]
        got = got.pivot(index="sample", columns="stage", values="value").to_numpy()
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-12)
        road = F.road(model, xb, maps, tb, percentages=(0.25, 0.5), order="lerf", seed=seed)
        got = t[(t.method == "gradient") & (t.metric == "road_lerf")
                & t["sample"].isin(range(sl.start, sl.stop))]
        got = got.pivot(index="sample", columns="stage", values="value").to_numpy()
        np.testing.assert_allclose(got, road.numpy(), rtol=1e-12)
    page = (out / "report.html").read_text()
    assert 'id="faithfulness"' in page and "random order" in page
    assert "Verdicts per score" not in page  # no randomization verdicts on this page
    # rerun: the finished run is reused (resume), same table
    assert main(argv) == 0
    pd.testing.assert_frame_equal(pd.read_csv(out / "results.csv"), t)


def test_cli_resumes_after_a_kill(tmp_path, npz, monkeypatch):
    """A run stopped after its first unit keeps that unit; the rerun finishes with the same
    rows as an uninterrupted run."""
    from saliency_sanity.engine import store

    argv = BASE + ["--data", str(npz), "--metrics", "deletion", "--pixels-per-step", "0.25"]
    full = tmp_path / "full"
    assert main(argv + ["--out", str(full)]) == 0
    calls = {"n": 0}
    real = store.UnitStore.save

    def dying(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(store.UnitStore, "save", dying)
    part = tmp_path / "part"
    assert main(argv + ["--out", str(part)]) == 130
    assert not (part / "results.csv").exists()
    monkeypatch.setattr(store.UnitStore, "save", real)
    assert main(argv + ["--out", str(part)]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(part / "results.csv"),
                                  pd.read_csv(full / "results.csv"))


@pytest.mark.parametrize("extra, message", [
    (["--metrics", "pixelflip"], "unknown faithfulness metric"),
    (["--metrics", "road", "--region", "4"], "--region applies to region_perturbation"),
    (["--metrics", "region_perturbation", "--region", "40"], "larger than the image"),
    (["--metrics", "region_perturbation", "--region", "4", "--steps", "0"],
     "steps must be positive"),
    (["--metrics", "region_perturbation", "--replacement", "zebra"], "unknown replacement"),
    (["--metrics", "road", "--percentages", "10,50"], "fractions, not percents"),
    (["--metrics", "road", "--percentages", "a,b"], "--percentages must be"),
    (["--metrics", "road", "--noise", "-1"], "noise must be"),
    (["--metrics", "road", "--batch-size", "0"], "--batch-size"),
])
def test_cli_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, npz, capsys, extra,
                                                          message):
    out = tmp_path / "out"
    argv = [a for a in BASE if a not in ("--batch-size", "2")] if "--batch-size" in extra \
        else BASE
    rc = main(argv + ["--data", str(npz), "--out", str(out)] + extra)
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_cli_rejects_flat_inputs(tmp_path, capsys):
    p = tmp_path / "flat.npz"
    np.savez(p, x=np.random.default_rng(0).random((4, 6)).astype(np.float32))
    rc = main(["faithfulness", "--model", "test_faithfulness_face:cnn_factory", "--data", str(p),
               "--metrics", "road", "--out", str(tmp_path / "o"), "--no-progress"])
    assert rc == 2
    assert "perturbs images" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_settings_are_checked_before_the_model_runs():
    model, x = zoo.make("cnn")
    calls = []
    h = model.register_forward_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(ValueError, match="unknown setting"):
            faithfulness_test(model, x, metrics=["road"], settings={"road": {"regoin": 3}},
                              progress=False)
        with pytest.raises(ValueError, match="percentages"):
            faithfulness_test(model, x, metrics=["road"], settings={"road": {"percentages":
                                                                           [0.5, 1.0]}},
                              progress=False)
    finally:
        h.remove()
    assert calls == []


# --------------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------------
def _result() -> CheckResult:
    """Two samples, method g and the random order; region perturbation (3 steps) and
    insertion (2 steps), by hand."""
    rows = []
    curves = {("g", "region_perturbation_morf"): [[1.0, 0.5, 0.0], [0.8, 0.6, 0.2]],
              ("g", "region_perturbation_lerf"): [[1.0, 1.0, 0.5], [0.8, 0.8, 0.7]],
              ("g", "insertion_morf"): [[0.0, 1.0], [0.2, 0.6]],
              ("(random order)", "region_perturbation_morf"): [[1.0, 0.7, 0.3], [0.8, 0.7, 0.4]],
              ("(random order)", "region_perturbation_lerf"): [[1.0, 0.7, 0.3], [0.8, 0.7, 0.4]]}
    for (method, metric), per_sample in curves.items():
        for s, c in enumerate(per_sample):
            for k, v in enumerate(c):
                rows.append([method, k, f"{k / (len(c) - 1):.4f}", s, metric, v])
    t = pd.DataFrame(rows, columns=["method", "stage", "layer", "sample", "metric", "value"])
    return CheckResult(check="faithfulness", table=t, settings={"score": "softmax"})


def test_summary_and_table_match_hand_computed_intervals():
    res = _result()
    s = faithfulness_summary(res).set_index(["method", "label"])
    # AOPC of g: sample 0: (0 + 0.5 + 1) / 3 = 0.5; sample 1: (0 + 0.2 + 0.6) / 3 = 0.2667
    a = np.array([0.5, 0.8 / 3])
    lo, hi = stats.t.interval(0.95, 1, loc=a.mean(), scale=stats.sem(a))
    r = s.loc[("g", "region perturbation AOPC")]
    assert r["mean"] == pytest.approx(a.mean()) and r["n"] == 2
    assert (r["lo"], r["hi"]) == (pytest.approx(lo), pytest.approx(hi))
    assert bool(s.loc[("g", "region perturbation LeRF AOPC"), "higher_is_better"]) is False
    # insertion AUC, trapezoid on [0, 1]: 0.5 and 0.4
    assert s.loc[("g", "insertion AUC"), "mean"] == pytest.approx(0.45)
    html = scores_table(res)
    assert f"{a.mean():.3f}" in html and f"[{lo:.3f}, {hi:.3f}]" in html


def test_curve_summary_bands_by_hand():
    s = curve_summary(_result())
    r = s[(s.method == "g") & (s.metric == "region_perturbation_morf") & (s.stage == 1)].iloc[0]
    v = np.array([0.5, 0.6])
    lo, hi = stats.t.interval(0.95, 1, loc=v.mean(), scale=stats.sem(v))
    assert r["fraction"] == 0.5 and r["mean"] == pytest.approx(0.55)
    assert (r["lo"], r["hi"]) == (pytest.approx(lo), pytest.approx(hi))


def test_section_renders_with_figures_and_escapes():
    res = _result()
    res.table["method"] = res.table["method"].replace("g", "<b>g</b>")
    html = faithfulness_section(res)
    assert html.count("<img") == 2  # region perturbation and insertion, drawn from the result
    assert "&lt;b&gt;g&lt;/b&gt;" in html and "<b>g</b>" not in html
    assert "random order" in html


def test_write_run_and_report_page(tmp_path):
    from saliency_sanity.report import build_report, write_run

    model, x = zoo.make("cnn")
    res = faithfulness_test(model, x, methods=["gradient", "gradient_x_input"],
                            metrics=["deletion", "insertion"], controls=False, progress=False,
                            settings={"deletion": {"pixels_per_step": 0.25},
                                      "insertion": {"pixels_per_step": 0.25}})
    d = write_run(res, tmp_path / "r")
    assert sorted(p.name for p in (d / "figures").iterdir()) == [
        "faithfulness_deletion.png", "faithfulness_insertion.png"]
    loaded = CheckResult.load(d)
    page = build_report(d, result=loaded).read_text()
    assert "deletion AUC" in page and "insertion AUC" in page
    assert 'id="ranking"' in page  # two scores rank the methods: Kendall's tau between them


# --------------------------------------------------------------------------------------------
# the ranking and the experimental gap
# --------------------------------------------------------------------------------------------
def test_every_score_ranks_with_its_direction():
    t = []
    # deletion AUC: a 0.2, b 0.6 (lower is better: a first); insertion AUC: a 0.3, b 0.9
    for method, d_end, i_end in (("a", 0.2, 0.3), ("b", 0.6, 0.9)):
        t += [[method, 0, "0", 0, "deletion_morf", d_end], [method, 1, "1", 0, "deletion_morf",
                                                             d_end]]
        t += [[method, 0, "0", 0, "insertion_morf", i_end], [method, 1, "1", 0,
                                                              "insertion_morf", i_end]]
    res = CheckResult(check="faithfulness", table=pd.DataFrame(
        t, columns=["method", "stage", "layer", "sample", "metric", "value"]))
    views = ranking_views(res)
    assert set(views) == {"deletion AUC", "insertion AUC"}
    ranks, tau = method_ranking(views)
    assert ranks.loc["a", "deletion AUC"] == 1 and ranks.loc["b", "insertion AUC"] == 1
    assert tau.loc["deletion AUC", "insertion AUC"] == pytest.approx(-1.0)


def _ranks_table(order: dict[str, list[str]]) -> pd.DataFrame:
    return pd.DataFrame({c: {m: float(i + 1) for i, m in enumerate(ms)}
                         for c, ms in order.items()})


def test_gap_sentence_names_the_methods_and_checks_from_the_numbers():
    methods_ = ["lrp_epsilon_plus", "gradient", "guided_backprop", "smoothgrad"]
    ranks = _ranks_table({"MPRT": ["gradient", "smoothgrad", "lrp_epsilon_plus",
                                   "guided_backprop"],
                          "eMPRT": ["smoothgrad", "gradient", "guided_backprop",
                                    "lrp_epsilon_plus"],
                          "region perturbation AOPC": ["lrp_epsilon_plus", "guided_backprop",
                                                       "gradient", "smoothgrad"]}).loc[methods_]
    tau = pd.DataFrame(np.eye(3), index=ranks.columns, columns=ranks.columns)
    for a in ranks.columns:
        for b in ranks.columns:
            tau.loc[a, b] = stats.kendalltau(ranks[a], ranks[b]).statistic
    groups = {"MPRT": "randomization", "eMPRT": "randomization",
              "region perturbation AOPC": "faithfulness"}
    s = gap_sentence(ranks, tau, groups)
    t_m = tau.loc["MPRT", "region perturbation AOPC"]
    t_e = tau.loc["eMPRT", "region perturbation AOPC"]
    assert s.startswith("The randomization checks and the faithfulness scores disagree")
    lo, hi = min(t_m, t_e), max(t_m, t_e)
    assert f"{lo:.2f}" in s and f"{hi:.2f}" in s and "2 of 2 pairs below 0.5" in s
    # mean randomization rank: gradient 1.5, smoothgrad 1.5 -> gradient (first in the table
    # order is lrp..., so idxmin picks gradient); faithfulness first: lrp_epsilon_plus
    assert "The randomization checks rank gradient first, the faithfulness scores " \
           "lrp_epsilon_plus" in s
    # lrp_epsilon_plus: 4 of 4 by eMPRT, 1 of 4 by AOPC (difference 3, the largest)
    assert "lrp_epsilon_plus (4 of 4 by eMPRT, 1 of 4 by region perturbation AOPC)" in s
    assert s.index("lrp_epsilon_plus (4") < s.index("smoothgrad (")


def test_gap_sentence_when_the_groups_agree_or_one_is_missing():
    ranks = _ranks_table({"MPRT": ["a", "b", "c", "d"], "ROAD gap": ["a", "b", "c", "d"]})
    tau = pd.DataFrame(1.0, index=ranks.columns, columns=ranks.columns)
    s = gap_sentence(ranks, tau, {"MPRT": "randomization", "ROAD gap": "faithfulness"})
    assert "faithfulness scores agree" in s and "0 of 1 pairs" in s and "Both rank a first" in s
    assert "Ranks differ most" not in s
    assert gap_sentence(ranks, tau, {"MPRT": "randomization"}) == ""


def test_critique_extra_joins_the_ranking_and_the_report(tmp_path):
    from saliency_sanity.checks import model_randomization_test
    from saliency_sanity.critiques import CritiqueOptions, run_critiques
    from saliency_sanity.report import build_report, write_run

    model, x = zoo.make("cnn")
    x = torch.cat([x, x.flip(-1)])
    names = ["gradient", "gradient_x_input", "guided_backprop", "deconvnet"]
    d = tmp_path / "run"
    res = model_randomization_test(model, x, methods=names, scores=["spearman_abs"],
                                   controls=False, progress=False, run_dir=d)
    write_run(res, d, figures=False, report=False)
    opts = CritiqueOptions(emprt=True, emprt_bins=10, faithfulness=True,
                           faithfulness_metrics=["region_perturbation"],
                           faithfulness_settings={"region_perturbation": {"region": 4}})
    out = run_critiques(res, d, opts, model=model, x=x, methods=names, scores=["spearman_abs"],
                        controls=False, progress=False, log=lambda s: None)
    assert out.failed == {} and {"faithfulness", "ranking"} <= set(out.written)
    saved = CheckResult.load(d / "faithfulness")
    assert (d / "faithfulness" / "figures" / "faithfulness_region_perturbation.png").is_file()
    ranking = pd.read_csv(d / "ranking.csv")
    checks = set(ranking["check"])
    assert {"MPRT", "eMPRT", "region perturbation AOPC", "region perturbation ABPC",
            "region perturbation LeRF AOPC"} <= checks
    # the saved ranks are those of method_ranking on the same inputs, computed independently
    views = expand_views({"MPRT": res, "faithfulness": saved})
    ranks, _ = method_ranking(views)
    for check in ("MPRT", "region perturbation AOPC"):
        got = ranking[ranking.check == check].set_index("method")["rank"]
        assert got.to_dict() == ranks[check].dropna().to_dict()
    settings = json.loads((d / "ranking.json").read_text())
    assert settings["groups"]["region perturbation AOPC"] == "faithfulness"
    assert settings["groups"]["MPRT"] == "randomization"
    page = build_report(d, result=res).read_text()
    assert 'id="faithfulness"' in page and "experimental gap" in page
    assert "The randomization checks and the faithfulness scores" in page


def test_compute_ranking_groups_need_no_similarity_check():
    res = _result()
    res.table = pd.concat([res.table, res.table[res.table.method == "g"].assign(
        method="h", value=lambda t: t["value"] * 0.5)])
    long_ranks, _, settings = compute_ranking(expand_views({"faithfulness": res}))
    assert set(settings["groups"].values()) == {"faithfulness"}
    assert math.isnan(float("nan")) and set(long_ranks["method"]) == {"g", "h"}
    assert faithfulness_scores(res)["method"].nunique() == 3


# --------------------------------------------------------------------------------------------
# the imputation's nested dissection solve
# --------------------------------------------------------------------------------------------
@pytest.mark.quantus
@pytest.mark.parametrize("shape, fraction", [((3, 13, 31), 0.95), ((1, 28, 28), 0.3),
                                             ((3, 40, 40), 0.9)])
def test_dissection_solve_matches_quantus_image_by_image(shape, fraction):
    """Float64 images, several per batch, a non-square grid: the batched solve (unknowns in
    nested dissection order, LU without pivoting) equals Quantus' per-image SciPy solve."""
    from quantus.functions.perturb_func import noisy_linear_imputation as q_impute

    from saliency_sanity.faithfulness.imputation import linear_imputation

    c, h, w = shape
    g = torch.Generator().manual_seed(3)
    x = torch.rand(3, c, h, w, generator=g, dtype=torch.float64)
    maps = torch.nn.functional.avg_pool2d(torch.rand(3, 1, h, w, generator=g), 5, 1, 2)
    order = torch.argsort(-maps.flatten(1), dim=1)
    n = int(h * w * fraction)
    removed = torch.zeros(3, h * w, dtype=torch.bool).scatter_(1, order[:, :n], True)
    ours = linear_imputation(x, removed.view(3, h, w)).numpy()
    ref = np.stack([q_impute(arr=x[i].numpy(), indices=order[i, :n].numpy(), noise=0.0)
                    for i in range(3)])
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-12)


def test_dissection_order_separates_the_halves():
    from saliency_sanity.faithfulness.imputation import dissection_order

    key = dissection_order(9, 6).reshape(9, 6)
    assert sorted(key.flatten().tolist()) == list(range(54))
    # the middle row (4) comes after every pixel above and below it
    assert key[4].min() == 48 and key[:4].max() < key[5:].min()


def test_model_randomization_cli_with_faithfulness(tmp_path, npz, capsys):
    out = tmp_path / "mprt"
    argv = ["model-randomization", "--model", "test_faithfulness_face:cnn_factory", "--data",
            str(npz), "--methods", "gradient,gradient_x_input,guided_backprop,deconvnet",
            "--scores", "spearman_abs", "--controls", "none", "--batch-size", "4",
            "--no-progress", "--faithfulness", "--faithfulness-metrics", "road", "--out",
            str(out)]
    assert main(argv) == 0
    assert "faithfulness/results.csv" in capsys.readouterr().out
    f = CheckResult.load(out / "faithfulness")
    assert f.check == "faithfulness" and set(f.table["metric"]) == {"road_morf", "road_lerf"}
    ranking = pd.read_csv(out / "ranking.csv")
    assert set(ranking["check"]) == {"MPRT", "ROAD gap"}
    page = (out / "report.html").read_text()
    assert "The randomization checks and the faithfulness scores" in page


def test_model_randomization_cli_bad_faithfulness_metrics(tmp_path, npz, capsys):
    out = tmp_path / "bad"
    rc = main(["model-randomization", "--model", "test_faithfulness_face:cnn_factory", "--data",
               str(npz), "--faithfulness", "--faithfulness-metrics", "aopc", "--out", str(out),
               "--no-progress"])
    assert rc == 2
    assert "--faithfulness-metrics: unknown faithfulness metric(s) 'aopc'" in \
        capsys.readouterr().err
    assert not out.exists()


def test_report_command_rebuilds_a_faithfulness_page(tmp_path, capsys):
    from saliency_sanity.report import write_run

    write_run(_result(), tmp_path / "r", figures=False, report=False)
    assert main(["report", str(tmp_path / "r")]) == 0
    printed = capsys.readouterr().out
    assert "region perturbation AOPC" in printed and "verdict" not in printed
    page = (tmp_path / "r" / "report.html").read_text()
    assert 'id="faithfulness"' in page and page.count("<img") == 2


def test_gap_sentence_leaves_out_pairs_with_too_few_methods():
    ranks = _ranks_table({"MPRT": ["a", "b", "c", "d"], "ROAD gap": ["a", "b", "c", "d"]})
    ranks["sMPRT"] = [3.0, 2.0, 1.0, np.nan]  # three methods only: not judged
    cols = list(ranks.columns)
    tau = pd.DataFrame(1.0, index=cols, columns=cols)
    tau.loc["sMPRT", "ROAD gap"] = tau.loc["ROAD gap", "sMPRT"] = -1.0
    n = pd.DataFrame(4, index=cols, columns=cols)
    n.loc["sMPRT", :] = n.loc[:, "sMPRT"] = 3
    groups = {"MPRT": "randomization", "sMPRT": "randomization", "ROAD gap": "faithfulness"}
    s = gap_sentence(ranks, tau, groups, n)
    assert "agree" in s and "sMPRT" not in s and "0 of 1 pairs" in s
    n.loc[:, :] = 3
    assert "share too few methods" in gap_sentence(ranks, tau, groups, n)
