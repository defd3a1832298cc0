"""sMPRT, eMPRT and the random logit test against Quantus 0.6.0 on the same inputs and weights.

Quantus randomizes layers with ``reset_parameters()`` under ``torch.manual_seed``; to compare on
the SAME weights, its layer generator is replaced (monkeypatch) by our stages. Differences that
remain are Quantus' definitions, each explained where it is measured:

- sMPRT: Quantus' last noise draw is zero (so N = 1 is the plain map for any noise level), its
  draws come from NumPy's global RNG and differ between the reference and every layer; ours are
  N noisy draws, the same at every stage. Its ``return_average_correlation`` averages over the
  keys except ``"orig"`` while the trained model's entry is called ``"original"``: the average
  includes the trained model's self-similarity. Its smoothing calls ``quantus.explain`` with
  ``explain_func_kwargs``, ignoring a custom ``explain_func``.
- eMPRT: the same definition (signed channel sum, 100 bins over each map's range, natural log).
- RandomLogit: Quantus' SSIM runs on the FLATTENED maps (1-D windows of 7 along rows) with
  ``data_range`` = the pair's range, after dividing each batch by its max |value|; ours is 2-D.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zoo

from saliency_sanity import methods, metrics, postprocess, randomized_models, scores
from saliency_sanity.checks import (
    efficient_model_randomization_test,
    random_logit_test,
    smooth_model_randomization_test,
)
from saliency_sanity.checks.smprt import NormalizedScore

quantus = pytest.importorskip("quantus", reason="Quantus comparisons need quantus==0.6.0")
pytestmark = pytest.mark.quantus


@pytest.fixture
def setup(monkeypatch):
    from quantus.helpers.model.pytorch_model import PyTorchModel

    model, _ = zoo.make("cnn")
    x = torch.randn(8, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    y = methods.predicted_targets(model, x)
    stages = list(randomized_models(model, order="bottom_up", seed=0, example_input=x))

    def generator(self, order="bottom_up", seed=42):
        for st in stages[1:]:
            yield st.block, st.model

    monkeypatch.setattr(PyTorchModel, "get_random_layer_generator", generator)
    monkeypatch.setattr(PyTorchModel, "random_layer_generator_length",
                        property(lambda self: len(stages) - 1))
    return model, x, y, stages


def _quantus_spearman_abs() -> scores.Score:
    """Quantus' sMPRT similarity: Spearman of |second-moment-normalized| channel-summed maps."""
    return scores.Score("spearman_q", metrics.spearman, "none", (-1.0, 1.0), True, False)


def _abs_second_moment(m: torch.Tensor) -> torch.Tensor:
    return postprocess.second_moment(m).abs()


def _ours_smprt(model, x, y, samples, noise, score_list, normalize, seed=0):
    return smooth_model_randomization_test(
        model, x, target=y, methods=["gradient"], controls=False, scores=score_list,
        samples=samples, noise=noise, normalize=normalize, order="bottom_up", seed=seed,
        batch_size=len(x), progress=False)


def _last(res, metric):
    t = res.table
    t = t[(t["metric"] == metric) & (t["stage"] == t["stage"].max())]
    return t.sort_values("sample")["value"].to_numpy()


def test_smprt_one_sample_matches_quantus(setup):
    model, x, y, stages = setup
    kw = dict(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=None,
              explain_func=quantus.explain, explain_func_kwargs={"method": "Gradient"})
    q_last = quantus.SmoothMPRT(nr_samples=1, return_last_correlation=True,
                                disable_warnings=True)(**kw)
    q_avg = quantus.SmoothMPRT(nr_samples=1, return_average_correlation=True,
                               disable_warnings=True)(**kw)
    res = _ours_smprt(model, x, y, 1, 0.0, [_quantus_spearman_abs(), "spearman_abs"],
                      _abs_second_moment)
    ours = _last(res, "spearman_q")
    print(f"sMPRT N=1 last stage: ours {np.round(ours, 6).tolist()} Quantus "
          f"{np.round(q_last, 6).tolist()}; spearman_abs (p99 clip) "
          f"{np.round(_last(res, 'spearman_abs'), 4).tolist()}")
    np.testing.assert_allclose(ours, q_last, atol=1e-6)
    # Quantus' average includes the trained model's self-similarity (1 with one clean sample)
    per_stage = res.table[res.table["metric"] == "spearman_q"].pivot(
        index="sample", columns="stage", values="value").to_numpy()
    n_stages = per_stage.shape[1]
    np.testing.assert_allclose(q_avg, (1.0 + per_stage.sum(1)) / (n_stages + 1), atol=1e-6)
    assert not np.allclose(q_avg, per_stage.mean(1), atol=1e-3)
    # our default spearman_abs clips at the 99th percentile: close to Quantus, not equal
    diff = np.abs(_last(res, "spearman_abs") - np.asarray(q_last))
    assert diff.max() < 0.05


def test_smprt_quantus_ignores_a_custom_explain_func(setup):
    model, x, y, _ = setup
    gbp = methods.get("guided_backprop")

    def custom(model, inputs, targets, **kwargs):
        return gbp(model, torch.as_tensor(inputs), torch.as_tensor(targets)).numpy()

    common = dict(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=None,
                  explain_func_kwargs={"method": "Gradient"})
    q_grad = quantus.SmoothMPRT(nr_samples=1, return_last_correlation=True,
                                disable_warnings=True)(explain_func=quantus.explain, **common)
    q_custom = quantus.SmoothMPRT(nr_samples=1, return_last_correlation=True,
                                  disable_warnings=True)(explain_func=custom, **common)
    np.testing.assert_allclose(q_custom, q_grad)  # Guided Backprop was never called
    ours = _last(smooth_model_randomization_test(
        model, x, target=y, methods=["guided_backprop"], controls=False,
        scores=[_quantus_spearman_abs()], samples=1, noise=0.0, normalize=_abs_second_moment,
        progress=False), "spearman_q")
    assert np.abs(ours - np.asarray(q_grad)).max() > 1e-3  # ours does smooth the given method


def test_smprt_fifty_samples_agree_with_quantus_within_noise(setup):
    model, x, y, _ = setup
    state = np.random.get_state()
    try:
        np.random.seed(0)
        q = np.asarray(quantus.SmoothMPRT(nr_samples=50, noise_magnitude=0.1,
                                          return_last_correlation=True, disable_warnings=True)(
            model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=None,
            explain_func=quantus.explain, explain_func_kwargs={"method": "Gradient"}))
    finally:
        np.random.set_state(state)
    runs = [_last(_ours_smprt(model, x, y, 50, 0.1, [_quantus_spearman_abs()],
                              _abs_second_moment, seed=s), "spearman_q") for s in (0, 1)]
    seed_spread = np.abs(runs[0] - runs[1]).mean()
    gap = np.abs(runs[0] - q).mean()
    print(f"sMPRT N=50 last stage: ours {runs[0].mean():.4f} (seed 1: {runs[1].mean():.4f}), "
          f"Quantus {q.mean():.4f}; mean |ours - Quantus| {gap:.4f}, seed spread {seed_spread:.4f}")
    # same quantity, different noise draws: the gap is of the size of our seed-to-seed spread
    assert gap < 3 * seed_spread + 0.02
    # and smoothing changed the value (N = 1 would not be within this spread in general)
    assert abs(runs[0].mean() - q.mean()) < 0.05


def test_emprt_matches_quantus(setup):
    model, x, y, _ = setup
    q = quantus.EfficientMPRT(disable_warnings=True)(
        model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=None,
        explain_func=quantus.explain, explain_func_kwargs={"method": "Gradient"})
    res = efficient_model_randomization_test(model, x, target=y, methods=["gradient"],
                                             controls=False, bins=100, progress=False)
    ours = _last(res, "emprt")
    print(f"eMPRT: ours {np.round(ours, 6).tolist()} Quantus {np.round(q, 6).tolist()}")
    np.testing.assert_allclose(ours, q, rtol=1e-9, atol=1e-9)


def _quantus_ssim_score() -> NormalizedScore:
    """Quantus' RandomLogit similarity, rebuilt: maps divided by the batch's max |value|, then
    skimage SSIM of the flattened maps with data_range = the pair's range."""
    from skimage.metrics import structural_similarity

    class FlatSSIM:
        name = "ssim_q"
        higher_is_better = True

        def settings(self, shape=None):
            return {"name": self.name}

        def __call__(self, a, b):
            a = a.reshape(a.shape[0], -1).double().numpy()
            b = b.reshape(b.shape[0], -1).double().numpy()
            out = []
            for aa, bb in zip(a, b, strict=True):
                both = np.concatenate([aa, bb])
                out.append(structural_similarity(aa, bb, data_range=float(both.max() - both.min())))
            return torch.tensor(out, dtype=torch.float64)

    return NormalizedScore(FlatSSIM(), lambda m: m.sum(1) / m.sum(1).abs().max())


def test_random_logit_matches_quantus(setup):
    model, x, y, _ = setup
    q = np.asarray(quantus.RandomLogit(num_classes=10, seed=42, disable_warnings=True)(
        model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=None,
        explain_func=quantus.explain, explain_func_kwargs={"method": "Gradient"}))
    # Quantus' draw: np.random.seed(42); r = randint(0, C - 1, B); class r, skipping y
    state = np.random.get_state()
    try:
        np.random.seed(42)
        r = np.random.randint(0, 9, len(y))
    finally:
        np.random.set_state(state)
    other = torch.as_tensor(r + (r >= y.numpy()))
    res = random_logit_test(model, x, target=y, other=other, methods=["gradient"],
                            scores=[_quantus_ssim_score(), "ssim", "spearman_abs"],
                            controls=False, batch_size=len(x), progress=False)
    ours = _last(res, "ssim_q")
    print(f"random logit SSIM: ours (Quantus' definition) {ours.mean():.4f}, Quantus "
          f"{q.mean():.4f}, ours (2-D ssim) {_last(res, 'ssim').mean():.4f}")
    np.testing.assert_allclose(ours, q, atol=1e-5)
    assert not np.allclose(_last(res, "ssim"), q, atol=1e-2)  # a different SSIM definition
