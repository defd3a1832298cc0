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
    common: dict[str, Any] = {"progress": False, "batch_size": 4}
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
                                                                 batch_size=4).table
    return out


def compare(model: nn.Module, twin: nn.Module, x: torch.Tensor) -> dict[str, pd.DataFrame]:
    from saliency_sanity import checks

    METHODS = methods("cnn")
    out = {}
    for seed in SEEDS:
        r = checks.compare_models(model, twin, x, methods=METHODS, controls=CONTROLS,
                                  scores=scores(SCORES), seed=seed, progress=False, batch_size=4)
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


def _twin(net: nn.Module) -> nn.Module:
    from saliency_sanity.models import mnist_cnn

    return mnist_cnn(width=0.25, seed=7).eval()


def save(path: Path = FIXTURE) -> None:
    out, extra = everything()
    arrays: dict[str, np.ndarray] = dict(extra)
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
