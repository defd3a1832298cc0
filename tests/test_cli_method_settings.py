"""``--method-settings``: settings of the methods reach them from the command line, errors exit 2
before anything is written, box-bounded LRP gets the data's range."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import zoo

from saliency_sanity import localization_test, methods
from saliency_sanity.checks import faithfulness_test, model_randomization_test
from saliency_sanity.cli import main
from saliency_sanity.cli._method_settings import parse
from saliency_sanity.grids import GridSet
from saliency_sanity.models import MnistCNN


def cnn_factory():
    return zoo.make("cnn")[0]


def small_cnn():
    return MnistCNN(width=0.25, seed=0).eval()


def _mr(npz, out, *extra):
    return main(["model-randomization", "--model", "test_cli_method_settings:cnn_factory",
                 "--data", str(npz), "--scores", "spearman", "--controls", "none",
                 "--out", str(out), "--no-progress", *extra])


def _sorted(table):
    """The values ordered by every other column (compared as text: a CSV and a live table)."""
    keys = [c for c in table.columns if c != "value"]
    text = table[keys].fillna("").astype(str)
    return table["value"].to_numpy()[np.lexsort([text[k] for k in reversed(keys)])]


def _values(out):
    return _sorted(pd.read_csv(out / "results.csv"))


def test_settings_reach_the_method_as_through_the_api(tmp_path, npz):
    out = tmp_path / "run"
    rc = _mr(npz, out, "--methods", "occlusion,gradient",
             "--method-settings", 'occlusion={"patch": 4, "stride": 4}')
    assert rc == 0
    run = json.loads((out / "run.json").read_text())
    assert run["settings"]["method_settings"] == {"occlusion": {"patch": 4, "stride": 4}}
    occ = run["settings"]["methods"]["occlusion"]
    assert (occ["patch"], occ["stride"]) == ([4, 4], [4, 4])
    model, x = zoo.make("cnn")
    api = model_randomization_test(
        model, x, methods={"occlusion": ("occlusion", {"patch": 4, "stride": 4}),
                           "gradient": "gradient"},
        scores=["spearman"], controls=[], seed=0, progress=False)
    t = pd.read_csv(out / "results.csv")
    np.testing.assert_allclose(_values(out), _sorted(api.table), rtol=0, atol=1e-12)
    # the default occlusion (one 16 x 16 patch) gives other maps: the settings mattered
    with pytest.warns(RuntimeWarning, match="constant maps"):  # one patch: constant maps
        default = model_randomization_test(model, x, methods=["occlusion"],
                                           scores=["spearman"], controls=[], seed=0,
                                           progress=False).table
    mine = _sorted(t[t["method"] == "occlusion"].reset_index(drop=True))
    assert mine.shape == _sorted(default).shape
    assert not np.allclose(mine, _sorted(default), equal_nan=True)


def test_json_file_and_faithfulness_map(tmp_path, npz):
    f = tmp_path / "settings.json"
    f.write_text(json.dumps({"rise": {"n_masks": 40, "s": 4}}))
    out = tmp_path / "faith"
    rc = main(["faithfulness", "--model", "test_cli_method_settings:cnn_factory", "--data",
               str(npz), "--methods", "rise", "--method-settings", str(f), "--metrics",
               "deletion", "--controls", "none", "--no-random-order", "--out", str(out),
               "--no-progress"])
    assert rc == 0
    run = json.loads((out / "run.json").read_text())
    assert run["settings"]["methods"]["rise"]["n_masks"] == 40
    model, x = zoo.make("cnn")
    api = faithfulness_test(model, x, methods={"rise": ("rise", {"n_masks": 40, "s": 4})},
                            metrics=["deletion"], random_order=False, controls=[], seed=0,
                            progress=False)
    np.testing.assert_allclose(_values(out), _sorted(api.table), rtol=0, atol=1e-12)


@pytest.mark.parametrize("settings, message", [
    ('rise={"n_masks": 10}', "'rise', which --methods (gradient, occlusion) does not list"),
    ('occlusion={"patchh": 4}', "patchh"),
    ('occlusion={"patch": 4,}', "character 23"),
    ('occlusion=[4]', "must be a JSON object"),
    ("no_such_file.json", "no such file"),
])
def test_errors_exit_2_and_write_nothing(tmp_path, npz, capsys, settings, message):
    out = tmp_path / "out"
    rc = _mr(npz, out, "--methods", "gradient,occlusion", "--method-settings", settings)
    assert rc == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not out.exists()


def test_settings_need_methods(tmp_path, npz, capsys):
    out = tmp_path / "out"
    assert _mr(npz, out, "--method-settings", 'rise={"n_masks": 10}') == 2
    assert "needs --methods" in capsys.readouterr().err
    assert not out.exists()


def test_parse_positions_and_both_forms():
    assert parse('a={"x": "p;q"};b={}') == {"a": {"x": "p;q"}, "b": {}}
    assert parse('{"a": {"x": 1}}') == parse('a={"x": 1}')
    with pytest.raises(ValueError, match="character 8"):
        parse('a={"x" 1}')
    with pytest.raises(ValueError, match="given twice"):
        parse('a={};a={}')


def test_other_settings_are_not_mixed_into_a_run(tmp_path, npz, capsys):
    out = tmp_path / "run"
    assert _mr(npz, out, "--methods", "occlusion",
               "--method-settings", 'occlusion={"patch": 4, "stride": 4}') == 0
    before = (out / "results.csv").read_bytes()
    assert _mr(npz, out, "--methods", "occlusion",
               "--method-settings", 'occlusion={"patch": 8, "stride": 8}') == 2
    assert "other settings" in capsys.readouterr().err
    assert (out / "results.csv").read_bytes() == before


def test_lrp_box_bounds_from_data_equal_explicit(tmp_path, npz, capsys):
    _, x = zoo.make("cnn")
    lo, hi = float(x.min()), float(x.max())
    auto, explicit = tmp_path / "auto", tmp_path / "explicit"
    assert _mr(npz, auto, "--methods", "lrp_epsilon_gamma_box") == 0
    err = capsys.readouterr().err
    assert "box bounds from the data's range" in err and repr(lo) in err
    run = json.loads((auto / "run.json").read_text())["settings"]
    assert run["box_bounds_from_data"]["lrp_epsilon_gamma_box"]["low"] == lo
    assert run["methods"]["lrp_epsilon_gamma_box"]["high"] == hi
    given = json.dumps({"low": lo, "high": hi})
    assert _mr(npz, explicit, "--methods", "lrp_epsilon_gamma_box",
               "--method-settings", f"lrp_epsilon_gamma_box={given}") == 0
    assert "box bounds" not in capsys.readouterr().err
    np.testing.assert_array_equal(_values(auto), _values(explicit))
    # and the table is the API's with the data's bounds
    model, _ = zoo.make("cnn")
    api = model_randomization_test(
        model, x, methods=[methods.get("lrp_epsilon_gamma_box", low=lo, high=hi)],
        scores=["spearman"], controls=[], seed=0, progress=False)
    np.testing.assert_allclose(_values(auto), _sorted(api.table), rtol=0, atol=1e-12)


def test_lrp_explicit_bound_wins_and_composite(tmp_path, npz):
    _, x = zoo.make("cnn")
    out = tmp_path / "run"
    assert _mr(npz, out, "--methods", "lrp", "--method-settings",
               'lrp={"composite": "epsilon_gamma_box", "low": -10.0}') == 0
    run = json.loads((out / "run.json").read_text())["settings"]
    assert run["methods"]["lrp"]["low"] == -10.0
    assert run["methods"]["lrp"]["high"] == float(x.max())
    assert run["box_bounds_from_data"] == {"lrp": {"high": float(x.max()),
                                                   "from": "data range"}}


def test_localization_settings_and_box_bounds_from_the_grids(tmp_path, capsys):
    g = torch.Generator().manual_seed(0)
    labels = torch.stack([torch.randperm(10, generator=g)[:4] for _ in range(2)])
    grids = GridSet(torch.rand(2, 1, 56, 56, generator=g) * 2 - 0.5, labels,
                    torch.zeros(2, 4, dtype=torch.long))
    grids.save(tmp_path / "g.npz")
    out = tmp_path / "loc"
    rc = main(["localization", "--model", "test_cli_method_settings:small_cnn", "--grids",
               str(tmp_path / "g.npz"), "--settings", "difull", "--layers", "input",
               "--methods", "occlusion,lrp_epsilon_gamma_box", "--method-settings",
               'occlusion={"patch": 7, "stride": 7}', "--out", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    lo, hi = float(grids.images.min()), float(grids.images.max())
    assert "box bounds from the data's range" in capsys.readouterr().err
    api = localization_test(
        small_cnn(), grids, methods={"occlusion": ("occlusion", {"patch": 7, "stride": 7}),
                             "lrp_epsilon_gamma_box": ("lrp_epsilon_gamma_box",
                                                       {"low": lo, "high": hi})},
        settings=["difull"], layers=["input"], controls=False, seed=0, progress=False)
    np.testing.assert_allclose(_values(out), _sorted(api.table), rtol=0, atol=1e-12)
    run = json.loads((out / "run.json").read_text())["settings"]
    assert run["box_bounds_from_data"]["lrp_epsilon_gamma_box"]["low"] == lo


def test_data_randomization_box_bounds_from_the_test_images(tmp_path, capsys):
    from saliency_sanity import data

    out = tmp_path / "drt"
    rc = main(["data-randomization", "--architecture", "mnist_mlp", "--width", "0.05",
               "--subset", "40", "--epochs", "1", "--n-samples", "2", "--methods",
               "gradient,lrp_epsilon_gamma_box", "--method-settings",
               'lrp_epsilon_gamma_box={"epsilon": 0.01}', "--scores", "spearman",
               "--controls", "none", "--cache-dir", str(tmp_path / "cache"), "--out", str(out),
               "--no-progress"])
    assert rc in (0, 3)  # 3: one epoch does not memorize the labels (the run is kept)
    assert "box bounds from the data's range" in capsys.readouterr().err
    x = data.load("mnist", n_train=40, n_test=1000, seed=0).x_test[:2]
    run = json.loads((out / "run.json").read_text())["settings"]
    lrp = run["methods"]["lrp_epsilon_gamma_box"]
    assert (lrp["low"], lrp["high"], lrp["epsilon"]) == (float(x.min()), float(x.max()), 0.01)
