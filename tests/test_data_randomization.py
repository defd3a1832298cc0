"""The data randomization check: rows recomputed by hand, validity, training on permuted labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zoo

from saliency_sanity import data, methods, scores, training
from saliency_sanity.checks import COLUMNS, compare_models, data_randomization_test


def test_compare_models_rows_recomputed_by_hand(global_rng_guard):
    a, x = zoo.make("cnn")
    b, _ = zoo.make("cnn", seed=9)
    snaps = zoo.snapshot(a), zoo.snapshot(b)
    res = compare_models(a, b, x, methods=["gradient", "guided_backprop"], controls=False,
                         scores=["spearman_abs", "ssim"], progress=False)
    zoo.assert_unchanged(a, snaps[0])
    zoo.assert_unchanged(b, snaps[1])
    assert list(res.table.columns) == COLUMNS
    assert set(res.table["stage"]) == {1} and set(res.table["layer"]) == {"random_labels"}
    for label in ("gradient", "guided_backprop"):
        m = methods.get(label)
        ma, mb = m(a, x, "predicted"), m(b, x, "predicted")
        for sname in ("spearman_abs", "ssim"):
            want = scores.get(sname)(ma, mb).double().numpy()
            got = res.table.query("method == @label and metric == @sname").sort_values(
                "sample")["value"].to_numpy()
            np.testing.assert_allclose(got, want, atol=1e-12)


def test_identical_models_score_one_and_fixed_targets():
    a, x = zoo.make("cnn")
    res = compare_models(a, a, x, methods=["gradient"], controls=False, scores=["spearman"],
                         target=torch.tensor([0, 1, 2, 3]), progress=False)
    np.testing.assert_allclose(res.table["value"].to_numpy(), 1.0)
    assert res.stages[1]["unchanged"] is True
    np.testing.assert_array_equal(res.examples["targets"][1], [0, 1, 2, 3])


def test_not_memorized_marks_the_result_invalid():
    a, x = zoo.make("cnn")
    b, _ = zoo.make("cnn", seed=1)
    with pytest.warns(RuntimeWarning, match="INVALID"):
        res = compare_models(a, b, x, methods=["gradient"], controls=False,
                             scores=["spearman"], progress=False,
                             accuracies={"random": {"train_acc": 0.61}})
    assert res.settings["valid"] is False
    assert "61.0%" in res.settings["invalid_reason"]
    ok = compare_models(a, b, x, methods=["gradient"], controls=False, scores=["spearman"],
                        progress=False, accuracies={"random": {"train_acc": 0.97}})
    assert ok.settings["valid"] is True


def test_trains_both_models_and_caches(tmp_path):
    ds = data.load("mnist", n_train=256, n_test=64, seed=0)
    kw = dict(dataset=ds, architecture="mnist_mlp", model_kwargs={"width": 0.1}, n_samples=8,
              true_config=training.TrainConfig.true_labels(epochs=5),
              random_config=training.TrainConfig.random_labels(0, epochs=40),
              methods=["gradient"], scores=["spearman_abs"], controls=False,
              cache_dir=tmp_path, progress=False)
    res = data_randomization_test(**kw)
    acc = res.settings["accuracies"]
    assert acc["random"]["train_acc"] >= 0.95 and res.settings["valid"] is True
    assert acc["random"]["test_acc"] < 0.3  # memorized permuted labels: chance on test
    assert acc["true"]["test_acc"] > acc["random"]["test_acc"]
    again = data_randomization_test(**kw)
    assert again.settings["accuracies"]["random"]["from_cache"] is True
    np.testing.assert_array_equal(again.table["value"].to_numpy(), res.table["value"].to_numpy())


@pytest.mark.slow
def test_paper_trends_on_mnist_cnn(tmp_path):
    """Adebayo et al., data randomization on MNIST: IG and gradient x input keep high absolute
    Spearman (zero background), gradient and Grad-CAM fall, signed Spearman is low for all."""
    res = data_randomization_test(
        "mnist", "mnist_cnn", n_train=2000, n_samples=16, cache_dir=tmp_path, progress=False,
        methods=["gradient", "gradient_x_input", "integrated_gradients", "gradcam",
                 "guided_backprop", "smoothgrad"],
        scores=["spearman_abs", "spearman"], controls=False,
    )
    acc = res.settings["accuracies"]["random"]
    assert acc["train_acc"] >= 0.95 and acc["test_acc"] < 0.2
    means = res.summary().pivot_table(index="method", columns="metric", values="mean")
    assert means.loc["integrated_gradients", "spearman_abs"] > 0.8
    assert means.loc["gradient_x_input", "spearman_abs"] > 0.8
    assert means.loc["gradient", "spearman_abs"] < 0.35
    assert means.loc["gradcam", "spearman_abs"] < 0.35
    # Signed Spearman: low for every method but guided backprop, whose signed maps stay close
    # (0.44-0.47 under every variant measured, the authors' training recipe and init included;
    # two untrained CNNs already reach 0.34-0.45), against 0.0-0.2 read off the paper's figure.
    # docs/training.md records the variants: a deviation from the published result, not hidden.
    signed = means["spearman"].drop("guided_backprop")
    assert (signed < 0.3).all(), signed
