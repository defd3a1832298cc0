"""The engine's reference tables: every check on two models, saved once, compared after changes.

The tables in ``tests/fixtures/engine_reference.npz`` were written by ``python
tests/engine_reference.py`` at c3251e8, before the engine was redesigned (issue 12), with the
model weights and inputs stored beside them. ``test_engine_reference.py`` recomputes every table
with the current engine and asserts the same rows and values (|diff| <= 1e-6), with activation
reuse on and off. The numbers themselves are checked against independent references elsewhere
(Captum, scipy, scikit-image); these fixtures pin that a refactor changes none of them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

FIXTURE = Path(__file__).parent / "fixtures" / "engine_reference.npz"
SEEDS = (0, 1)
#: Grad-CAM's layer, given by name (the automatic choice may change; these tables may not)
CAM_LAYER = {"cnn": "conv2", "resnet": "layer2"}
#: inputs per batch in every check of the tables (``tools/reference_drift.py`` varies it)
BATCH_SIZE = 4


def methods(model_name: str, noise: bool = True) -> dict[str, Any]:
    """The methods of the reference tables (small settings), Grad-CAM at a named layer."""
    layer = {"layer": CAM_LAYER[model_name]}
    out: dict[str, Any] = {
        "gradient": "gradient",
        "gradient_x_input": "gradient_x_input",
        "integrated_gradients": ("integrated_gradients", {"steps": 4}),
        "smoothgrad": ("smoothgrad", {"samples": 3}),
        "vargrad": ("vargrad", {"samples": 3}),
        "guided_backprop": "guided_backprop",
        "gradcam": ("gradcam", layer),
        "guided_gradcam": ("guided_gradcam", layer),
    }
    if not noise:
        del out["smoothgrad"], out["vargrad"]
    return out


CONTROLS = ["edge_sobel", "random_gaussian"]
SCORES = ["spearman_abs", "spearman", "ssim", "hog", "pearson", "mse"]


def scores(names: list[str]) -> list[Any]:
    """The scores of the tables. The signed Spearman score post-processed as when the tables
    were saved: ``diverging`` then clipped to [0, 1], now the ``diverging_display`` variant
    (``diverging`` itself follows the authors' [-1, 1] since)."""
    from saliency_sanity import postprocess
    from saliency_sanity import scores as _scores

    if "diverging_display" not in postprocess.list():  # the tables' own commit
        return list(names)
    return [_scores.get(n, postprocess="diverging_display") if n == "spearman" else n
            for n in names]


class Block(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(ch)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x + self.bn2(self.conv2(y)))


class ResNet(nn.Module):
    """A small residual net with batch norm (eval statistics set to non-trivial values)."""

    def __init__(self, ch: int = 8, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, ch, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(ch)
        self.layer1 = Block(ch)
        self.layer2 = Block(ch)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(ch, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.stem(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def models() -> dict[str, nn.Module]:
    from saliency_sanity.models import mnist_cnn

    g = torch.Generator().manual_seed(123)
    res = ResNet()
    with torch.no_grad():
        for name, t in res.state_dict().items():
            if name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            elif name.endswith("running_mean"):
                t.copy_(0.1 * torch.randn(t.shape, generator=g))
            elif t.is_floating_point():
                t.copy_(0.3 * torch.randn(t.shape, generator=g))
    return {"cnn": mnist_cnn(width=0.25, seed=0).eval(), "resnet": res.eval()}


def inputs() -> torch.Tensor:
    from saliency_sanity import data

    ds = data.load("mnist", n_train=8, n_test=6, seed=0)
    return ds.x_test[:6].float()


def tables(name: str, model: nn.Module, x: torch.Tensor, reuse: bool = True
           ) -> dict[str, pd.DataFrame]:
    """Every check's table(s) on ``model`` and ``x``, by a stable name."""
    from saliency_sanity import checks

    METHODS, NOISE_FREE = methods(name), methods(name, noise=False)

    out: dict[str, pd.DataFrame] = {}
    common: dict[str, Any] = {"progress": False, "batch_size": BATCH_SIZE}
    for seed in SEEDS:
        for order in ("cascading", "independent", "bottom_up"):
            r = checks.model_randomization_test(
                model, x, methods=METHODS, controls=CONTROLS, scores=scores(SCORES), order=order,
                seed=seed, reuse_activations=reuse, **common)
            out[f"mprt|{order}|{seed}"] = r.table
            out[f"mprt_null|{order}|{seed}"] = r.null
            out[f"mprt_stages|{order}|{seed}"] = _stages(r.stages)
        r = checks.smooth_model_randomization_test(
            model, x, methods=NOISE_FREE, controls=CONTROLS, scores=["spearman_abs", "ssim"],
            samples=2, seed=seed, **common)
        out[f"smprt|{seed}"] = r.table
        r = checks.efficient_model_randomization_test(
            model, x, methods=METHODS, controls=CONTROLS, bins=20, seed=seed, **common)
        out[f"emprt|{seed}"] = r.table
        out[f"emprt_stages|{seed}"] = _stages(r.stages)
        r = checks.random_logit_test(model, x, methods=METHODS, controls=CONTROLS,
                                     scores=scores(["spearman_abs", "ssim"]), seed=seed, **common)
        out[f"random_logit|{seed}"] = r.table
        out[f"scales|{seed}"] = checks.activation_scale_analysis(model, x, seed=seed,
                                                                 **common).table
    return out


def compare(model: nn.Module, twin: nn.Module, x: torch.Tensor) -> dict[str, pd.DataFrame]:
    from saliency_sanity import checks

    METHODS = methods("cnn")
    out = {}
    for seed in SEEDS:
        r = checks.compare_models(model, twin, x, methods=METHODS, controls=CONTROLS,
                                  scores=scores(SCORES), seed=seed, progress=False,
                                  batch_size=BATCH_SIZE)
        out[f"drt|{seed}"] = r.table
        out[f"drt_stages|{seed}"] = _stages(r.stages)
    return out


def _stages(stages: list[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for s in stages:
        for k, v in sorted((s.get("output_change") or {}).items()):
            rows.append([int(s["index"]), str(s["block"]), k, float(v)])
    return pd.DataFrame(rows, columns=["index", "block", "key", "value"])


def everything(reuse: bool = True, stored: dict[str, np.ndarray] | None = None
               ) -> tuple[dict[str, pd.DataFrame], dict[str, np.ndarray]]:
    """Every table; with ``stored`` (the fixture's arrays) on its weights and inputs."""
    nets = models()
    x = inputs()
    if stored is not None:
        x = torch.from_numpy(stored["x"])
        for m, net in nets.items():
            net.load_state_dict({k[len(f"w|{m}|"):]: torch.from_numpy(v)
                                 for k, v in stored.items() if k.startswith(f"w|{m}|")})
    out: dict[str, pd.DataFrame] = {}
    for name, net in nets.items():
        for key, t in tables(name, net, x, reuse).items():
            out[f"{name}|{key}"] = t
    for key, t in compare(nets["cnn"], _twin(nets["cnn"]), x).items():
        out[f"cnn|{key}"] = t
    weights = {f"w|{m}|{k}": v.detach().numpy() for m, net in nets.items()
               for k, v in net.state_dict().items()}
    return out, {"x": x.numpy(), **weights}


#: the absolute allowance of every value on another CPU, on top of its conditioning
ATOL = 2e-4
#: how many times its measured conditioning (:func:`conditioning`) a value may move
COND_FACTOR = 4.0
#: the share of a table's values that may lie beyond their allowance on another CPU (rank ties
#: and HOG orientation bins that flip at rounding level; at least 2 values)
OUTLIERS = 0.02


def value_columns(t: pd.DataFrame) -> list[str]:
    """The numeric columns of a table that hold results (not labels)."""
    if "metric" in t.columns or "key" in t.columns:
        return ["value"]
    return [c for c in t.columns if c in ("spearman", "spearman_spatial", "scale_ratio")]


def group_columns(t: pd.DataFrame) -> list[str]:
    """The columns naming a value's group (its allowance is the group's worst conditioning):
    method x stage x metric; an output-change key; a stage of the activation scales."""
    if "metric" in t.columns:
        return ["method", "stage", "metric"]
    return ["key"] if "key" in t.columns else ["stage"]


def beyond(got: np.ndarray, want: np.ndarray, cond: np.ndarray) -> np.ndarray:
    """Where a recomputed value lies beyond its allowance ``ATOL + COND_FACTOR * cond`` (NaN in
    both is equal; NaN in one only is beyond unless the allowance is infinite)."""
    allow = ATOL + COND_FACTOR * cond
    bad = (np.abs(got - want) > allow) | ((np.isnan(got) != np.isnan(want)) & ~np.isinf(allow))
    return bad & ~(np.isnan(got) & np.isnan(want))


#: the environment that limits torch's, oneDNN's and MKL's kernels to AVX2: the same float32
#: computation rounded as on another CPU, with the same random draws
OTHER_KERNELS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
                 "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def conditioning(native: dict[str, pd.DataFrame], other: dict[str, pd.DataFrame]
                 ) -> dict[str, dict[str, np.ndarray]]:
    """Per table and value column: how far this machine's result lies from the same
    computation on other kernels (:data:`OTHER_KERNELS`), the worst over the value's group
    (method x stage x metric; an output-change key; a stage of the activation scales). A value
    decided by rounding (the Spearman rank of a near-constant map of a fully randomized net) has
    a large one; inf where only one of the two is NaN."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for name, a in native.items():
        b = other[name]
        out[name] = {}
        for c in value_columns(a):
            va, vb = a[c].to_numpy(float), b[c].to_numpy(float)
            d = np.abs(va - vb)
            d[np.isnan(va) & np.isnan(vb)] = 0.0
            d[np.isnan(va) != np.isnan(vb)] = np.inf
            grp = a[group_columns(a)].astype(str).agg("|".join, axis=1)
            out[name][c] = pd.Series(d).groupby(grp.to_numpy()).transform("max").to_numpy()
    return out


def violations(name: str, got: pd.DataFrame, want: pd.DataFrame,
               cond: dict[str, np.ndarray] | None) -> list[str]:
    """What differs between a recomputed table and the reference. ``cond=None``: bit for bit
    (the fixture's own machine). Else a value may move by ``ATOL + COND_FACTOR * cond``, and
    at most ``OUTLIERS`` of the table's values (at least 2) may move further."""
    if list(got.columns) != list(want.columns):
        return [f"{name}: columns {list(got.columns)}, reference {list(want.columns)}"]
    if len(got) != len(want):
        return [f"{name}: {len(got)} rows, reference {len(want)}"]
    out = []
    for c in want.columns:
        g, w = got[c].to_numpy(), want[c].to_numpy()
        if not (w.dtype.kind in "fi" and g.dtype.kind in "fi"):
            if [str(v) for v in g] != [str(v) for v in w]:
                out.append(f"{name}.{c} differs")
            continue
        g, w = g.astype(float), w.astype(float)
        if cond is None or c not in cond:
            same = (g == w) | (np.isnan(g) & np.isnan(w))
            if not same.all():
                i = int(np.argmin(same))
                out.append(f"{name}.{c}: {int((~same).sum())} values differ (row {i}: {g[i]!r} "
                           f"vs {w[i]!r})" + ("" if cond is None else ": a label column"))
            continue
        allow = ATOL + COND_FACTOR * cond[c]
        bad = beyond(g, w, cond[c])
        if bad.sum() > max(2, OUTLIERS * len(w)):
            i = int(np.argmax(bad))
            out.append(f"{name}.{c}: {int(bad.sum())} of {len(w)} values beyond their allowance, "
                       f"more than {OUTLIERS:.0%} (row {i}: {g[i]:.6g} vs {w[i]:.6g}, allowed "
                       f"{allow[i]:.3g})")
    return out


def allowance(arrays: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """The stored :func:`conditioning` of every table (``c|<table>|<column>`` arrays)."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for k, v in arrays.items():
        if k.startswith("c|"):
            name, col = "|".join(k.split("|")[1:-1]), k.split("|")[-1]
            out.setdefault(name, {})[col] = v
    return out


def _twin(net: nn.Module) -> nn.Module:
    from saliency_sanity.models import mnist_cnn

    return mnist_cnn(width=0.25, seed=7).eval()


def machine() -> dict[str, str]:
    """What decides the float32 rounding of the tables: the CPU (model and instruction-set
    flags), the kernels torch dispatches to, torch's intra-op thread count (the tests run with
    ``min(2, cores)``; a reduction split over more threads rounds differently) and the library
    versions. Two machines with the same signature compute the same bits; the reference test
    compares bit for bit then."""
    import hashlib
    import platform

    import scipy
    import skimage

    model, flags = "", ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and not model:
                    model = value.strip()
                elif key.strip() in ("flags", "Features") and not flags:
                    flags = " ".join(sorted(value.split()))
    except OSError:
        pass
    return {
        "intra_op_threads": str(torch.get_num_threads()),
        "machine": platform.machine(),
        "cpu": model or platform.processor() or platform.machine(),
        "cpu_flags_sha256": hashlib.sha256(flags.encode()).hexdigest()[:16],
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "scikit-image": skimage.__version__,
    }


def fixture_machine(arrays: dict[str, np.ndarray]) -> dict[str, str] | None:
    """The :func:`machine` signature stored with the fixture (None for a fixture without one)."""
    if "meta|machine" not in arrays:
        return None
    import json

    return json.loads(str(arrays["meta|machine"]))


def on_other_kernels(stored: dict[str, np.ndarray]) -> dict[str, pd.DataFrame]:
    """:func:`everything` on the fixture's weights and inputs in a fresh process whose kernels
    are limited to AVX2 (:data:`OTHER_KERNELS`; they are chosen when torch is imported)."""
    import os
    import pickle
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.npz", Path(tmp) / "out.pkl"
        np.savez(src, **stored)
        code = ("import pickle, sys, warnings, numpy as np; sys.path.insert(0, sys.argv[3]); "
                "import engine_reference as r; warnings.simplefilter('ignore'); "
                "a = dict(np.load(sys.argv[1])); "
                "pickle.dump(r.everything(stored=a)[0], open(sys.argv[2], 'wb'))")
        subprocess.run([sys.executable, "-c", code, str(src), str(dst),
                        str(Path(__file__).parent)], check=True,
                       env={**os.environ, **OTHER_KERNELS})
        with open(dst, "rb") as f:
            return pickle.load(f)


def save(path: Path = FIXTURE, out: dict[str, pd.DataFrame] | None = None,
         extra: dict[str, np.ndarray] | None = None,
         other: dict[str, pd.DataFrame] | None = None) -> None:
    """Write the fixture: the tables (``out``, computed now unless given), the weights and
    inputs (``extra``), this machine's signature, and each value's conditioning (against the
    tables on other kernels ``other``, :func:`on_other_kernels` unless given)."""
    import json

    if out is None or extra is None:
        out, extra = everything()
    if other is None:
        other = on_other_kernels(extra)
    arrays: dict[str, np.ndarray] = dict(extra)
    arrays["meta|machine"] = np.array(json.dumps(machine(), sort_keys=True))
    for key, cols in conditioning(out, other).items():
        for c, v in cols.items():
            arrays[f"c|{key}|{c}"] = v
    for key, t in out.items():
        for c in t.columns:
            col = t[c].to_numpy()
            arrays[f"t|{key}|{c}"] = col.astype(str) if col.dtype == object else col
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)


def load(path: Path = FIXTURE) -> tuple[dict[str, pd.DataFrame], dict[str, np.ndarray]]:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    cols: dict[str, dict[str, np.ndarray]] = {}
    extra = {}
    for k, v in arrays.items():
        if k.startswith("t|"):
            _, name, rest = k.split("|", 2)[0], "|".join(k.split("|")[1:-1]), k.split("|")[-1]
            cols.setdefault(name, {})[rest] = v
        else:
            extra[k] = v
    return {k: pd.DataFrame(v) for k, v in cols.items()}, extra


if __name__ == "__main__":
    sys.exit(save())
