"""The data randomization verdict on hand-built tables with known answers; statistics checked
against scipy."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from saliency_sanity.checks import COLUMNS, CheckResult
from saliency_sanity.verdicts import (
    DATA_COLUMNS,
    VERDICT_COLUMNS,
    data_rule_text,
    data_verdicts,
    format_verdict,
    verdict,
)

SCORES = {
    "spearman_abs": {"range": [-1.0, 1.0], "higher_is_better": True},
    "ssim": {"range": [-1.0, 1.0], "higher_is_better": True},
    "mse": {"range": [0.0, math.inf], "higher_is_better": False},
}
RNG = np.random.default_rng(0)
N = 12
NOISE = RNG.normal(0, 0.03, size=(6, N))


def make_result(per_method, controls=("random_gaussian",), valid=True, reason=None):
    """per_method: {method: {metric: values}} at the random-label model (stage 1)."""
    rows = [(m, 1, "random_labels", i, metric, float(v))
            for m, by_metric in per_method.items() for metric, vals in by_metric.items()
            for i, v in enumerate(vals)]
    settings = {"scores": SCORES, "controls": list(controls), "valid": valid}
    if reason:
        settings["invalid_reason"] = reason
    return CheckResult(check="data_randomization", table=pd.DataFrame(rows, columns=COLUMNS),
                       settings=settings)


def test_noise_like_method_passes_and_statistics_match_scipy():
    s, noise = 0.05 + NOISE[0], 0.05 + NOISE[1]
    r = make_result({"g": {"spearman_abs": s}, "random_gaussian": {"spearman_abs": noise}})
    v = data_verdicts(r).set_index("method").loc["g"]
    assert list(data_verdicts(r).columns) == DATA_COLUMNS
    assert v["verdict"] == "pass", v["reason"]
    d = s - noise
    assert v["p_value"] == pytest.approx(stats.ttest_rel(s, noise).pvalue, rel=1e-9)
    lo, hi = stats.t.interval(0.95, N - 1, loc=d.mean(), scale=stats.sem(d))
    assert (v["diff_lo"], v["diff_hi"]) == pytest.approx((lo, hi), rel=1e-9)
    e = 1.0 - s
    lo, hi = stats.t.interval(0.95, N - 1, loc=e.mean(), scale=stats.sem(e))
    assert (v["change_lo"], v["change_hi"]) == pytest.approx((lo, hi), rel=1e-9)
    assert v["delta"] == pytest.approx(0.1 * (1.0 - noise.mean()))
    assert v["null_mean"] == pytest.approx(noise.mean()) and v["n"] == N


def test_label_insensitive_method_is_flagged_and_the_one_verdict_says_so():
    r = make_result({"ig": {"spearman_abs": 0.8 + NOISE[0], "ssim": 0.7 + NOISE[1]},
                     "gradient": {"spearman_abs": 0.02 + NOISE[2], "ssim": 0.01 + NOISE[3]},
                     "random_gaussian": {"spearman_abs": NOISE[4], "ssim": NOISE[5]}})
    v = data_verdicts(r).set_index(["method", "metric"])
    assert v.loc[("ig", "spearman_abs"), "verdict"] == "flagged"
    assert "more similar than the null" in v.loc[("ig", "spearman_abs"), "reason"]
    one = verdict(r).set_index("method")
    assert list(verdict(r).columns) == VERDICT_COLUMNS
    assert one.loc["ig", "verdict"] == "flagged" and one.loc["ig", "ignores"] == "the labels"
    assert one.loc["gradient", "verdict"] == "pass" and one.loc["gradient", "ignores"] == ""
    assert one.loc["random_gaussian", "verdict"] == "pass"  # noise vs itself: trivially
    assert one.loc["ig", "stages"] == "spearman_abs: flagged; ssim: flagged"
    text = format_verdict(r)
    assert "do the maps depend on the labels" in text
    words = [line.split()[1] for line in text.splitlines()[1:-1]]
    assert words == ["FLAGGED", "PASS", "(control)"]
    assert text.splitlines()[-1].startswith("rule: Similarities between the maps")


def test_unchanged_maps_are_flagged():
    ones = np.ones(N)
    r = make_result({"edge_sobel": {"ssim": ones}, "random_gaussian": {"ssim": NOISE[0]}},
                    controls=("edge_sobel", "random_gaussian"))
    v = data_verdicts(r).set_index("method").loc["edge_sobel"]
    assert v["verdict"] == "flagged" and "did not change" in v["reason"]
    assert bool(v["control"]) is True


def test_too_few_samples_and_no_control_are_inconclusive():
    r = make_result({"g": {"spearman_abs": [0.0, 0.01, 0.02]},
                     "random_gaussian": {"spearman_abs": [0.0, 0.0, 0.01]}})
    v = data_verdicts(r).set_index("method").loc["g"]
    assert v["verdict"] == "inconclusive" and "only 3 paired" in v["reason"]
    assert verdict(r).set_index("method").loc["g", "verdict"] == "inconclusive"
    alone = make_result({"g": {"spearman_abs": NOISE[0]}}, controls=())
    assert "no random-map control" in data_verdicts(alone)["reason"].item()


def test_lower_is_better_scores_are_oriented():
    noise = 2.0 + NOISE[0]
    r = make_result({"a": {"mse": 2.0 + NOISE[1]}, "b": {"mse": 0.02 + NOISE[2] ** 2},
                     "random_gaussian": {"mse": noise}})
    v = data_verdicts(r).set_index("method")
    assert v.loc["a", "verdict"] == "pass" and v.loc["b", "verdict"] == "flagged"
    assert v.loc["a", "delta"] == pytest.approx(0.1 * noise.mean())


def test_margin_changes_the_verdict_and_the_text_states_it():
    r = make_result({"g": {"spearman_abs": 0.15 + NOISE[0] * 0.1},
                     "random_gaussian": {"spearman_abs": np.zeros(N)}})
    assert data_verdicts(r).set_index("method").loc["g", "verdict"] == "flagged"
    assert data_verdicts(r, margin=0.25).set_index("method").loc["g", "verdict"] == "pass"
    assert verdict(r, margin=0.25).set_index("method").loc["g", "verdict"] == "pass"
    assert "delta = 0.1 x (P - chance)" in data_rule_text()
    assert "delta = 0.2 x" in format_verdict(r, margin=0.2)
    with pytest.raises(ValueError, match="ci"):
        data_verdicts(r, ci=1.5)


def test_invalid_run_is_invalid_everywhere():
    per = {"gradient": {"spearman_abs": 0.02 + NOISE[0]},
           "random_gaussian": {"spearman_abs": NOISE[1]}}
    bad = make_result(per, valid=False, reason="train acc 0.41 < 0.95")
    assert set(data_verdicts(bad)["verdict"]) == {"invalid"}
    one = verdict(bad)
    assert set(one["verdict"]) == {"invalid"} and "train acc 0.41" in one["headline"].iloc[0]


def test_main_scores_combine_and_other_scores_do_not_count():
    r = make_result({"a": {"spearman_abs": 0.02 + NOISE[0], "ssim": 0.01 + NOISE[1],
                           "mse": 0.0 * NOISE[2]},
                     "random_gaussian": {"spearman_abs": NOISE[3], "ssim": NOISE[4],
                                         "mse": 2.0 + NOISE[5]}})
    v = data_verdicts(r).set_index(["method", "metric"])
    assert v.loc[("a", "mse"), "verdict"] == "flagged"  # mse alone would flag it
    assert verdict(r).set_index("method").loc["a", "verdict"] == "pass"
    assert verdict(r, main=("mse",)).set_index("method").loc["a", "verdict"] == "flagged"


def test_data_verdicts_refuse_a_model_randomization_result():
    r = CheckResult(check="model_randomization", table=pd.DataFrame(columns=COLUMNS))
    with pytest.raises(ValueError, match="data randomization"):
        data_verdicts(r)
