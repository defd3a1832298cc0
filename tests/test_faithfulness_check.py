"""The faithfulness check on the engine: its rows are the functional core's curves (which are
tested against Quantus), one unit per batch, resumable, the model untouched, controls beside."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
import zoo

from saliency_sanity import faithfulness as F
from saliency_sanity import methods
from saliency_sanity.checks import faithfulness_scores, faithfulness_test
from saliency_sanity.engine import derive_seed

pytestmark = pytest.mark.usefixtures("one_thread")
KW = {"progress": False, "batch_size": 2, "controls": ["random_gaussian"]}


def test_rows_are_the_core_curves_per_batch(global_rng_guard):
    model, x = zoo.make("cnn")
    snap = zoo.snapshot(model)
    r = faithfulness_test(model, x, methods=["gradient"], metrics=["region_perturbation", "road"],
                          settings={"region_perturbation": {"region": 4, "steps": 6}}, **KW)
    zoo.assert_unchanged(model, snap)
    t = r.table
    for b, sl in enumerate([slice(0, 2), slice(2, 4)]):
        xb = x[sl]
        tb = methods.predicted_targets(model, xb)
        maps = methods.get("gradient")(model, xb, tb)
        seed = derive_seed(0, "faithfulness", b)
        want = F.region_perturbation(model, xb, maps, tb, region=4, steps=6, order="lerf",
                                     seed=seed, replacement="uniform")
        got = t[(t.method == "gradient") & (t.metric == "region_perturbation_lerf")
                & t["sample"].isin(range(sl.start, sl.stop))]
        got = got.pivot(index="sample", columns="stage", values="value").to_numpy()
        assert torch.equal(torch.from_numpy(got.copy()), want.double())
        road = F.road(model, xb, maps, tb, order="morf", seed=seed)
        got = t[(t.method == "gradient") & (t.metric == "road_morf")
                & t["sample"].isin(range(sl.start, sl.stop))]
        got = got.pivot(index="sample", columns="stage", values="value").to_numpy()
        assert torch.equal(torch.from_numpy(got.copy()), road.double())
    assert set(t.method) == {"gradient", "random_gaussian", "(random order)"}
    rp = t[t.metric == "region_perturbation_morf"]
    hw = x.shape[2] * x.shape[3]
    assert rp.groupby("stage")["layer"].first().tolist() == [f"{k * 16 / hw:.4f}"
                                                             for k in range(7)]


def test_resumes_and_reproduces(tmp_path):
    model, x = zoo.make("cnn")
    kw = dict(KW, methods=["gradient"], metrics=["pixel_flipping"],
              settings={"pixel_flipping": {"pixels_per_step": 0.1}})
    a = faithfulness_test(model, x, run_dir=tmp_path / "r", **kw)
    b = faithfulness_test(model, x, **kw)
    pd.testing.assert_frame_equal(a.table, b.table, check_exact=True)
    c = faithfulness_test(model, x, run_dir=tmp_path / "r", **kw)  # finished: loaded
    pd.testing.assert_frame_equal(a.table.reset_index(drop=True), c.table, check_dtype=False)


def test_scores_from_curves_by_hand():
    t = pd.DataFrame({"method": "g", "stage": [0, 1, 2, 0, 1, 2, 0, 1], "layer": "",
                      "sample": 0,
                      "metric": ["pixel_flipping_morf"] * 3 + ["pixel_flipping_lerf"] * 3
                      + ["insertion_morf"] * 2,
                      "value": [0.9, 0.3, 0.0, 0.9, 0.9, 0.6, 0.1, 0.7]})
    from saliency_sanity.checks import CheckResult

    s = faithfulness_scores(CheckResult(check="faithfulness", table=t))
    s = s.set_index(["metric", "score"])["value"]
    assert s[("pixel_flipping", "aopc")] == pytest.approx((0 + 0.6 + 0.9) / 3)
    assert s[("pixel_flipping", "aopc_lerf")] == pytest.approx((0 + 0 + 0.3) / 3)
    assert s[("pixel_flipping", "abpc")] == pytest.approx(0.4)
    assert s[("insertion", "auc")] == pytest.approx(0.4)


def test_bad_input():
    model, x = zoo.make("cnn")
    with pytest.raises(ValueError, match="unknown faithfulness metric"):
        faithfulness_test(model, x, metrics=["pixelflip"], **KW)
    with pytest.raises(ValueError, match="images"):
        faithfulness_test(*zoo.make("mlp"), metrics=["road"], **KW)
    with pytest.raises(ValueError, match="not asked for"):
        faithfulness_test(model, x, metrics=["road"], settings={"insertion": {}}, **KW)


def test_ranking_reads_faithfulness_beside_randomization():
    """Binder et al.'s experimental gap needs both rankings: method_ranking takes a
    faithfulness result (AOPC of region perturbation, higher is better; controls and the
    random order left out) beside a randomization check, with Kendall's tau between them."""
    from scipy import stats

    from saliency_sanity.checks import method_ranking, model_randomization_test

    model, x = zoo.make("cnn")
    names = ["gradient", "gradient_x_input", "guided_backprop"]
    f = faithfulness_test(model, x, methods=names, metrics=["region_perturbation"],
                          settings={"region_perturbation": {"region": 4, "steps": 8}}, **KW)
    m = model_randomization_test(model, x, methods=names, scores=["spearman_abs"], **KW)
    ranks, tau = method_ranking({"MPRT": m, "faithfulness": f})
    assert sorted(ranks.index) == sorted(names)
    aopc = faithfulness_scores(f)
    aopc = aopc[(aopc.metric == "region_perturbation") & (aopc.score == "aopc")]
    means = aopc.groupby("method")["value"].mean()[names]
    assert ranks.loc[means.idxmax(), "faithfulness"] == 1.0  # the highest AOPC ranks first
    want = stats.kendalltau(ranks["MPRT"], ranks["faithfulness"]).statistic
    assert tau.loc["MPRT", "faithfulness"] == pytest.approx(want)
