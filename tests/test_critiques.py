"""sMPRT, eMPRT, the random logit test, activation scales and the method ranking (issue 7).

Every number is checked against an independent reference: hand-derived values on tiny cases,
numpy/scipy recomputations from maps the methods give directly, or the plain MPRT.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import zoo
from scipy import stats
from torch import nn

from saliency_sanity import methods, model_randomization_test, randomized_models
from saliency_sanity.checks import (
    COLUMNS,
    activation_scale_analysis,
    efficient_model_randomization_test,
    method_ranking,
    random_logit_test,
    smooth_model_randomization_test,
)
from saliency_sanity.checks.emprt import entropy_ratio, histogram_entropy
from saliency_sanity.checks.random_logit import other_classes
from saliency_sanity.engine import derive_seed


# --------------------------------------------------------------------------------------- sMPRT
def test_smprt_one_sample_no_noise_equals_mprt(global_rng_guard):
    model, x = zoo.make("cnn")
    snap = zoo.snapshot(model)
    kw = dict(methods=["gradient", "guided_backprop"], controls=["random_gaussian"],
              scores=["spearman_abs", "ssim", "pearson"], order="cascading", seed=2,
              batch_size=3, progress=False)
    plain = model_randomization_test(model, x, **kw)
    smooth = smooth_model_randomization_test(model, x, samples=1, noise=0.0, normalize="none",
                                             **kw)
    zoo.assert_unchanged(model, snap)
    assert smooth.check == "smooth_model_randomization"
    assert list(smooth.table.columns) == COLUMNS
    a = plain.table.sort_values(["method", "metric", "stage", "sample"]).reset_index(drop=True)
    b = smooth.table.sort_values(["method", "metric", "stage", "sample"]).reset_index(drop=True)
    # the plain MPRT may add rows (e.g. a null reference); compare the rows both have
    a = a.merge(b[["method", "stage", "layer", "sample", "metric"]], how="inner")
    assert len(a) == len(b)
    pd.testing.assert_frame_equal(a, b)
    s = smooth.settings
    assert (s["samples"], s["noise"], s["normalize"], s["order"]) == (1, 0.0, "none", "cascading")


def test_smprt_rows_recomputed_from_averaged_maps(global_rng_guard):
    """One sMPRT row = Pearson (numpy) of the noise-averaged gradients of two stages."""
    model, x = zoo.make("cnn")
    res = smooth_model_randomization_test(
        model, x, methods=["gradient"], controls=False, scores=["pearson"], samples=3, noise=0.2,
        order="bottom_up", seed=5, batch_size=4, target_mode="fixed", progress=False)
    stages = list(randomized_models(model, order="bottom_up", init="paper", seed=5,
                                    example_input=x))
    noise = methods.gaussian_noise(x, 3, 0.2, derive_seed(5, "gradient", "batch", 0))
    grad = methods.get("gradient")
    t = methods.predicted_targets(model, x)

    def smooth_map(m):
        return torch.stack([grad(m, x + noise[i], t) for i in range(3)]).mean(0)

    ref = smooth_map(stages[0].model).sum(1).reshape(4, -1).double().numpy()
    for k in (1, len(stages) - 1):
        got = smooth_map(stages[k].model).sum(1).reshape(4, -1).double().numpy()
        want = [np.corrcoef(ref[i], got[i])[0, 1] for i in range(4)]
        rows = res.table[res.table["stage"] == k].sort_values("sample")["value"].to_numpy()
        np.testing.assert_allclose(rows, want, rtol=1e-5, atol=1e-6)


def test_smprt_second_moment_normalization_matters_for_mse():
    model, x = zoo.make("mlp")
    kw = dict(methods=["gradient"], controls=False, scores=["mse"], samples=2, progress=False)
    raw = smooth_model_randomization_test(model, x, normalize="none", **kw)
    sm = smooth_model_randomization_test(model, x, normalize="second_moment", **kw)
    # the mse score itself second-moment normalizes: normalizing twice changes nothing
    np.testing.assert_allclose(raw.table["value"], sm.table["value"], rtol=1e-6)
    assert sm.settings["scores"]["mse"]["normalize"] == "second_moment"
    with pytest.raises(ValueError, match="samples"):
        smooth_model_randomization_test(model, x, samples=0, **{k: v for k, v in kw.items()
                                                                 if k != "samples"})


# --------------------------------------------------------------------------------------- eMPRT
def test_histogram_entropy_hand_values_and_scipy():
    m = torch.tensor([[0.0, 1.0, 2.0, 3.0], [0.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0]])
    h = histogram_entropy(m, bins=2).tolist()
    p = np.array([0.75, 0.25])
    assert h == pytest.approx([math.log(2), float(-(p * np.log(p)).sum()), 0.0], abs=1e-12)
    assert histogram_entropy(m[:1], bins=4).item() == pytest.approx(math.log(4), abs=1e-12)
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(3, 2, 9, 7, generator=g)
    for bins in (5, 100):
        ours = histogram_entropy(maps, bins).numpy()
        ref = [stats.entropy(np.histogram(maps[i].sum(0).numpy(), bins=bins)[0])
               for i in range(3)]
        np.testing.assert_allclose(ours, ref, rtol=1e-12)
    ours = histogram_entropy(maps, 10, absolute=True).numpy()
    ref = [stats.entropy(np.histogram(np.abs(maps[i].sum(0).numpy()), bins=10)[0])
           for i in range(3)]
    np.testing.assert_allclose(ours, ref, rtol=1e-12)
    with pytest.raises(ValueError, match="bins"):
        histogram_entropy(maps, 0)


def test_entropy_ratio_self_zero_and_signs():
    g = torch.Generator().manual_seed(1)
    noisy = torch.randn(2, 1, 8, 8, generator=g)
    const = torch.ones(2, 1, 8, 8)
    h_noisy, h_const = histogram_entropy(noisy), histogram_entropy(const)
    assert entropy_ratio(h_noisy, h_noisy).tolist() == [0.0, 0.0]
    # trained map noisy, randomized map constant: entropy dropped to 0 -> q = -1 (bad)
    assert entropy_ratio(h_noisy, h_const).tolist() == [-1.0, -1.0]
    # trained map constant (H = 0), randomized noisy: q = +inf (entropy rose)
    assert entropy_ratio(h_const, h_noisy).tolist() == [math.inf, math.inf]
    assert math.isnan(entropy_ratio(h_const, h_const)[0].item())
    # hand value: H(e) = ln 2, H(e_rand) = ln 4 -> q = 1
    e = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    e_rand = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    q = entropy_ratio(histogram_entropy(e, 4), histogram_entropy(e_rand, 4))
    assert q.item() == pytest.approx(1.0, abs=1e-12)


def test_emprt_rows_recomputed_with_scipy(global_rng_guard):
    model, x = zoo.make("cnn")
    snap = zoo.snapshot(model)
    res = efficient_model_randomization_test(
        model, x, methods=["gradient"], controls=["edge_sobel"], bins=20, seed=4,
        target_mode="fixed", progress=False)
    zoo.assert_unchanged(model, snap)
    assert list(res.table.columns) == COLUMNS
    n_blocks = len(res.settings["blocks"])
    assert set(res.table["stage"]) == {n_blocks} and set(res.table["layer"]) == {"all"}
    stages = list(randomized_models(model, order="bottom_up", seed=4, example_input=x))
    grad = methods.get("gradient")
    t = methods.predicted_targets(model, x)

    def h(m):
        maps = grad(m, x, t).sum(1).reshape(4, -1).numpy()
        return np.array([stats.entropy(np.histogram(r, bins=20)[0]) for r in maps])

    h0, h1 = h(stages[0].model), h(stages[-1].model)
    tab = res.table[res.table["method"] == "gradient"]
    for metric, want in (("emprt", (h1 - h0) / h0), ("entropy_trained", h0),
                         ("entropy_randomized", h1)):
        got = tab[tab["metric"] == metric].sort_values("sample")["value"].to_numpy()
        np.testing.assert_allclose(got, want, rtol=1e-10)
    # the edge detector ignores the model: its eMPRT is exactly 0
    sobel = res.table[(res.table["method"] == "edge_sobel") & (res.table["metric"] == "emprt")]
    assert (sobel["value"] == 0.0).all()


def test_fully_randomized_model_is_the_last_stage_of_both_orders():
    """eMPRT's plan builds the fully randomized model directly (stages="ends"): the same
    weights as the last stage reached through every intermediate stage, in both orders."""
    from saliency_sanity.randomization import StagePlan, discover_blocks

    model, x = zoo.make("resnet")
    blocks = discover_blocks(model, x)
    for order in ("bottom_up", "cascading"):
        plan = StagePlan(model, blocks, order, seed=3, stages="ends")
        first, last = plan.specs
        ref = list(randomized_models(model, order=order, seed=3, example_input=x))[-1].model
        for (k, a), (_, b) in zip(plan.model(1).state_dict().items(),
                                  ref.state_dict().items(), strict=True):
            assert torch.equal(a, b), k
        assert last.block == "all" and first.index == 0 and last.index == len(blocks)
        assert plan.built == 1  # one build, no intermediate stage
    with pytest.raises(ValueError, match="order"):
        efficient_model_randomization_test(model, x, order="independent", progress=False)


# -------------------------------------------------------------------------------- random logit
def test_other_classes_uniform_over_the_others(global_rng_guard):
    t = torch.tensor([0, 3, 3, 1] * 500)
    o = other_classes(t, 4, seed=0)
    assert not bool((o == t).any())
    assert torch.equal(o, other_classes(t, 4, seed=0))
    assert not torch.equal(o, other_classes(t, 4, seed=1))
    counts = np.bincount(o[t == 3].numpy(), minlength=4)  # 1000 draws among {0, 1, 2}
    assert counts[3] == 0 and stats.chisquare(counts[:3]).pvalue > 1e-3
    with pytest.raises(ValueError, match="2 classes"):
        other_classes(torch.tensor([0]), 1)


def test_random_logit_hand_derived_on_a_linear_model(global_rng_guard):
    """For f(x) = W x + b the gradient of class c is W[c]: the similarity is corr(W[t], W[o])."""
    lin = zoo._seeded(lambda: nn.Linear(5, 3))  # its init must not use the global RNG here
    w = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0], [5.0, 3.0, 4.0, 1.0, 2.0],
                      [-1.0, 0.0, 2.0, 0.0, 1.0]])
    with torch.no_grad():
        lin.weight.copy_(w)
        lin.bias.zero_()
    snap = zoo.snapshot(lin)
    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    res = random_logit_test(lin, x, methods=["gradient"], scores=["pearson", "spearman"],
                            controls=False, seed=7, batch_size=4, progress=False)
    zoo.assert_unchanged(lin, snap)
    t = torch.tensor(res.settings["targets"])
    o = torch.tensor(res.settings["other"])
    assert torch.equal(t, lin(x).argmax(1)) and not bool((t == o).any())
    assert torch.equal(o, other_classes(t, 3, seed=7))
    tab = res.table
    assert set(tab["stage"]) == {1} and set(tab["layer"]) == {"random_logit"}
    for i in range(6):
        a, b = w[t[i]].numpy(), w[o[i]].numpy()
        row = tab[(tab["sample"] == i) & (tab["metric"] == "pearson")]["value"].item()
        assert row == pytest.approx(np.corrcoef(a, b)[0, 1], abs=1e-6)
    # given other classes are used as they are
    fixed = torch.where(t == 0, 1, 0)
    res2 = random_logit_test(lin, x, methods=["gradient"], scores=["pearson"], controls=False,
                             other=fixed, progress=False)
    assert res2.settings["other"] == fixed.tolist()
    with pytest.raises(ValueError, match="different"):
        random_logit_test(lin, x, methods=["gradient"], scores=["pearson"], other=t,
                          progress=False)


def test_random_logit_examples_and_controls():
    model, x = zoo.make("cnn")
    res = random_logit_test(model, x, methods=["gradient"], scores=["spearman_abs"],
                            n_examples=2, progress=False)
    ex = res.examples
    assert ex["maps"]["gradient"][0].shape == (2, 1, 16, 16)
    assert ex["targets"][1].tolist() == res.settings["other"][:2]
    # the edge detector does not depend on the class: similarity exactly 1
    sobel = res.table[res.table["method"] == "edge_sobel"]["value"]
    assert np.allclose(sobel, 1.0)


# ----------------------------------------------------------------------------- activation scales
def test_activation_scales_hand_recomputed(global_rng_guard):
    model, x = zoo.make("cnn")
    snap = zoo.snapshot(model)
    df = activation_scale_analysis(model, x, seed=1, progress=False).table
    zoo.assert_unchanged(model, snap)
    blocks = ["conv1", "conv2", "fc1", "fc2"]
    assert list(df.columns[:4]) == ["stage", "randomized_block", "block", "position"]
    assert len(df) == 4 * 4
    below = df[df["position"] == "below"]
    assert (below["spearman"] == 1.0).all() and (below["scale_ratio"] == 1.0).all()
    assert set(df[df["stage"] == 2]["position"]) == {"below", "randomized"}

    stages = list(randomized_models(model, order="cascading", seed=1, example_input=x))

    def chan(m, name):
        out = {}
        h = dict(m.named_modules())[name].register_forward_hook(
            lambda _m, _i, o: out.setdefault("a", o.detach().abs()))
        with torch.no_grad():
            m(x)
        h.remove()
        a = out["a"]
        return a.mean(dim=[0] + list(range(2, a.dim()))).double().numpy()

    for k in (2, 4):
        for b in blocks:
            want = stats.spearmanr(chan(stages[0].model, b), chan(stages[k].model, b))[0]
            got = df[(df["stage"] == k) & (df["block"] == b)]["spearman"].item()
            assert got == pytest.approx(want, abs=1e-12)
    bu = activation_scale_analysis(model, x, order="bottom_up", progress=False).table
    assert set(bu[bu["stage"] == 1]["position"]) == {"randomized", "above"}


def test_activation_scales_resnet_groups():
    model, x = zoo.make("resnet")
    res = activation_scale_analysis(model, x, group_by="children", progress=False)
    df = res.table
    assert list(dict.fromkeys(df["block"])) == ["stem", "bn", "layer1", "layer2", "fc"]
    assert res.settings["hooked_modules"]["layer1"] == "layer1"
    assert df["spearman_spatial"][df["block"] == "fc"].isna().all()


# ------------------------------------------------------------------------------------- ranking
def _table(values: dict[str, float], metric: str, stage: int = 1) -> pd.DataFrame:
    rows = [[m, stage, "x", s, metric, v + 0.01 * s] for m, v in values.items() for s in (0, 1)]
    return pd.DataFrame(rows, columns=COLUMNS)


def test_method_ranking_hand_values():
    rl = _table({"a": 0.1, "b": 0.5, "c": 0.9}, "spearman_abs")
    dr = _table({"a": 0.9, "b": 0.5, "c": 0.1}, "spearman_abs")
    em = _table({"a": 2.0, "b": 0.5, "c": 1.0}, "emprt", stage=4)
    ms = _table({"a": 0.1, "b": 0.9, "c": 0.5}, "mse")
    ranks, tau = method_ranking({"random_logit": rl, "data_randomization": dr,
                                 "efficient_model_randomization": em, "mse_check": ms},
                                metrics={"mse_check": "mse"})
    assert ranks["random_logit"].tolist() == [1.0, 2.0, 3.0]
    assert ranks["data_randomization"].tolist() == [3.0, 2.0, 1.0]
    assert ranks["efficient_model_randomization"].tolist() == [1.0, 3.0, 2.0]  # higher q better
    ranks_mse, _ = method_ranking({"m": ms}, metric="mse")
    assert ranks_mse["m"].tolist() == [3.0, 1.0, 2.0]  # higher mse = less similar = better
    assert tau.loc["random_logit", "data_randomization"] == pytest.approx(-1.0)
    # (1,2,3) vs (1,3,2): 2 concordant, 1 discordant pair -> tau = 1/3
    assert tau.loc["random_logit", "efficient_model_randomization"] == pytest.approx(1 / 3)
    assert tau.loc["random_logit", "random_logit"] == pytest.approx(1.0)
    assert ranks.attrs["scores"].loc["a", "random_logit"] == pytest.approx(0.105)


def test_method_ranking_from_check_results_excludes_controls():
    model, x = zoo.make("mlp")
    kw = dict(methods=["gradient", "gradient_x_input", "guided_backprop"], progress=False)
    mprt = model_randomization_test(model, x, scores=["spearman_abs"], **kw)
    rl = random_logit_test(model, x, scores=["spearman_abs"], **kw)
    em = efficient_model_randomization_test(model, x, bins=10, **kw)
    ranks, tau = method_ranking({"MPRT": mprt, "random logit": rl, "eMPRT": em})
    assert sorted(ranks.index) == ["gradient", "gradient_x_input", "guided_backprop"]
    last = mprt.table[(mprt.table["stage"] == mprt.table["stage"].max())
                      & mprt.table["method"].isin(ranks.index)]
    means = last.groupby("method")["value"].mean()
    assert ranks["MPRT"].tolist() == means.rank().reindex(ranks.index).tolist()
    with_controls, _ = method_ranking({"MPRT": mprt}, include_controls=True)
    assert "random_gaussian" in with_controls.index
    assert tau.shape == (3, 3)


# ------------------------------------------------------------------------------------- figures
def test_figures(tmp_path):
    from saliency_sanity.plots_critiques import activation_scales_figure, ranking_figure

    model, x = zoo.make("cnn")
    df = activation_scale_analysis(model, x, progress=False).table
    fig = activation_scales_figure(df, path=tmp_path / "scales.png")
    assert (tmp_path / "scales.png").stat().st_size > 0
    ranks = pd.DataFrame({"A": [1.0, 2.0], "B": [2.0, 1.0]}, index=["g", "h"])
    tau = pd.DataFrame([[1.0, -1.0], [-1.0, 1.0]], index=["A", "B"], columns=["A", "B"])
    ranking_figure(ranks, tau, path=tmp_path / "ranking.svg")
    assert (tmp_path / "ranking.svg").read_text().startswith("<?xml")
    import matplotlib.pyplot as plt

    plt.close("all")
    assert fig is not None
