"""Ours vs Quantus 0.6.0 ``MPRT``: the cascading model parameter randomization test, equal work.

Both sides run in this process, interleaved (ours, Quantus, ours, Quantus, ...), on the same
model, inputs, targets and randomized weights, and the per-stage mean Spearman is compared.

Settings made equal:
- order: cascading top-down (Quantus ``layer_order="top_down"``);
- layers: Quantus randomizes every module that has ``reset_parameters`` in reversed
  ``named_modules`` (registration) order; ours are ``discover_blocks`` (modules owning parameters,
  forward-execution order). Both lists are printed and compared per model (they agree on the demo
  CNN and on this ResNet, whose registration order is its execution order);
- weights: ours (``init="reinit"`` with ``reset_running_stats=True``: each module's own
  ``reset_parameters()``, BN statistics reset, which is what Quantus does) are given to Quantus by
  replacing each of its model copy's modules' ``reset_parameters`` with a loader of our block's
  tensors; Quantus still deep-copies, iterates and "re-initializes" itself;
- targets: fixed, the trained model's predicted class (Quantus takes ``y_batch``);
- similarity: Spearman of the raw, signed, per-channel maps flattened (Quantus ``abs=False,
  normalise=False``, ``correlation_spearman``; ours a score with post-processing ``"none"``);
- methods: gradient (Quantus: ``quantus.explain`` ``method="Gradient"``, Captum ``Saliency``
  with ``abs=False``, ``reduce_axes=()`` to keep channels); integrated gradients (Quantus' explain
  hard-codes ``n_steps=10, method="riemann_trapezoid"``: ours uses the same, unless
  ``--quantus-explain ours``); SmoothGrad (no Captum path in ``quantus.explain`` for torch:
  Quantus gets an ``explain_func`` that calls our method with our per-batch noise seed);
- no controls, no null reference (Quantus has neither), ``batch_size`` equal.

Quantus' own costs that remain: it computes the trained model's maps twice (once in
``custom_preprocess`` and again for its ``"original"`` entry, a self-similarity of 1), copies every
map to NumPy, ranks with ``scipy.stats.spearmanr`` on the stacked (2B, F) arrays (a 2B x 2B matrix
per batch).

Run: ``python benchmarks/bench_mprt_quantus.py`` (about 10 minutes on 2 CPU cores),
``--quick`` (about 1 minute), ``--device cuda`` on a GPU.
"""

from __future__ import annotations

import copy
import itertools
import types
import warnings
from collections.abc import Callable
from typing import Any

import _common as C
import numpy as np
import torch
from torch import nn

from saliency_sanity import methods as M
from saliency_sanity import metrics, model_randomization_test, scores
from saliency_sanity.randomization import discover_blocks, randomize_blocks

SCORE = "bench_spearman_raw"
INIT = "reinit"
INIT_SETTINGS = {"reset_running_stats": True}


def _register_score() -> None:
    """Spearman of the raw flattened maps (Quantus abs=False, normalise=False). The library has
    no public score for it and ``model_randomization_test`` takes score NAMES, so the benchmark
    registers one in the (private) score registry."""
    reg = scores._REGISTRY  # noqa: SLF001 - see the docstring
    if SCORE not in reg:
        reg.register(SCORE)(
            lambda: scores.Score(SCORE, metrics.spearman, "none", (-1.0, 1.0), True, False)
        )


def quantus_layers(model: nn.Module) -> list[str]:
    """The layers Quantus 0.6.0 randomizes, in its top-down order."""
    return [n for n, m in model.named_modules() if hasattr(m, "reset_parameters")][::-1]


def with_our_weights(model: nn.Module, randomized: nn.Module) -> nn.Module:
    """A copy of ``model`` whose modules' ``reset_parameters`` load ``randomized``'s tensors
    (parameters and buffers) instead of drawing new ones (deepcopy rebinds the methods)."""
    q = copy.deepcopy(model)
    src = dict(randomized.named_modules())
    for name, mod in q.named_modules():
        if not hasattr(mod, "reset_parameters"):
            continue
        s = src[name]
        tensors = {k: v.detach().clone() for k, v in itertools.chain(
            s.named_parameters(recurse=False), s.named_buffers(recurse=False))}

        def load(self: nn.Module, _t: dict[str, torch.Tensor] = tensors) -> None:
            with torch.no_grad():
                for k, v in itertools.chain(self.named_parameters(recurse=False),
                                            self.named_buffers(recurse=False)):
                    v.copy_(_t[k])

        mod.reset_parameters = types.MethodType(load, mod)  # type: ignore[method-assign]
    return q


def our_explain_func(method: Any, label: str, seed: int, x: torch.Tensor, batch_size: int,
                     device: torch.device) -> Callable[..., np.ndarray]:
    """A Quantus ``explain_func`` calling our method, with the noise seed our engine gives the
    same batch (so SmoothGrad's noise is identical on both sides)."""
    from saliency_sanity.engine import method_for_call

    xn = x.numpy()
    keys = {xn[i, 0].tobytes()[:256]: i // batch_size for i in range(0, len(xn), batch_size)}

    def explain(model: nn.Module, inputs: np.ndarray, targets: np.ndarray, **_: Any
                ) -> np.ndarray:
        b = keys.get(np.ascontiguousarray(inputs[0, 0]).tobytes()[:256], 0)
        m = method_for_call(method, label, seed, 0, b)
        xt = torch.as_tensor(inputs).to(device)
        t = torch.as_tensor(targets).long().to(device)
        return m(model, xt, t).cpu().numpy()

    return explain


def run_case(case: C.ModelCase, method: str, n: int, batch_size: int, steps: int, samples: int,
             repeats: int, device: torch.device, qexplain: str) -> dict[str, Any]:
    import quantus
    from quantus.functions.similarity_func import correlation_spearman

    model = case.build().to(device)
    x = C.make_inputs(n, case.input_shape, seed=1)
    with torch.no_grad():
        y = model(x.to(device)).argmax(1).cpu()
    blocks = discover_blocks(model, x[:1].to(device), group_by="modules")  # as Quantus: per module
    ours_layers = [b.name for b in reversed(blocks)]
    q_layers = quantus_layers(model)

    native = qexplain == "native" and method in ("gradient", "integrated_gradients")
    rule = "riemann_trapezoid" if native and method == "integrated_gradients" else "riemann_right"
    ig_steps = 10 if native and method == "integrated_gradients" else steps
    spec = C.method_spec(method, ig_steps, samples, rule)
    label = method
    mobj = M.get(spec[0], **spec[1])

    randomized = randomize_blocks(copy.deepcopy(model).cpu(), blocks, INIT, 0,
                                  dict(INIT_SETTINGS))
    qmodel = with_our_weights(model.cpu(), randomized).to(device)
    model = model.to(device)

    def ours(xx: torch.Tensor, yy: torch.Tensor) -> dict[str, float]:
        res = model_randomization_test(
            model, xx, target=yy, methods={label: spec}, scores=[SCORE], order="cascading",
            init=INIT, init_settings=dict(INIT_SETTINGS), seed=0, target_mode="fixed",
            batch_size=batch_size, device=device, controls=False, blocks=blocks,
            progress=False, null_reference=False)
        t = res.table
        return t[t["metric"] == SCORE].groupby("layer")["value"].mean().to_dict()

    def theirs(xx: torch.Tensor, yy: torch.Tensor) -> dict[str, float]:
        if native:
            qm = {"gradient": "Gradient", "integrated_gradients": "IntegratedGradients"}[method]
            efunc: Callable[..., Any] = quantus.explain
            ekw: dict[str, Any] = {"method": qm, "reduce_axes": ()}
        else:
            efunc = our_explain_func(mobj, label, 0, xx, batch_size, device)
            ekw = {}
        metric = quantus.MPRT(similarity_func=correlation_spearman, layer_order="top_down",
                              seed=42, abs=False, normalise=False, disable_warnings=True,
                              display_progressbar=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = metric(model=qmodel, x_batch=xx.numpy(), y_batch=yy.numpy(), a_batch=None,
                         explain_func=efunc, explain_func_kwargs=ekw, batch_size=batch_size,
                         device=str(device))
        return {k: float(np.mean(v)) for k, v in out.items() if k != "original"}

    w = min(2, n)
    times, outs = C.interleaved(
        {"ours": lambda: ours(x, y), "quantus": lambda: theirs(x, y)}, repeats, device,
        warmup={"ours": lambda: ours(x[:w], y[:w]), "quantus": lambda: theirs(x[:w], y[:w])})
    o, q = outs["ours"], outs["quantus"]
    common = [k for k in q_layers if k in o and k in q]
    diff = max((abs(o[k] - q[k]) for k in common), default=float("nan"))
    return {
        "model": case.name, "method": method, "n": n, "batch_size": batch_size,
        "passes_per_map": C.passes_per_map(method, ig_steps, samples),
        "quantus_explain": "captum (quantus.explain)" if native else "ours (explain_func)",
        "ig_rule": rule if method == "integrated_gradients" else None,
        "ours_s": C.median(times["ours"]), "quantus_s": C.median(times["quantus"]),
        "ours_cpu_s": C.median(times["ours:cpu"]), "quantus_cpu_s": C.median(times["quantus:cpu"]),
        "times": times,
        "ratio": C.median(times["quantus"]) / C.median(times["ours"]),
        "ratio_cpu": C.median(times["quantus:cpu"]) / C.median(times["ours:cpu"]),
        "stages": len(blocks), "layers_match": ours_layers == q_layers,
        "layer_mismatch": None if ours_layers == q_layers else {
            "ours_only": [k for k in ours_layers if k not in q_layers],
            "quantus_only": [k for k in q_layers if k not in ours_layers],
            "order_differs": [k for k in ours_layers if k in q_layers]
            != [k for k in q_layers if k in ours_layers]},
        "max_abs_diff_stage_mean": diff,
        "ours_stage_means": [o[k] for k in common], "quantus_stage_means": [q[k] for k in common],
    }


def main() -> None:
    p = C.parser(__doc__, "small sizes, about a minute", threads=2, device=True)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--steps", type=int, default=16, help="IG steps with --quantus-explain ours")
    p.add_argument("--samples", type=int, default=8, help="SmoothGrad samples")
    p.add_argument("--quantus-explain", choices=["native", "ours"], default="native",
                   help="native: quantus.explain (Captum) for gradient and IG; ours: our "
                   "methods through explain_func for every method")
    p.add_argument("--full", action="store_true",
                   help="every method on the ResNet at 224x224 (hours on 2 CPU cores)")
    p.add_argument("--json", default=None, help="write the rows here")
    args = p.parse_args()
    C.setup_threads(args.threads)
    _register_score()
    dev = torch.device(args.device)
    C.print_machine(dev)
    cases, repeats = C.model_ladder(args.quick, args.full, args.repeats)
    rows = []
    hdr = (f"{'model':<14}{'method':<22}{'n':>4}{'passes':>7}  {'quantus explain':<26}"
           f"{'ours s':>9}{'quantus s':>11}{'ratio':>7}{'cpu ratio':>10}  {'max|d mean|':>12}"
           "  layers")
    print(hdr)
    for case, reps, meths, n, bs in cases:
        for meth in meths:
            r = run_case(case, meth, n, bs, args.steps, args.samples, reps, dev,
                         args.quantus_explain)
            rows.append(r)
            lay = "same" if r["layers_match"] else f"MISMATCH {r['layer_mismatch']}"
            print(f"{r['model']:<14}{meth:<22}{n:>4}{r['passes_per_map']:>7}  "
                  f"{r['quantus_explain']:<26}{r['ours_s']:>9.2f}{r['quantus_s']:>11.2f}"
                  f"{r['ratio']:>7.2f}{r['ratio_cpu']:>10.2f}  "
                  f"{r['max_abs_diff_stage_mean']:>12.2e}  "
                  f"{lay} ({r['stages']} stages)", flush=True)
    C.print_ladder_end(repeats)
    C.write_rows(args.json, rows)


if __name__ == "__main__":
    main()
