"""Scale-out: the model randomization test on the local backend vs Ray with 1 and 2 workers.

Cases (one process; each Ray cluster started here, ``ray.init(num_cpus=k)``, shut down after):

1. **wall time**: the demo CNN (1x28x28, random seeded weights), 32 images in 8 units of 4,
   gradient + integrated gradients (16 steps) + SmoothGrad (8 samples), cascading with the null
   reference. Local (1 torch thread, and 2 threads as the one-process reference), Ray with 1
   worker and with 2 workers (1 thread each: tasks use the driver's thread count, so the tables
   are the local ones bit for bit; checked). Runs are interleaved (local, Ray, local, Ray, ...)
   after one untimed Ray run that starts the workers.
2. **Ray overhead per unit**: a tiny MLP, 64 units of one input, gradient only (~ms of work per
   unit), 1 worker: (Ray wall - local wall) / units.
3. **mixed precision** (``dtype="bfloat16"``) against float32 on the demo CNN: the error of the
   maps (relative L2) and of the table's scores (max and mean absolute difference), and the time.
4. **retrainings** (DiffROAR): the random-map control on MNIST (1000 training, 200 test
   images), ks 1 and 0.5, 2 repeats: 8 retrainings of the MNIST CNN (width 0.25, 2 epochs) as
   8 units; local (1 thread) vs Ray with 1 and 2 workers, interleaved; tables checked equal.
5. **cost per unit at paper-like scale** (``--paper``): one unit of the ResNet-18-shaped network
   (``_common.resnet18``) at 3x224x224, 2 images, gradient, every cascading stage, no null
   reference: seconds per unit on this machine.

Run: ``python benchmarks/bench_scaling.py`` (~5 min on 2 cores), ``--quick``, ``--paper``.
No GPU figures here: ``--device cuda`` runs the same cases on a GPU (one GPU per Ray task).
"""

from __future__ import annotations

import argparse
import json
import time

import _common as C
import pandas as pd
import torch
from torch import nn

from saliency_sanity import model_randomization_test

CASE = dict(methods={"gradient": "gradient",
                     "integrated_gradients": ("integrated_gradients", {"steps": 16}),
                     "smoothgrad": ("smoothgrad", {"samples": 8})},
            scores=["spearman_abs"], controls=False, progress=False)


def _run(model: nn.Module, x: torch.Tensor, **kw) -> tuple[float, pd.DataFrame]:
    t0 = time.perf_counter()
    r = model_randomization_test(model, x, **kw)
    return time.perf_counter() - t0, r.table


def wall_times(device: str, repeats: int, n: int, batch: int) -> dict[str, object]:
    import ray

    model = C.demo_cnn().to(device)
    x = C.make_inputs(n, (1, 28, 28), seed=1).to(device)
    kw = dict(CASE, batch_size=batch, device=device)
    out: dict[str, object] = {"units": n // batch, "images": n, "batch": batch}
    torch.set_num_threads(2)
    out["local_2_threads_s"] = C.median([_run(model, x, **kw)[0] for _ in range(repeats)])
    torch.set_num_threads(1)
    _, ref = _run(model, x, **kw)
    for workers in (1, 2):
        ray.init(num_cpus=workers, include_dashboard=False, object_store_memory=100 * 2**20,
                 logging_level="warning")
        try:
            _run(model, x, backend="ray", **kw)  # starts the workers (not timed)
            loc, on_ray = [], []
            for _ in range(repeats):
                loc.append(_run(model, x, **kw)[0])
                t, table = _run(model, x, backend="ray", **kw)
                on_ray.append(t)
                assert table.equals(ref), "Ray table differs from the local one"
            out[f"local_1_thread_s_vs_{workers}w"] = C.median(loc)
            out[f"ray_{workers}_workers_s"] = C.median(on_ray)
        finally:
            ray.shutdown()
    out["speedup_2w_vs_local_1_thread"] = (out["local_1_thread_s_vs_2w"]
                                           / out["ray_2_workers_s"])
    out["speedup_2w_vs_1w"] = out["ray_1_workers_s"] / out["ray_2_workers_s"]
    return out


def retrainings(repeats: int, n_train: int) -> dict[str, object]:
    import ray

    from saliency_sanity import data, training
    from saliency_sanity.checks.roar import diffroar

    ds = data.load("mnist", n_train=n_train, n_test=200)
    kw = dict(ks=(1.0, 0.5), repeats=2, model_kwargs={"width": 0.25}, cache_dir=False,
              progress=False, trainer=training.TrainConfig(epochs=2, target_train_acc=None))
    cols = ["k", "side", "repeat", "seed", "test_acc", "train_acc", "epochs"]

    def run(**extra: object) -> tuple[float, pd.DataFrame]:
        t0 = time.perf_counter()
        r = diffroar("mnist_cnn", ds, None, method="random", **kw, **extra)
        return time.perf_counter() - t0, r.table[cols]

    torch.set_num_threads(1)
    _, ref = run()
    out: dict[str, object] = {"units": 8, "n_train": n_train, "epochs": 2}
    for workers in (1, 2):
        ray.init(num_cpus=workers, include_dashboard=False, object_store_memory=100 * 2**20,
                 logging_level="warning")
        try:
            run(backend="ray")  # starts the workers (not timed)
            loc, on_ray = [], []
            for _ in range(repeats):
                loc.append(run()[0])
                t, table = run(backend="ray")
                on_ray.append(t)
                assert table.equals(ref), "Ray table differs from the local one"
            out[f"local_s_vs_{workers}w"] = C.median(loc)
            out[f"ray_{workers}_workers_s"] = C.median(on_ray)
        finally:
            ray.shutdown()
    out["speedup_2w_vs_local"] = out["local_s_vs_2w"] / out["ray_2_workers_s"]
    out["speedup_2w_vs_1w"] = out["ray_1_workers_s"] / out["ray_2_workers_s"]
    return out


def overhead(device: str, repeats: int, units: int) -> dict[str, object]:
    import ray

    gen = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).to(device)
    x = torch.rand(units, 16, generator=gen).to(device)
    kw = dict(methods=["gradient"], scores=["pearson"], controls=False, progress=False,
              batch_size=1, null_reference=False, device=device)
    torch.set_num_threads(1)
    ray.init(num_cpus=1, include_dashboard=False, object_store_memory=100 * 2**20,
             logging_level="warning")
    noop = ray.remote(_noop)
    try:
        _run(net, x, backend="ray", **kw)
        loc, on_ray, trip = [], [], []
        for _ in range(repeats):
            loc.append(_run(net, x, **kw)[0])
            on_ray.append(_run(net, x, backend="ray", **kw)[0])
            t0 = time.perf_counter()
            for _ in range(units):  # one task at a time: submit, wait, fetch
                ray.get(noop.remote())
            trip.append(time.perf_counter() - t0)
    finally:
        ray.shutdown()
    lo, ra = C.median(loc), C.median(on_ray)
    return {"units": units, "local_s": lo, "ray_1_worker_s": ra,
            "local_ms_per_unit": 1e3 * lo / units,
            "ray_overhead_ms_per_unit": 1e3 * (ra - lo) / units,
            "noop_task_round_trip_ms": 1e3 * C.median(trip) / units}


def _noop() -> int:
    return 0


def precision(device: str, n: int) -> dict[str, object]:
    torch.set_num_threads(1)
    model = C.demo_cnn().to(device)
    x = C.make_inputs(n, (1, 28, 28), seed=1).to(device)
    kw = dict(CASE, scores=["spearman_abs", "ssim"], batch_size=n, n_examples=n,
              device=device)
    t32, r32 = _timed(model, x, kw)
    t16, r16 = _timed(model, x, dict(kw, dtype="bfloat16"))
    out: dict[str, object] = {"float32_s": t32, "bfloat16_s": t16}
    for label in CASE["methods"]:
        a = torch.from_numpy(r32.examples["maps"][label][0])
        b = torch.from_numpy(r16.examples["maps"][label][0])
        out[f"map_rel_l2_{label}"] = float((a - b).norm() / a.norm())
    d = (r32.table["value"] - r16.table["value"]).abs()
    for metric in ("spearman_abs", "ssim"):
        dm = d[r32.table["metric"] == metric]
        out[f"score_abs_err_max_{metric}"] = float(dm.max())
        out[f"score_abs_err_mean_{metric}"] = float(dm.mean())
    return out


def _timed(model: nn.Module, x: torch.Tensor, kw: dict) -> tuple[float, object]:
    t0 = time.perf_counter()
    r = model_randomization_test(model, x, **kw)
    return time.perf_counter() - t0, r


def paper_unit(device: str, threads: int) -> dict[str, object]:
    torch.set_num_threads(threads)
    model = C.resnet18(1000).to(device)
    x = C.make_inputs(2, (3, 224, 224), seed=1).to(device)
    t0 = time.perf_counter()
    r = model_randomization_test(model, x, methods=["gradient"], scores=["spearman_abs"],
                                 controls=False, progress=False, batch_size=2,
                                 null_reference=False, device=device)
    wall = time.perf_counter() - t0
    return {"model": "resnet18-shape 3x224x224", "images_per_unit": 2, "threads": threads,
            "stages": len(r.stages), "seconds_per_unit": wall,
            "seconds_per_image_stage": wall / (2 * len(r.stages))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--paper", action="store_true", help="also the ResNet-18 unit at 224")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    reps = 1 if args.quick else args.repeats
    C.print_machine(torch.device(args.device))
    res = {"machine": C.machine()}
    res["wall"] = wall_times(args.device, reps, 16 if args.quick else 32, 4)
    print("wall:", json.dumps(res["wall"], indent=1))
    if args.device == "cpu":
        res["retrain"] = retrainings(reps, 300 if args.quick else 1000)
        print("retrain:", json.dumps(res["retrain"], indent=1))
    res["overhead"] = overhead(args.device, reps, 32 if args.quick else 64)
    print("overhead:", json.dumps(res["overhead"], indent=1))
    res["precision"] = precision(args.device, 8)
    print("precision:", json.dumps(res["precision"], indent=1))
    if args.paper:
        res["paper_unit"] = paper_unit(args.device, 1)
        print("paper unit:", json.dumps(res["paper_unit"], indent=1))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=1)


if __name__ == "__main__":
    main()
