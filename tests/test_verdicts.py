"""Verdicts on hand-built tables with known answers; statistics checked against scipy."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from saliency_sanity.checks import COLUMNS, CheckResult
from saliency_sanity.verdicts import (
    VERDICT_COLUMNS,
    format_summary,
    method_summary,
    rule_text,
    verdicts,
)

SCORES = {
    "spearman_abs": {"range": [-1.0, 1.0], "higher_is_better": True},
    "ssim": {"range": [-1.0, 1.0], "higher_is_better": True},
    "mse": {"range": [0.0, math.inf], "higher_is_better": False},
}


def _rows(method, metric, stage, values):
    return [(method, stage, f"L{stage}", i, metric, float(v)) for i, v in enumerate(values)]


def make_result(per_method, null_per_method=None, n_stages=3, check="model_randomization",
                order="cascading", controls=(), settings=None):
    """per_method: {method: {metric: {stage: values}}}; same for the null."""
    rows, nrows = [], []
    for m, by_metric in per_method.items():
        for metric, by_stage in by_metric.items():
            for k, vals in by_stage.items():
                rows += _rows(m, metric, k, vals)
    for m, by_metric in (null_per_method or {}).items():
        for metric, by_stage in by_metric.items():
            for k, vals in by_stage.items():
                nrows += _rows(m, metric, k, vals)
    st = {"order": order, "scores": SCORES, "controls": list(controls), **(settings or {})}
    return CheckResult(check=check, table=pd.DataFrame(rows, columns=COLUMNS),
                       null=pd.DataFrame(nrows, columns=COLUMNS) if null_per_method else None,
                       settings=st)


RNG = np.random.default_rng(0)
N = 12
NOISE = RNG.normal(0, 0.03, size=(6, N))


def test_null_like_method_passes_and_statistics_match_scipy():
    s_last = 0.05 + NOISE[0]
    null_last = 0.05 + NOISE[1]
    r = make_result({"g": {"spearman_abs": {1: 0.6 + NOISE[2], 3: s_last}}},
                    {"g": {"spearman_abs": {3: null_last}}})
    v = verdicts(r).iloc[0]
    assert v["verdict"] == "pass", v["reason"]
    assert list(verdicts(r).columns) == VERDICT_COLUMNS
    d = s_last - null_last
    t = stats.ttest_rel(s_last, null_last)
    assert v["p_value"] == pytest.approx(t.pvalue, rel=1e-9)
    lo, hi = stats.t.interval(0.95, N - 1, loc=d.mean(), scale=stats.sem(d))
    assert (v["diff_lo"], v["diff_hi"]) == pytest.approx((lo, hi), rel=1e-9)
    e = 1.0 - s_last
    lo, hi = stats.t.interval(0.95, N - 1, loc=e.mean(), scale=stats.sem(e))
    assert (v["change_lo"], v["change_hi"]) == pytest.approx((lo, hi), rel=1e-9)
    assert v["delta"] == pytest.approx(0.1 * (1.0 - null_last.mean()))
    assert v["first_stage_mean"] == pytest.approx((0.6 + NOISE[2]).mean())
    assert v["n"] == N and v["stage"] == 3


def test_clearly_similar_method_fails():
    r = make_result({"gbp": {"spearman_abs": {1: 0.95 + NOISE[0], 3: 0.8 + NOISE[1]}}},
                    {"gbp": {"spearman_abs": {3: 0.1 + NOISE[2]}}})
    v = verdicts(r).iloc[0]
    assert v["verdict"] == "fail"
    assert "more similar than the null" in v["reason"]
    assert v["diff_lo"] > v["delta"]


def test_unchanged_map_fails_even_when_equal_to_null():
    ones = np.ones(N)
    r = make_result({"edge_sobel": {"ssim": {1: ones, 3: ones}}},
                    {"edge_sobel": {"ssim": {3: ones}}}, controls=["edge_sobel"])
    v = verdicts(r).iloc[0]
    assert v["verdict"] == "fail" and "did not change" in v["reason"]
    assert bool(v["control"]) is True
    assert math.isnan(v["p_value"])  # constant differences: no t-test


def test_random_control_passes_trivially():
    r = make_result({"random_gaussian": {"ssim": {1: NOISE[0] * 0.1, 3: NOISE[1] * 0.1}}},
                    {"random_gaussian": {"ssim": {3: NOISE[2] * 0.1}}},
                    controls=["random_gaussian"])
    assert verdicts(r).iloc[0]["verdict"] == "pass"


def test_too_few_samples_is_inconclusive():
    r = make_result({"g": {"spearman_abs": {1: [0.5, 0.6, 0.5], 3: [0.0, 0.01, 0.02]}}},
                    {"g": {"spearman_abs": {3: [0.0, 0.0, 0.01]}}})
    v = verdicts(r).iloc[0]
    assert v["verdict"] == "inconclusive" and "only 3 paired" in v["reason"]


def test_nan_samples_are_dropped_before_counting():
    vals = np.r_[0.05 + NOISE[0, :4], [np.nan] * (N - 4)]
    r = make_result({"g": {"spearman_abs": {1: 0.6 + NOISE[1], 3: vals}}},
                    {"g": {"spearman_abs": {3: 0.05 + NOISE[2]}}})
    v = verdicts(r).iloc[0]
    assert v["n"] == 4 and v["verdict"] == "inconclusive"


def test_ambiguous_interval_is_inconclusive():
    # difference to the null ~ the margin with a wide interval
    s = 0.1 + RNG.normal(0, 0.3, N)
    r = make_result({"g": {"spearman_abs": {1: 0.6 + NOISE[0], 3: s}}},
                    {"g": {"spearman_abs": {3: np.zeros(N)}}})
    v = verdicts(r).iloc[0]
    assert v["diff_lo"] <= v["delta"] < v["diff_hi"]
    assert v["verdict"] == "inconclusive"


def test_lower_is_better_scores_are_oriented():
    # mse: the method's distance equals the null's distance -> pass; far smaller -> fail
    null = 2.0 + NOISE[0]
    r = make_result({"a": {"mse": {1: 1.0 + NOISE[1], 3: 2.0 + NOISE[2]}},
                     "b": {"mse": {1: 0.01 + NOISE[3] ** 2, 3: 0.02 + NOISE[4] ** 2}}},
                    {"a": {"mse": {3: null}}, "b": {"mse": {3: null}}})
    v = verdicts(r).set_index("method")
    assert v.loc["a", "verdict"] == "pass"
    assert v.loc["b", "verdict"] == "fail"
    assert v.loc["a", "delta"] == pytest.approx(0.1 * null.mean())


def test_no_null_is_inconclusive():
    r = make_result({"g": {"spearman_abs": {1: 0.6 + NOISE[0], 3: NOISE[1]}}})
    v = verdicts(r).iloc[0]
    assert v["verdict"] == "inconclusive" and "no null" in v["reason"]


def test_independent_order_judges_every_block():
    r = make_result({"g": {"spearman_abs": {1: NOISE[0], 2: 0.9 + NOISE[1]}}},
                    {"g": {"spearman_abs": {1: NOISE[2], 2: NOISE[3]}}}, order="independent")
    v = verdicts(r)
    assert list(v["stage"]) == [1, 2] and list(v["verdict"]) == ["pass", "fail"]
    assert method_summary(v)["verdict"].tolist() == ["fail"]


def test_data_randomization_uses_random_controls_as_null_and_invalid_runs():
    per = {"gradient": {"spearman_abs": {1: 0.02 + NOISE[0]}},
           "ig": {"spearman_abs": {1: 0.9 + NOISE[1]}},
           "random_gaussian": {"spearman_abs": {1: NOISE[2] * 0.1}}}
    r = make_result(per, check="data_randomization", controls=["random_gaussian"],
                    settings={"valid": True})
    v = verdicts(r).set_index("method")
    assert v.loc["gradient", "verdict"] == "pass"
    assert v.loc["ig", "verdict"] == "fail"
    assert v.loc["gradient", "null_mean"] == pytest.approx((NOISE[2] * 0.1).mean())
    bad = make_result(per, check="data_randomization", controls=["random_gaussian"],
                      settings={"valid": False, "invalid_reason": "train acc 0.41 < 0.95"})
    vb = verdicts(bad)
    assert set(vb["verdict"]) == {"invalid"}
    assert "train acc 0.41" in vb.iloc[0]["reason"]
    assert set(method_summary(vb)["verdict"]) == {"invalid"}


def test_method_summary_rules():
    v = pd.DataFrame({
        "method": ["a", "a", "a", "b", "b", "c", "c"],
        "control": [False] * 7,
        "metric": ["spearman_abs", "ssim", "hog", "spearman_abs", "ssim", "spearman_abs", "ssim"],
        "verdict": ["pass", "pass", "fail", "pass", "inconclusive", "fail", "inconclusive"],
    })
    s = method_summary(v).set_index("method")["verdict"].to_dict()
    assert s == {"a": "pass", "b": "inconclusive", "c": "fail"}  # hog is not a main score
    only_hog = v[v["metric"] == "hog"]
    assert method_summary(only_hog)["verdict"].tolist() == ["fail"]


def test_margin_changes_the_verdict():
    r = make_result({"g": {"spearman_abs": {1: 0.7 + NOISE[0], 3: 0.15 + NOISE[1] * 0.1}}},
                    {"g": {"spearman_abs": {3: np.zeros(N)}}})
    assert verdicts(r)["verdict"].item() == "fail"
    assert verdicts(r, margin=0.25)["verdict"].item() == "pass"


def test_text_outputs():
    assert "delta = 0.1 x (P - chance)" in rule_text()
    assert "delta = 0.2 x" in rule_text(margin=0.2)
    r = make_result({"g": {"spearman_abs": {1: 0.6 + NOISE[0], 3: NOISE[1]}}},
                    {"g": {"spearman_abs": {3: NOISE[2]}}})
    text = format_summary(r)
    assert "g" in text and "PASS" in text
    with pytest.raises(ValueError, match="ci"):
        verdicts(r, ci=1.5)


def test_margin_is_scaled_by_the_random_controls():
    """A method whose maps are near-identical for every model (MNIST Gradient x Input) is
    null-like but unchanged: the margin comes from the random controls, not from its own null."""
    hi = 0.99 + NOISE[0] * 0.01
    r = make_result({"gxi": {"spearman_abs": {1: hi, 3: hi}},
                     "random_gaussian": {"spearman_abs": {1: NOISE[1], 3: NOISE[2]}}},
                    {"gxi": {"spearman_abs": {3: hi}},
                     "random_gaussian": {"spearman_abs": {3: NOISE[3]}}},
                    controls=["random_gaussian"])
    v = verdicts(r).set_index("method")
    assert v.loc["gxi", "chance"] == pytest.approx(NOISE[2].mean())
    assert v.loc["gxi", "delta"] == pytest.approx(0.1 * (1 - NOISE[2].mean()))
    assert v.loc["gxi", "verdict"] == "fail" and "did not change" in v.loc["gxi", "reason"]
    assert v.loc["random_gaussian", "verdict"] == "pass"
