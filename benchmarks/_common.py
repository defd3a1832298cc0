"""Shared pieces of the benchmarks: models, inputs, timers, a peak-memory meter, the floor.

Nothing here touches torch's global RNG: weights and inputs come from seeded
``torch.Generator`` objects. (Quantus seeds the global RNG itself, ``torch.manual_seed`` before
every layer it randomizes; the benchmarks that run Quantus accept that.)

The ResNet-18-shaped network uses ReLU modules that are NOT in-place: an in-place ReLU
overwrites a tensor that Captum's hooks (and guided-backprop style rules) still need, and breaks
some Captum/Quantus paths ("a view of a leaf Variable that requires grad is being used in an
in-place operation" or silently wrong gradients with module backward hooks).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from saliency_sanity import methods as _methods
from saliency_sanity import models as _models

# ---------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs, BN, ReLU modules, optional 1x1 downsample).

    Registration order equals execution order (conv1, bn1, conv2, bn2, downsample), as in
    torchvision, so Quantus' registration-order layer list and our execution-order blocks agree.
    """

    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()  # not in-place (see the module docstring)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu2(out + identity)


class ResNet18(nn.Module):
    """A ResNet-18-shaped classifier without torchvision: [2, 2, 2, 2] basic blocks, 64-512.

    Weights: Kaiming-normal convs (fan_out, as torchvision), BN weight 1 / bias 0, PyTorch's
    default Linear init, all drawn from ``torch.Generator().manual_seed(seed)``. BN running
    statistics are set to mildly random values (mean ~ N(0, 0.1), var ~ U(0.5, 1.5)) so the
    network behaves like a trained one in eval mode rather than like an identity BN.

    Example:
        >>> net = ResNet18(num_classes=10, seed=0)
        >>> net(torch.zeros(2, 3, 64, 64)).shape
        torch.Size([2, 10])
    """

    def __init__(self, num_classes: int = 1000, seed: int = 0, width: int = 64) -> None:
        super().__init__()
        with torch.device("meta"):
            self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.relu = nn.ReLU()
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            chans = [width, 2 * width, 4 * width, 8 * width]
            cin = width
            for i, c in enumerate(chans):
                stride = 1 if i == 0 else 2
                layer = nn.Sequential(BasicBlock(cin, c, stride), BasicBlock(c, c, 1))
                setattr(self, f"layer{i + 1}", layer)
                cin = c
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(cin, num_classes)
        self.to_empty(device="cpu")
        _init_resnet(self, torch.Generator().manual_seed(int(seed)))

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for name in ("layer1", "layer2", "layer3", "layer4"):
            x = getattr(self, name)(x)
        return self.head(x)


@torch.no_grad()
def _init_resnet(model: nn.Module, gen: torch.Generator) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=gen)
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.fill_(1.0)
            m.bias.zero_()
            m.running_mean.normal_(0.0, 0.1, generator=gen)
            m.running_var.uniform_(0.5, 1.5, generator=gen)
            m.num_batches_tracked.zero_()
        elif isinstance(m, nn.Linear):
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=gen)
            bound = 1.0 / math.sqrt(m.weight.shape[1])
            nn.init.uniform_(m.bias, -bound, bound, generator=gen)


def resnet18(num_classes: int = 1000, seed: int = 0) -> ResNet18:
    return ResNet18(num_classes=num_classes, seed=seed).eval()


def demo_cnn(seed: int = 0) -> nn.Module:
    """The project's demo model: the paper's MNIST CNN (random weights from ``seed``)."""
    return _models.mnist_cnn(seed=seed).eval()


@dataclass(frozen=True)
class ModelCase:
    name: str
    build: Callable[[], nn.Module]
    input_shape: tuple[int, int, int]


def model_case(name: str, size: int | None = None, num_classes: int = 1000) -> ModelCase:
    """``"cnn"`` (demo CNN, 1x28x28) or ``"resnet18"`` (3 x size x size, default 224)."""
    if name == "cnn":
        return ModelCase("cnn", demo_cnn, (1, 28, 28))
    if name == "resnet18":
        s = int(size or 224)
        return ModelCase(f"resnet18@{s}", lambda: resnet18(num_classes), (3, s, s))
    raise KeyError(f"unknown model {name!r}; known: cnn, resnet18")


def make_inputs(n: int, shape: Sequence[int], seed: int = 0) -> torch.Tensor:
    """``n`` inputs in [0, 1] (uniform), from a private generator."""
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(int(seed)))


# ---------------------------------------------------------------------------------------------
# methods with equal work on every side
# ---------------------------------------------------------------------------------------------


def method_spec(name: str, steps: int, samples: int, rule: str = "riemann_right") -> Any:
    """``(registry name, settings)`` for our library, equal-work settings made explicit."""
    if name == "gradient":
        return ("gradient", {})
    if name == "integrated_gradients":
        return ("integrated_gradients", {"steps": steps, "rule": rule})
    if name == "smoothgrad":
        return ("smoothgrad", {"samples": samples, "noise": 0.15})
    raise KeyError(f"unknown method {name!r}")


def passes_per_map(name: str, steps: int, samples: int) -> int:
    return {"gradient": 1, "integrated_gradients": steps, "smoothgrad": samples}[name]


# ---------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, float, Any]:
    """Wall seconds, process CPU seconds (all threads) and the output of ``fn()``.

    On a loaded machine with more torch threads than free cores, OpenMP barriers wait for
    descheduled threads and wall times measure the load, not the work: use ``--threads 1``
    there (then CPU time is a load-robust measure of the work) and report the load."""
    sync(device)
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, time.process_time() - c0, out


def interleaved(
    cases: dict[str, Callable[[], Any]],
    repeats: int,
    device: torch.device,
    warmup: dict[str, Callable[[], Any]] | None = None,
) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Run each case once as warm-up (``warmup`` cases if given, e.g. on a small input), then
    ``repeats`` rounds of every case in turn (A B C A B C ...). Returns the wall times per case,
    (under ``"<case>:cpu"``) the CPU times, and each case's last output. Interleaving spreads
    the load of a shared machine over all cases."""
    for fn in (warmup or cases).values():
        fn()
    times: dict[str, list[float]] = {}
    for k in cases:
        times[k], times[k + ":cpu"] = [], []
    outs: dict[str, Any] = {}
    for _ in range(repeats):
        for k, fn in cases.items():
            t, c, outs[k] = timed(fn, device)
            times[k].append(t)
            times[k + ":cpu"].append(c)
    return times, outs


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


# ---------------------------------------------------------------------------------------------
# machine description
# ---------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        load = os.getloadavg()
    except OSError:
        load = (math.nan,) * 3
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False,
            cwd=os.path.dirname(os.path.abspath(__file__)),
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"], capture_output=True, text=True,
            check=False, cwd=os.path.dirname(os.path.abspath(__file__)),
        ).stdout.strip()
    except OSError:
        commit, dirty = "?", ""
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "load_avg_1_5_15": [round(v, 2) for v in load],
        "commit": commit + ("+uncommitted-src" if dirty else ""),
    }


def print_machine(device: torch.device) -> None:
    m = machine()
    print(f"# {m['date']}  commit {m['commit']}  device {device}  cpu '{m['cpu']}' "
          f"({m['cores']} cores, torch threads {m['torch_threads']})  torch {m['torch']}  "
          f"load {m['load_avg_1_5_15']}")


def setup_threads(threads: int) -> None:
    torch.set_num_threads(int(threads))


# ---------------------------------------------------------------------------------------------
# command line and output
# ---------------------------------------------------------------------------------------------


def parser(doc: str | None, quick_help: str, threads: int, device: bool = False
           ) -> argparse.ArgumentParser:
    """A benchmark's parser (``doc`` as its description) with the options it starts with:
    ``--quick`` (``quick_help``), ``--device`` (cpu; only with ``device=True``), ``--threads``
    (default ``threads``). The benchmark adds its own after them."""
    p = argparse.ArgumentParser(description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help=quick_help)
    if device:
        p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=threads)
    return p


def start(p: argparse.ArgumentParser) -> argparse.Namespace:
    """Add ``--json`` (the last option: where :func:`write_rows` writes), parse the command
    line, set torch's thread count (``--threads``) and print the machine line (CPU); the parsed
    arguments."""
    p.add_argument("--json", default=None, help="write the rows here")
    args = p.parse_args()
    setup_threads(args.threads)
    print_machine(torch.device("cpu"))
    return args


def write_rows(path: str | None, rows: list[dict[str, Any]], **extra: Any) -> None:
    """``{"machine": ..., **extra, "rows": rows}`` as JSON to ``path`` (``--json``); nothing
    without a path."""
    if path:
        with open(path, "w") as fh:
            json.dump({"machine": machine(), **extra, "rows": rows}, fh, indent=1)


Ladder = list[tuple[ModelCase, int, list[str], int, int]]


def model_ladder(quick: bool, full: bool, repeats: int | None) -> tuple[Ladder, int]:
    """The cases of the benchmarks against a floor or a peer: (model case, repeats, methods,
    images, batch size) and the repeats asked for. ``quick``: every method on the demo CNN
    (8 images), gradient on the ResNet-18 at 32x32, 1 repeat; ``full``: every method on the
    CNN (32 images) and on the ResNet-18 at 224x224; otherwise gradient at 224 and IG and
    SmoothGrad at 32; 3 repeats unless ``repeats``. The ResNet at 224 runs once (at most)."""
    all_m = ["gradient", "integrated_gradients", "smoothgrad"]
    if quick:
        plan = [("cnn", None, all_m, 8, 8), ("resnet18", 32, ["gradient"], 8, 8)]
        repeats = repeats or 1
    elif full:
        plan = [("cnn", None, all_m, 32, 32), ("resnet18", 224, all_m, 8, 8)]
        repeats = repeats or 3
    else:
        plan = [("cnn", None, all_m, 32, 32), ("resnet18", 224, ["gradient"], 8, 8),
                ("resnet18", 32, ["integrated_gradients", "smoothgrad"], 8, 8)]
        repeats = repeats or 3
    cases = []
    for mname, size, meths, n, bs in plan:
        case = model_case(mname, size, num_classes=1000)
        reps = repeats if not (mname == "resnet18" and (size or 224) >= 224) else min(repeats, 1)
        cases.append((case, reps, meths, n, bs))
    return cases, repeats


def print_ladder_end(repeats: int) -> None:
    """The closing line of a :func:`model_ladder` benchmark: repeats and the machine's load."""
    print(f"# repeats: {repeats} (ResNet at 224: 1), medians; machine load at end: "
          f"{machine()['load_avg_1_5_15']}")


# ---------------------------------------------------------------------------------------------
# peak memory (CPU): each case in a fresh subprocess, its ru_maxrss
# ---------------------------------------------------------------------------------------------


def peak_rss_mib() -> float:
    """This process's peak resident set size so far, MiB (Linux reports KiB)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / 2**20


def run_child(script: str, args: Sequence[str], timeout: float = 1800) -> dict[str, Any]:
    """Run ``python script *args`` in a fresh process; it prints one JSON line last."""
    proc = subprocess.run(
        [sys.executable, script, *args], capture_output=True, text=True, timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# the compute floor
# ---------------------------------------------------------------------------------------------


@dataclass
class FloorPlan:
    """What the floor computes for one method: rows of perturbed inputs per pass."""

    method: str
    steps: int = 16
    samples: int = 8
    rows_per_pass: int = 64  # as our methods' internal_batch_size
    noise: float = 0.15
    rule: str = "riemann_right"
    extra: dict[str, Any] = field(default_factory=dict)


def _ig_points(x: torch.Tensor, alphas: Sequence[float]) -> torch.Tensor:
    a = torch.tensor(list(alphas), dtype=x.dtype, device=x.device).view(-1, *([1] * x.ndim))
    return (a * x.unsqueeze(0)).reshape(-1, *x.shape[1:])


def method_chunks(plan: FloorPlan, x: torch.Tensor, seed: int = 0) -> Iterator[torch.Tensor]:
    """The inputs of each forward/backward pass of one batch ``x`` (as our methods chunk them:
    ``rows_per_pass // len(x)`` copies of the batch per pass). Noise from a private generator."""
    if plan.method == "gradient":
        yield x
        return
    per = max(1, plan.rows_per_pass // x.shape[0])
    if plan.method == "integrated_gradients":
        from saliency_sanity.methods.gradient import quadrature

        alphas, _ = quadrature(plan.rule, plan.steps)
        for i in range(0, len(alphas), per):
            yield _ig_points(x, alphas[i:i + per])
        return
    if plan.method == "smoothgrad":
        gen = torch.Generator().manual_seed(seed)
        flat = x.reshape(x.shape[0], -1)
        sigma = (plan.noise * (flat.amax(1) - flat.amin(1))).view(-1, *([1] * (x.ndim - 1)))
        for i in range(0, plan.samples, per):
            k = min(per, plan.samples - i)
            eps = torch.randn((k, *x.shape), generator=gen).to(x.device)
            yield (x.unsqueeze(0) + eps * sigma).reshape(-1, *x.shape[1:])
        return
    raise KeyError(plan.method)


def floor_batch(model: nn.Module, x: torch.Tensor, plan: FloorPlan, seed: int = 0
                ) -> list[torch.Tensor]:
    """The forward and backward passes one (model, batch) needs in "predicted" target mode,
    nothing else: gradient = one forward with grad, targets = argmax of that same forward, one
    backward; IG / SmoothGrad = one no-grad forward on the clean batch for the targets, then one
    forward+backward per chunk of scaled / noisy copies. Returns the raw input gradients."""
    grads = []
    if plan.method == "gradient":
        xg = x.detach().requires_grad_(True)
        out = model(xg)
        t = out.argmax(1)
        (g,) = torch.autograd.grad(out.gather(1, t[:, None]).sum(), xg)
        return [g]
    with torch.no_grad():
        t = model(x).argmax(1)
    for pts in method_chunks(plan, x, seed):
        xg = pts.requires_grad_(True)
        out = model(xg)
        k = pts.shape[0] // x.shape[0]
        (g,) = torch.autograd.grad(out.gather(1, t.repeat(k)[:, None]).sum(), xg)
        grads.append(g)
    return grads


def floor_run(stage_models: Sequence[nn.Module], x: torch.Tensor, plan: FloorPlan,
              batch_size: int, collect: list[list[torch.Tensor]] | None = None) -> None:
    """Every stage model (pre-built), every batch: :func:`floor_batch`. Nothing kept (unless
    ``collect`` is given: it receives each stage's gradients, for tests)."""
    with torch.enable_grad():
        for model in stage_models:
            got = []
            for i in range(0, x.shape[0], batch_size):
                got += floor_batch(model, x[i:i + batch_size], plan, seed=i)
            if collect is not None:
                collect.append(got)


# -- the floor that reuses unchanged lower-layer activations (cascading) ---------------------


def segments(model: nn.Module) -> list[tuple[list[str], Callable[[torch.Tensor], torch.Tensor]]]:
    """The model as a chain of segments: (names of the parameterized modules inside, function).

    A cascading stage randomizes the top blocks; the segments below the lowest randomized one
    compute exactly what the trained model computes, so their activations can be reused.
    Defined for the demo CNN (4 segments, one layer each) and the ResNet-18 (stem, 8 residual
    blocks, head)."""
    if isinstance(model, ResNet18):
        segs: list[tuple[list[str], Callable[[torch.Tensor], torch.Tensor]]] = [
            (["conv1", "bn1"], model.stem)
        ]
        for lname in ("layer1", "layer2", "layer3", "layer4"):
            layer = getattr(model, lname)
            for j, blk in enumerate(layer):
                names = [f"{lname}.{j}.{n}" for n, m in blk.named_modules()
                         if any(True for _ in m.parameters(recurse=False))]
                segs.append((names, blk))
        segs.append((["fc"], model.head))
        return segs
    m: Any = model
    if hasattr(m, "conv1") and hasattr(m, "fc2") and hasattr(m, "pool2"):
        return [
            (["conv1"], lambda x: m.pool1(m.relu1(m.conv1(x)))),
            (["conv2"], lambda x: m.pool2(m.relu2(m.conv2(x)))),
            (["fc1"], lambda x: m.relu3(m.fc1(torch.flatten(x, 1)))),
            (["fc2"], m.fc2),
        ]
    raise TypeError(f"no segment split for {type(model).__name__}")


def first_changed_segment(model: nn.Module, randomized: set[str]) -> int:
    """Index of the lowest segment holding a randomized module (len(segments) if none)."""
    for i, (names, _) in enumerate(segments(model)):
        if randomized & set(names):
            return i
    return len(segments(model))


def reuse_floor_run(stage_models: Sequence[nn.Module], stage_layers: Sequence[set[str]],
                    x: torch.Tensor, plan: FloorPlan, batch_size: int,
                    collect: list[list[torch.Tensor]] | None = None) -> None:
    """The floor with reuse: batch by batch and pass by pass, the trained model's forward is run
    once with its graph kept; every cascading stage restarts the forward at its lowest changed
    segment from the kept activation and back-propagates through the new top and the kept
    bottom. Same gradients as :func:`floor_run` (up to float summation order); ``collect``
    receives them per stage, in :func:`floor_run`'s order, for tests."""
    segs = [segments(m) for m in stage_models]
    starts = [first_changed_segment(m, set(lay)) for m, lay in zip(stage_models, stage_layers,
                                                                   strict=True)]
    with torch.enable_grad():
        for i in range(0, x.shape[0], batch_size):
            xb = x[i:i + batch_size]
            if plan.method == "gradient":
                chunks: list[torch.Tensor] = [xb]
                targets: list[torch.Tensor | None] = [None] * len(stage_models)
            else:
                chunks = list(method_chunks(plan, xb, seed=i))
                targets = _reuse_targets(segs, starts, xb)
            per_stage: list[list[torch.Tensor]] = [[] for _ in stage_models]
            for pts in chunks:
                for k, g in enumerate(_reuse_chunk(segs, starts, pts, targets, xb.shape[0])):
                    per_stage[k].append(g)
            if collect is not None:
                if not collect:
                    collect.extend([] for _ in stage_models)
                for k, gs in enumerate(per_stage):
                    collect[k].extend(gs)


def _reuse_targets(segs: list[Any], starts: list[int], xb: torch.Tensor) -> list[Any]:
    """Each stage's predicted classes on the clean batch, reusing the trained activations."""
    with torch.no_grad():
        acts = [xb]
        for _, f in segs[0]:
            acts.append(f(acts[-1]))
        out: list[Any] = [acts[-1].argmax(1)]
        for s, start in zip(segs[1:], starts[1:], strict=True):
            h = acts[start]
            for _, f in s[start:]:
                h = f(h)
            out.append(h.argmax(1))
    return out


def _reuse_chunk(segs: list[Any], starts: list[int], pts: torch.Tensor, targets: list[Any],
                 bsz: int) -> list[torch.Tensor]:
    xg = pts.detach().requires_grad_(True)
    acts = [xg]
    for _, f in segs[0]:
        acts.append(f(acts[-1]))
    k = pts.shape[0] // bsz
    grads = []
    last = len(segs) - 1
    for si, (s, start) in enumerate(zip(segs, starts, strict=True)):
        if si == 0:
            out = acts[-1]
        else:
            h = acts[start]
            for _, f in s[start:]:
                h = f(h)
            out = h
        t = out.argmax(1) if targets[si] is None else targets[si].repeat(k)
        (g,) = torch.autograd.grad(out.gather(1, t[:, None]).sum(), xg, retain_graph=si < last)
        grads.append(g)
    return grads


def stage_models_for(model: nn.Module, x_example: torch.Tensor, init: str = "paper",
                     seed: int = 0, blocks: Sequence[Any] | None = None
                     ) -> tuple[list[nn.Module], list[set[str]]]:
    """Pre-built cascading stage models (our randomization) and each stage's randomized layers
    (module names)."""
    from saliency_sanity import randomized_models

    models, layers = [], []
    by_block: dict[str, tuple[str, ...]] = {}
    rm = randomized_models(model, order="cascading", init=init, seed=seed,
                           example_input=x_example, blocks=blocks)
    for b in rm.blocks:
        by_block[b.name] = b.modules
    for st in rm:
        models.append(st.model)
        layers.append({mname for bname in st.layers for mname in by_block[bname]})
    return models, layers


def our_maps(model: nn.Module, x: torch.Tensor, name: str, steps: int, samples: int) -> Any:
    """Our library's maps for one batch (predicted targets): for correctness tests."""
    spec = method_spec(name, steps, samples)
    return _methods.get(spec[0], **spec[1])(model, x, "predicted")
