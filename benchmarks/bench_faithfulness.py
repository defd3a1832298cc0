"""Faithfulness curves: ours vs Quantus 0.6.0 and vs the compute floor, in one process.

Cases: the demo CNN (``saliency_sanity.models.mnist_cnn``, 1x28x28, random weights) and a
ResNet-18-shaped net (``_common.resnet18``, 3 x S x S, S = 64 by default, ``--sizes 64,224``).
Inputs are uniform in [0, 1], maps are seeded random numbers (every method's map costs the same
here: it is given), targets the predicted classes.

Per case and metric: ours, Quantus (same maps, same targets, settings aligned as in
``tests/test_faithfulness.py``: Quantus' "black" = our "min", ``normalise=False, abs=False``,
softmax) and the floor, timed interleaved, the median wall time of ``--repeats`` rounds:

- region perturbation: k x k regions (k = 9 on 28 x 28: 16 regions; k = 8 on 64 x 64: 64; k = 9
  on 224 x 224: 625, Samek's setting), all regions up to ``--rp-steps`` (100), MoRF; Quantus'
  ``RegionPerturbation`` (one forward pass of B images per step);
- pixel flipping: about ``--pf-steps`` steps; Quantus' ``PixelFlipping`` flips single entries of
  the C*H*W array and wants ``features_in_step`` to divide H * W, so it gets the divisor giving
  the nearest step count and ours the pixels per step giving the same count (the same number of
  forward passes; on RGB its curves differ, so only MNIST curves are compared);
- ROAD: percentages 10 .. 90, noise 0.01. Quantus' ``ROAD`` fails on RGB images (IndexError, see
  the tests), so on RGB only the imputation is compared: Quantus' ``noisy_linear_imputation``
  image by image against ours for the whole batch at once.

The floor is the batched forward passes on the perturbed inputs alone (built beforehand, the same
rows per pass as ours, no gradients); for ROAD the forward passes on the imputed images. Agreement
(max relative difference of the curves) is printed beside each timing.

Run: ``python benchmarks/bench_faithfulness.py`` (a few minutes on 2 CPU cores), ``--quick``
(about a minute); ``--sizes 64,224`` adds the ResNet-18 at 224 x 224 (several minutes more).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import _common as C
import numpy as np
import torch
from torch import nn

from saliency_sanity import faithfulness as F
from saliency_sanity.faithfulness._common import rows_per_pass
from saliency_sanity.faithfulness.curves import _unit_ranks
from saliency_sanity.faithfulness.imputation import removal_counts


def quantus_curves(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                   maps: torch.Tensor, **kw: Any) -> Callable[[], np.ndarray]:
    import quantus

    cls = {"rp": quantus.RegionPerturbation, "pf": quantus.PixelFlipping,
           "road": quantus.ROAD}[name]
    xn, yn, an = x.numpy(), y.numpy(), maps.numpy()

    def run() -> np.ndarray:
        metric = cls(normalise=False, abs=False, disable_warnings=True, **kw)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = metric(model=model, x_batch=xn, y_batch=yn, a_batch=an, channel_first=True,
                         device="cpu", batch_size=len(xn))
        return np.asarray(list(out.values()) if isinstance(out, dict) else out)

    return run


def quantus_imputation(x: torch.Tensor, maps: torch.Tensor, percentages: list[float]
                       ) -> Callable[[], list[np.ndarray]]:
    from quantus.functions.perturb_func import noisy_linear_imputation

    b, _, h, w = x.shape
    order = torch.argsort(-maps.sum(1).flatten(1), dim=1).numpy()
    counts = removal_counts(percentages, h * w)
    xn = x.numpy()

    def run() -> list[np.ndarray]:
        return [noisy_linear_imputation(arr=xn[i], indices=order[i, :n], noise=0.01)
                for n in counts for i in range(b)]

    return run


def floor_rows(model: nn.Module, rows: torch.Tensor, per_pass: int | None) -> Callable[[], Any]:
    def run() -> None:
        with torch.no_grad():
            for lo in range(0, len(rows), per_pass or len(rows)):
                model(rows[lo:lo + (per_pass or len(rows))])

    return run


def perturbed_rows(x: torch.Tensor, maps: torch.Tensor, k: int, per_step: int, steps: int,
                   base: torch.Tensor) -> torch.Tensor:
    rank, _ = _unit_ranks(maps.double().sum(1), k, "morf", 0)
    thr = (torch.arange(steps + 1) * per_step).view(-1, 1, 1, 1, 1)
    return torch.where(rank.unsqueeze(0) < thr, base.unsqueeze(0), x.unsqueeze(0)).reshape(
        -1, *x.shape[1:])


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12)))


def bench_case(case: C.ModelCase, n: int, pf_steps: int, repeats: int, rp_steps: int = 100
               ) -> list[dict[str, Any]]:
    model = case.build().eval()
    x = C.make_inputs(n, case.input_shape, seed=0)
    maps = torch.rand(x.shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    c, h, w = case.input_shape
    per_pass = rows_per_pass("auto", x, "bench")
    base = x.flatten(1).amin(1).view(-1, 1, 1, 1).expand_as(x)
    out: list[dict[str, Any]] = []

    # region perturbation: all regions up to rp_steps (Samek's 9 x 9, L = 100 at 224 x 224)
    k = 8 if h == 64 else 9
    steps = min(rp_steps, -(-h // k) * -(-w // k))
    cases = {
        "ours": lambda: F.region_perturbation(model, x, maps, y, region=k, steps=steps,
                                              replacement="min"),
        "quantus": quantus_curves("rp", model, x, y, maps, patch_size=k,
                                  regions_evaluation=steps, perturb_baseline="black"),
        "floor": floor_rows(model, perturbed_rows(x, maps, k, 1, steps, base), per_pass),
    }
    times, outs = C.interleaved(cases, repeats, torch.device("cpu"))
    ours = outs["ours"]
    agree = rel(ours[:, 1:].numpy(), ours[:, :1].numpy() - outs["quantus"])
    out.append(row(case.name, f"region_perturbation k={k} L={steps}", times, agree))

    # pixel flipping: Quantus wants features_in_step to divide H * W; equal step counts
    # and ours (whole pixels per step) to take as many steps as Quantus (features per step)
    def steps_of(d: int) -> int:
        return -(-c * h * w // d)

    fis = min((d for d in range(1, h * w + 1) if (h * w) % d == 0
               and -(-h * w // -(-h * w // steps_of(d))) == steps_of(d)),
              key=lambda d: abs(steps_of(d) - pf_steps))
    pf_steps = steps_of(fis)
    pps = -(-h * w // pf_steps)
    cases = {
        "ours": lambda: F.pixel_flipping(model, x, maps, y, pixels_per_step=pps,
                                         replacement="min"),
        "quantus": quantus_curves("pf", model, x, y, maps, features_in_step=fis,
                                  perturb_baseline="black"),
        "floor": floor_rows(model, perturbed_rows(x, maps, 1, pps, pf_steps, base), per_pass),
    }
    times, outs = C.interleaved(cases, repeats, torch.device("cpu"))
    agree = rel(outs["ours"][:, 1:].numpy(), outs["quantus"]) if c == 1 else float("nan")
    out.append(row(case.name, f"pixel_flipping {pps} px/step L={pf_steps}", times, agree))

    # ROAD
    pct = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    order = torch.argsort(-maps.sum(1).flatten(1), dim=1)
    counts = removal_counts(pct, h * w)
    removed = torch.zeros(len(pct), n, h * w, dtype=torch.bool)
    for i, m in enumerate(counts):
        removed[i].scatter_(1, order[:, :m], True)
    removed = removed.view(-1, h, w)
    imputed = F.noisy_linear_imputation(x.repeat(len(pct), 1, 1, 1), removed, 0.01)
    cases = {
        "ours": lambda: F.road(model, x, maps, y, percentages=pct, score="correct"),
        "floor": floor_rows(model, imputed, per_pass),
    }
    if c == 1:
        cases["quantus"] = quantus_curves("road", model, x, y, maps,
                                          percentages=[round(p * 100) for p in pct])
    times, _ = C.interleaved(cases, repeats, torch.device("cpu"))
    out.append(row(case.name, "road 9 percentages", times, float("nan")))
    cases = {
        "ours": lambda: F.noisy_linear_imputation(x.repeat(len(pct), 1, 1, 1), removed, 0.01),
        "quantus": quantus_imputation(x, maps, pct),
    }
    times, _ = C.interleaved(cases, repeats, torch.device("cpu"))
    out.append(row(case.name, "road imputation only", times, float("nan")))
    return out


def row(case: str, metric: str, times: dict[str, list[float]], agree: float) -> dict[str, Any]:
    """Medians of wall and process CPU time (all threads) per side, and the ratios."""
    r: dict[str, Any] = {"case": case, "metric": metric, "max_rel_diff": agree}
    nan = float("nan")
    for k in ("ours", "quantus", "floor"):
        r[k] = C.median(times[k]) if k in times else nan
        r[k + ":cpu"] = C.median(times[k + ":cpu"]) if k in times else nan
    for t in ("", ":cpu"):
        r["ours/quantus" + t] = r["ours" + t] / r["quantus" + t]
        r["ours/floor" + t] = r["ours" + t] / r["floor" + t]
    print(f"{case:12s} {metric:32s} wall: ours {r['ours']:7.3f}s quantus {r['quantus']:7.3f}s "
          f"floor {r['floor']:7.3f}s | ours/quantus wall {r['ours/quantus']:5.2f} cpu "
          f"{r['ours/quantus:cpu']:5.2f} | ours/floor wall {r['ours/floor']:5.2f} cpu "
          f"{r['ours/floor:cpu']:5.2f} | max rel diff {agree:.1e}", flush=True)
    return r


def main() -> None:
    p = C.parser(__doc__, "fewer images and repeats", threads=1)
    p.add_argument("--images", type=int, default=None)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--pf-steps", type=int, default=50, help="about this many steps")
    p.add_argument("--rp-steps", type=int, default=100,
                   help="region perturbation: at most this many steps (100)")
    p.add_argument("--sizes", default="64", help="ResNet-18 input sizes, comma-separated")
    a = C.start(p)
    n = a.images or (4 if a.quick else 8)
    repeats = a.repeats or (1 if a.quick else 3)
    print(f"# images {n}, repeats {repeats}, threads {a.threads}")
    rows = bench_case(C.model_case("cnn"), n, a.pf_steps, repeats, a.rp_steps)
    for s in (int(v) for v in a.sizes.split(",") if v):
        rows += bench_case(C.model_case("resnet18", s, num_classes=10), n, a.pf_steps, repeats,
                           a.rp_steps)
    C.write_rows(a.json, rows)


if __name__ == "__main__":
    main()
