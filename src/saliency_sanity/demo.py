"""The built-in demo: the paper's MNIST CNN on real MNIST, cascading randomization, all methods."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .critiques import CritiqueOptions, CritiqueOutcome
from .engine.accuracy import model_accuracy as model_accuracy  # re-exported: demo's API
from .engine.accuracy import record_accuracy
from .results import CheckResult

#: Methods of the demo: None = every default method that applies, with the papers' settings,
#: exactly what a user's model gets (``saliency_sanity.methods.defaults``).
DEMO_METHODS: Any = None
#: Controls of the demo: True = the default controls, as for a user's model.
DEMO_CONTROLS: Any = True

#: The demo's critiques, cheap enough to keep the whole demo under 5 minutes on 2 cores: the
#: activation scales; eMPRT (100 bins) and the random logit test for every demo method and
#: control; sMPRT with 10 noisy samples (noise 0.1, second-moment normalization, bottom-up) for
#: three cheap methods; the faithfulness check (region perturbation and ROAD with the check's
#: defaults) for every method and control, whose scores join the method ranking. Method
#: settings are the main run's.
DEMO_CRITIQUES = CritiqueOptions(
    smprt=True, emprt=True, random_logit=True, activation_scales=True,
    smprt_samples=10, smprt_noise=0.1,
    smprt_methods=["gradient", "gradient_x_input", "guided_backprop"],
    faithfulness=True, faithfulness_metrics=("region_perturbation", "road"),
)


@dataclass
class DemoRun:
    """What :func:`demo_run` produced: the main result, the run directory and what the
    critiques did (None when they were not run)."""

    result: CheckResult
    out: Path
    outcome: CritiqueOutcome | None


def demo_model(seed: int = 0, cache_dir: str | os.PathLike | None = None, progress: bool = True):
    """The paper's MNIST CNN trained on 4,000 real MNIST images (cached after the first run).

    Returns ``(train_result, dataset)``.
    """
    from . import data, training

    ds = data.load("mnist", n_train=4000, n_test=1000, seed=seed)
    cfg = training.TrainConfig(epochs=6, lr=1e-3, batch_size=64, seed=seed,
                               target_train_acc=None, label_seed=None)
    res = training.train("mnist_cnn", ds, cfg, cache_dir=cache_dir, progress=progress)
    return res, ds


#: the localization part of the demo: cheap methods, two settings, input and final layer
DEMO_LOCALIZATION = {"methods": ["gradient", "gradient_x_input", "gradcam"],
                     "settings": ["gridpg", "difull"], "layers": ["input", "final"],
                     "count": 16}


def demo_localization(model: Any, ds: Any, out: str | os.PathLike, seed: int = 0,
                      progress: bool = True, log: Callable[[str], None] = print) -> CheckResult:
    """The demo's localization part (Rao et al. 2022): 16 grids of 2 x 2 confidently classified
    MNIST test images, GridPG and DiFull at the input and the final layer, smoothing on; its own
    run directory ``out`` (report, figures, ``grids.npz``). About 15-55 s on 2 cores.

    Example:
        >>> DEMO_LOCALIZATION["settings"]
        ['gridpg', 'difull']
    """
    from .checks import localization_test
    from .grids import make_grids
    from .report import write_run

    t0 = time.perf_counter()
    grids = make_grids(model, ds.x_test, ds.y_test, n=2, count=DEMO_LOCALIZATION["count"],
                       seed=seed)
    result = localization_test(model, grids, methods=DEMO_LOCALIZATION["methods"],
                               settings=DEMO_LOCALIZATION["settings"],
                               layers=DEMO_LOCALIZATION["layers"], smoothing=True, seed=seed,
                               controls=False, progress=progress, run_dir=out)
    result.settings["data"] = f"mnist test split, {len(grids)} grids of 2x2 (seed {seed})"
    run = write_run(result, out, command=None)
    grids.save(Path(run) / "grids.npz")
    t = result.table
    t = t[t["metric"] == "localization"]

    def mean(setting: str, method: str, layer: str) -> float:
        sel = t[(t["setting"] == setting) & (t["method"] == method) & (t["layer"] == layer)]
        return float(sel["value"].mean())

    log(f"localization ({time.perf_counter() - t0:.0f} s): GridPG Grad-CAM at the final layer "
        f"{mean('gridpg', 'gradcam', 'final'):.3f} vs gradient at the input "
        f"{mean('gridpg', 'gradient', 'input'):.3f} (chance 0.25); DiFull gradient at the input "
        f"{mean('difull', 'gradient', 'input'):.3f} (1.0 = nothing outside the cell); "
        f"{run}/report.html")
    return result


def run_demo(out: str | os.PathLike = "saliency-sanity-demo", n_samples: int = 16, seed: int = 0,
             cache_dir: str | os.PathLike | None = None, progress: bool = True,
             log: Callable[[str], None] = print,
             critiques: CritiqueOptions | None = DEMO_CRITIQUES) -> tuple[CheckResult, Path]:
    """Train (or load) the demo model, run the cascading test and the critiques
    (``critiques``; None skips them), write the run directory. Returns ``(result, out)``.

    Example:
        >>> # result, out = run_demo("demo-run")   # about 4 minutes on 2 cores
        >>> DEMO_CRITIQUES.smprt_samples
        10
    """
    run = demo_run(out, n_samples, seed, cache_dir, progress, log, critiques)
    return run.result, run.out


def demo_run(out: str | os.PathLike = "saliency-sanity-demo", n_samples: int = 16, seed: int = 0,
             cache_dir: str | os.PathLike | None = None, progress: bool = True,
             log: Callable[[str], None] = print,
             critiques: CritiqueOptions | None = DEMO_CRITIQUES,
             localization: bool = True) -> DemoRun:
    """:func:`run_demo` returning a :class:`DemoRun` (with the critiques' outcome);
    ``localization`` adds :func:`demo_localization` in ``out/localization``.

    Example:
        >>> # run = demo_run("demo-run", critiques=None); run.outcome is None
    """
    from .checks import model_randomization_test
    from .report import write_run

    t0 = time.perf_counter()
    trained, ds = demo_model(seed=seed, cache_dir=cache_dir, progress=progress)
    where = "loaded from cache" if trained.from_cache else "trained"
    log(f"model: mnist_cnn {where}; train acc {trained.train_acc:.3f}, "
        f"test acc {trained.test_acc:.3f} ({time.perf_counter() - t0:.0f} s)")
    x = ds.x_test[:n_samples]
    result = model_randomization_test(
        trained.model, x, methods=DEMO_METHODS, controls=DEMO_CONTROLS, order="cascading",
        init="paper", seed=seed, batch_size=8, progress=progress, run_dir=out,
    )
    result.settings["model"] = {"name": "mnist_cnn", "train_acc": trained.train_acc,
                                "test_acc": trained.test_acc, "cache_key": trained.key}
    result.settings["data"] = f"mnist test split (first {n_samples} images, seed {seed})"
    labels = getattr(ds, "y_test", None)  # a data set without test labels: not measured
    record_accuracy(result, trained.model, x, None if labels is None else labels[:n_samples])
    command = ["saliency-sanity", "demo", "--out", str(out), "--n-samples", str(n_samples),
               "--seed", str(seed)]
    if critiques is None:
        command.append("--no-critiques")
    elif critiques.any():
        result.settings["critiques"] = critiques.settings()
    out_dir = write_run(result, out, command=command)
    log(f"main check done ({time.perf_counter() - t0:.0f} s)")
    outcome = None
    if critiques is not None and critiques.any():
        from .critiques import run_critiques
        from .report import build_report

        outcome = run_critiques(result, out_dir, critiques, model=trained.model, x=x,
                                methods=DEMO_METHODS, controls=DEMO_CONTROLS,
                                progress=progress, log=log)
        build_report(out_dir, result=result)
    if localization:
        demo_localization(trained.model, ds, out_dir / "localization", seed=seed,
                          progress=progress, log=log)
    log(f"done in {time.perf_counter() - t0:.0f} s")
    return DemoRun(result, out_dir, outcome)
