"""One calling convention for every check: ``check(model, data, *, <own options>, config=None,
**common)``. The common settings come only through ``config`` or keywords, a keyword replaces
the one in ``config``, and the seed of ``config`` reaches the recorded settings and run.json."""

from __future__ import annotations

import dataclasses
import inspect
import json

import pandas as pd
import pytest
import torch
import zoo

from saliency_sanity import checks, data, training
from saliency_sanity.checks.blockmnist import blockmnist_experiment
from saliency_sanity.engine import RunConfig
from saliency_sanity.grids import GridSet

pytestmark = pytest.mark.usefixtures("one_thread")
COMMON = {f.name for f in dataclasses.fields(RunConfig)}
QUIET = {"progress": False}

#: every check and how many arguments it takes positionally (model(s) and data)
CHECKS = {
    "model_randomization_test": 2,
    "smooth_model_randomization_test": 2,
    "efficient_model_randomization_test": 2,
    "random_logit_test": 2,
    "activation_scale_analysis": 2,
    "faithfulness_test": 2,
    "localization_test": 2,
    "compare_models": 3,
    "data_randomization_test": 2,
    "diffroar": 3,
}


def _fn(name: str):
    return blockmnist_experiment if name == "blockmnist_experiment" else getattr(checks, name)


@pytest.mark.parametrize("name", [*CHECKS, "blockmnist_experiment"])
def test_signature_follows_the_convention(name):
    params = list(inspect.signature(_fn(name)).parameters.values())
    n = CHECKS.get(name, 1)
    assert all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params[:n]), params[:n]
    rest = params[n:]
    assert all(p.kind in (p.KEYWORD_ONLY, p.VAR_KEYWORD) for p in rest), rest
    assert rest[-1].kind is inspect.Parameter.VAR_KEYWORD and rest[-2].name == "config"
    own = {p.name for p in params} & COMMON
    assert not own, f"{name} has common settings as own parameters: {own}"


def _grids():
    return GridSet(torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0)),
                   torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0]]), torch.zeros(2, 4).long())


def _loc_net():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(3, 4))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return net


def _engine_runs():
    """(name, call(**kw)) for the checks on the engine: each returns a CheckResult."""
    model, x = zoo.make("cnn")
    twin, _ = zoo.make("cnn", seed=5)
    m = {"methods": ["gradient"], "controls": False}
    s = {"scores": ["spearman_abs"]}
    return {
        "model_randomization_test": lambda **kw: checks.model_randomization_test(
            model, x, **m, **s, **kw),
        "smooth_model_randomization_test": lambda **kw: checks.smooth_model_randomization_test(
            model, x, **m, **s, samples=2, **kw),
        "efficient_model_randomization_test":
            lambda **kw: checks.efficient_model_randomization_test(model, x, **m, bins=5, **kw),
        "random_logit_test": lambda **kw: checks.random_logit_test(model, x, **m, **s, **kw),
        "activation_scale_analysis": lambda **kw: checks.activation_scale_analysis(
            model, x, **kw),
        "faithfulness_test": lambda **kw: checks.faithfulness_test(
            model, x, **m, metrics=["pixel_flipping"],
            settings={"pixel_flipping": {"pixels_per_step": 0.25}}, **kw),
        "localization_test": lambda **kw: checks.localization_test(
            _loc_net(), _grids(), **m, settings=["difull"], layers=["input"], **kw),
        "compare_models": lambda **kw: checks.compare_models(model, twin, x, **m, **s, **kw),
    }


ENGINE = list(_engine_runs())


@pytest.mark.parametrize("name", ENGINE)
def test_config_is_honoured_and_a_keyword_overrides_it(name, tmp_path):
    run = _engine_runs()[name]
    cfg = RunConfig(seed=5, batch_size=2, run_dir=tmp_path / "r", progress=False)
    res = run(config=cfg)
    assert res.settings["seed"] == 5 and res.settings["batch_size"] == 2
    saved = json.loads((tmp_path / "r" / "run.json").read_text())
    assert saved["check"] == res.check and saved["settings"]["seed"] == 5
    again = run(config=dataclasses.replace(cfg, run_dir=None))  # same numbers without a store
    pd.testing.assert_frame_equal(res.table.reset_index(drop=True),
                                  again.table.reset_index(drop=True), check_dtype=False)
    over = run(config=cfg, seed=7, run_dir=None)
    assert over.settings["seed"] == 7 and over.settings["batch_size"] == 2


def test_localization_config_seed_and_run_dir_regression(tmp_path):
    """``localization_test(model, grids, config=RunConfig(seed=5, run_dir=d))`` used seed 0 and
    no run directory: its own ``seed=0, run_dir=None`` keywords were merged over ``config``."""
    d = tmp_path / "d"
    res = checks.localization_test(_loc_net(), _grids(), methods=["gradient"],
                                   settings=["difull"], layers=["input"], controls=False,
                                   config=RunConfig(seed=5, run_dir=d, progress=False))
    assert res.settings["seed"] == 5
    assert json.loads((d / "run.json").read_text())["settings"]["seed"] == 5


def test_from_record_round_trip(tmp_path):
    """A run rebuilt from its run.json with ``RunConfig.from_record`` records the same settings
    (fingerprint included) and gives the same table."""
    model, x = zoo.make("cnn")
    cfg = RunConfig(seed=5, batch_size=2, device="cpu", target_mode="predicted",
                    controls=False, n_examples=1, progress=False, run_dir=tmp_path / "a")
    kw = {"methods": ["gradient"], "scores": ["spearman_abs"]}
    first = checks.model_randomization_test(model, x, config=cfg, **kw)
    record = json.loads((tmp_path / "a" / "run.json").read_text())
    rebuilt = RunConfig.from_record(record)
    assert dataclasses.replace(rebuilt, progress=False, run_dir=cfg.run_dir) == cfg
    second = checks.model_randomization_test(
        model, x, config=dataclasses.replace(rebuilt, run_dir=tmp_path / "b"), progress=False,
        **kw)
    assert json.loads((tmp_path / "b" / "run.json").read_text())["settings"] == \
        record["settings"]
    pd.testing.assert_frame_equal(first.table, second.table, check_exact=True)
    assert RunConfig.from_record(record["settings"]) == rebuilt


def test_from_record_bad_input():
    with pytest.raises(TypeError, match="run.json"):
        RunConfig.from_record([1, 2])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="settings"):
        RunConfig.from_record({"settings": 3})


def test_config_must_be_a_run_config():
    model, x = zoo.make("cnn")
    with pytest.raises(TypeError, match="RunConfig"):
        checks.model_randomization_test(model, x, config={"seed": 5})  # type: ignore[arg-type]


# ------------------------------------------------------------------ checks that train models
def _tiny_roar(**kw):
    ds = data.load("mnist", n_train=48, n_test=24)
    return checks.diffroar("mnist_mlp", ds, None, method="random", ks=(1.0, 0.5), repeats=1,
                           trainer=training.TrainConfig(epochs=1, target_train_acc=None),
                           model_kwargs={"width": 0.02}, cache_dir=False, **kw)


def test_diffroar_takes_the_common_settings_from_config(tmp_path):
    cfg = RunConfig(seed=5, run_dir=tmp_path / "d", progress=False)
    r = _tiny_roar(config=cfg)
    assert r.settings["seed"] == 5
    assert sorted(p.name for p in (tmp_path / "d" / "units").iterdir()) == [
        "k0.5-bottom-r0.json", "k0.5-top-r0.json", "k1-bottom-r0.json", "k1-top-r0.json"]
    seeds = json.loads((tmp_path / "d" / "units" / "k1-top-r0.json").read_text())["seed"]
    over = _tiny_roar(config=cfg, seed=7, run_dir=None)
    assert over.settings["seed"] == 7 and over.table["seed"].iloc[0] != seeds
    assert _tiny_roar(seed=5, progress=False).table["seed"].tolist() == \
        r.table["seed"].tolist()


@pytest.mark.filterwarnings("ignore:data randomization comparison is INVALID")
def test_data_randomization_takes_the_common_settings_from_config(tmp_path):
    ds = data.load("mnist", n_train=64, n_test=16, seed=0)
    kw = {"model_kwargs": {"width": 0.05}, "n_samples": 4, "methods": ["gradient"],
          "scores": ["spearman_abs"], "controls": False, "cache_dir": tmp_path / "cache",
          "true_config": training.TrainConfig.true_labels(epochs=1),
          "random_config": training.TrainConfig.random_labels(0, epochs=1)}
    cfg = RunConfig(seed=5, run_dir=tmp_path / "d", progress=False)
    res = checks.data_randomization_test(ds, "mnist_mlp", config=cfg, **kw)
    assert res.settings["seed"] == 5
    assert json.loads((tmp_path / "d" / "run.json").read_text())["settings"]["seed"] == 5
    over = checks.data_randomization_test(ds, "mnist_mlp", config=cfg, run_dir=None,
                                          batch_size=2, **kw)
    assert over.settings["seed"] == 5 and over.settings["batch_size"] == 2


def test_diffroar_rejects_common_settings_it_does_not_use():
    with pytest.raises(ValueError, match="diffroar does not use the common setting.*dtype"):
        _tiny_roar(dtype="bfloat16", progress=False)


def test_blockmnist_takes_the_seed_from_config():
    kw = {"n_train": 32, "n_test": 16, "n_maps": 4, "classes": 2, "epochs": 1,
          "width": 0.05, "cache_dir": False}
    out = blockmnist_experiment(**kw, config=RunConfig(seed=5, progress=False))
    assert out["settings"]["seed"] == 5 and out["settings"]["train_config"]["seed"] == 5
    over = blockmnist_experiment(**kw, config=RunConfig(seed=5, progress=False), seed=3)
    assert over["settings"]["seed"] == 3
    with pytest.raises(ValueError, match="does not use the common setting.*run_dir"):
        blockmnist_experiment(**kw, run_dir="x", progress=False)
