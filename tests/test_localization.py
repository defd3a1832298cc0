"""Grid images, the three settings, ML-Att, the localization score and the check on the engine.

References: hand-built convolutional heads and per-cell forward passes, Captum's layer
attributions, scipy's Gaussian filter, and scores worked out by hand.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import zoo
from torch import nn

from saliency_sanity import localization_test, make_grids
from saliency_sanity.grids import GridSet, Head, Setting, cell_slice, layout, load_grids
from saliency_sanity.localization import (
    aggatt_bins,
    gaussian_smooth,
    localization,
    smoothing_settings,
)
from saliency_sanity.models import MnistCNN

pytestmark = pytest.mark.usefixtures("one_thread")
KW = {"progress": False, "controls": False, "batch_size": 2}


def _cnn() -> nn.Module:
    return MnistCNN(width=0.25, seed=0).eval()


def _resnet() -> nn.Module:
    net = zoo._seeded(lambda: zoo.ResNetMNIST(ch=6, seed=0), 0).eval()  # global RNG restored
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):  # non-trivial statistics and affine parameters
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return net


def _grids(count: int = 3, c: int = 1, side: int = 28) -> GridSet:
    g = torch.Generator().manual_seed(0)
    labels = torch.stack([torch.randperm(10, generator=g)[:4] for _ in range(count)])
    return GridSet(torch.rand(count, c, 2 * side, 2 * side, generator=g), labels,
                   torch.zeros(count, 4, dtype=torch.long))


# ------------------------------------------------------------------------------ grid data
class _Oracle(nn.Module):
    """Predicts the class written in pixel (0, 0) (as 10 * class), confidence from pixel (0, 1)."""

    def forward(self, x):
        cls = (x[:, 0, 0, 0] / 10).round().long()
        logits = torch.zeros(len(x), 5)
        return logits.scatter(1, cls.view(-1, 1), x[:, 0, 0, 1].view(-1, 1))


def _oracle_data(per_class, sure=20.0):
    xs, ys = [], []
    for c, k in enumerate(per_class):
        for i in range(k):
            img = torch.zeros(1, 3, 3)
            img[0, 0, 0] = 10 * c
            img[0, 0, 1] = sure if i % 2 == 0 else 0.5  # every second image is unsure
            img[0, 2, 2] = len(xs)  # identifies the image
            xs.append(img)
            ys.append(c)
    return torch.stack(xs), torch.tensor(ys)


def test_make_grids_distinct_confident_unused_seeded(global_rng_guard):
    x, y = _oracle_data([6, 6, 6, 6, 6])  # 3 confident per class
    g = make_grids(_Oracle(), x, y, n=2, count=3, seed=1)
    assert g.images.shape == (3, 1, 6, 6) and g.labels.shape == (3, 4)
    used = g.sources.flatten().tolist()
    assert len(set(used)) == len(used)  # no image reused
    for grid in range(3):
        assert len(set(g.labels[grid].tolist())) == 4  # distinct classes
        for k in range(4):
            src = int(g.sources[grid, k])
            assert x[src, 0, 0, 1] == 20.0 and y[src] == g.labels[grid, k]  # confident, right
            assert torch.equal(cell_slice(g.images[grid:grid + 1], k, 2)[0], x[src])
    again = make_grids(_Oracle(), x, y, n=2, count=3, seed=1)
    assert torch.equal(again.images, g.images) and torch.equal(again.sources, g.sources)
    other = make_grids(_Oracle(), x, y, n=2, count=3, seed=2)
    assert not torch.equal(other.sources, g.sources)


def test_make_grids_errors_say_what_is_wrong(tmp_path):
    x, y = _oracle_data([4, 4, 4, 2])  # confident: 2, 2, 2, 1
    with pytest.raises(ValueError, match=r"per class \{0: 2, 1: 2, 2: 2, 3: 1\}"):
        make_grids(_Oracle(), x, y, n=2, count=2)
    make_grids(_Oracle(), x, y, n=2, count=1)  # one grid fits
    with pytest.raises(ValueError, match="n .* >= 2"):
        make_grids(_Oracle(), x, y, n=1, count=1)
    with pytest.raises(ValueError, match="images"):
        make_grids(_Oracle(), x.flatten(1), y, n=2, count=1)
    with pytest.raises(ValueError, match="one label per image"):
        make_grids(_Oracle(), x, y[:3], n=2, count=1)


def test_grid_file_roundtrip_and_bad_files(tmp_path):
    g = _grids(2)
    g.save(tmp_path / "g.npz")
    back = load_grids(tmp_path / "g.npz")
    assert torch.equal(back.images, g.images) and torch.equal(back.labels, g.labels)
    np.savez(tmp_path / "bad.npz", images=np.zeros((1, 1, 4, 4)))
    with pytest.raises(ValueError, match="missing"):
        load_grids(tmp_path / "bad.npz")
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(ValueError, match="not a readable grid set"):
        load_grids(tmp_path / "junk.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npz", "g.npz", "junk.npz"]


# ------------------------------------------------------------------------------ settings
def _conv_head_reference(net: MnistCNN, grid: torch.Tensor) -> torch.Tensor:
    """The paper's conversion written out: fc1 as a 7x7 convolution, fc2 as a 1x1 one, slid
    over the grid's feature map, then averaged."""
    f = net.pool2(net.relu2(net.conv2(net.pool1(net.relu1(net.conv1(grid))))))
    w1 = net.fc1.weight.view(net.fc1.out_features, f.shape[1], 7, 7)
    h = torch.relu(F.conv2d(f, w1, net.fc1.bias))
    out = F.conv2d(h, net.fc2.weight[:, :, None, None], net.fc2.bias)
    return out.mean(dim=(2, 3))


def test_gridpg_converted_head_equals_conv_head_and_model_on_one_cell():
    net, g = _cnn(), _grids(2)
    cell = g.images[:, :, :28, :28]
    s = Setting(net, "gridpg", 2, cell)
    with torch.no_grad():
        assert float((s.gridpg(cell) - net(cell)).abs().max()) <= 1e-5
        ref = _conv_head_reference(net, g.images)
        got = s(g.images)
    assert got.shape == (2, 4, 10)
    torch.testing.assert_close(got[:, 2], ref, rtol=1e-5, atol=1e-5)
    res = _resnet()
    with torch.no_grad():  # a global pool: the model as it is
        torch.testing.assert_close(Setting(res, "gridpg", 2, cell)(g.images)[:, 0], res(g.images))


def test_difull_and_dipart_heads_by_hand():
    net, g = _cnn(), _grids(2)
    cell = g.images[:, :, :28, :28]
    with torch.no_grad():
        di = Setting(net, "difull", 2, cell)(g.images)
        for k in range(4):
            torch.testing.assert_close(di[:, k], net(cell_slice(g.images, k, 2)))
        dp = Setting(net, "dipart", 2, cell)(g.images)
        f = net.pool2(net.relu2(net.conv2(net.pool1(net.relu1(net.conv1(g.images))))))
        for k in range(4):
            part = cell_slice(f, k, 2)
            want = net.fc2(net.relu3(net.fc1(part.flatten(1))))
            torch.testing.assert_close(dp[:, k], want)


def test_layers_resolved_and_bad_layers():
    lay = layout(_cnn(), torch.zeros(1, 1, 28, 28))
    assert (lay.middle, lay.final, lay.split, lay.kernel) == ("relu1", "relu2", "pool2", (7, 7))
    lay = layout(_resnet(), torch.zeros(1, 1, 28, 28))
    assert (lay.middle, lay.final, lay.split, lay.kernel) == ("layer1", "layer2", "layer2", None)
    net, g = _cnn(), _grids(1)
    with pytest.raises(KeyError, match="no layer named 'conv9'"):
        localization_test(net, g, methods=["gradient"], layers=["conv9"], **KW)
    with pytest.raises(ValueError, match="'fc1' is not spatial"):
        localization_test(net, g, methods=["gradient"], layers=["fc1"], **KW)
    with pytest.raises(ValueError, match="after the split point"):
        localization_test(net, g, methods=["gradient"], settings=["dipart"], layers=["relu2"],
                          split="pool1", **KW)


def test_gridpg_refuses_models_that_cannot_take_a_grid():
    from saliency_sanity.models import MnistMLP

    g = _grids(1)
    with pytest.raises(ValueError, match="gridpg: the model cannot take a grid"):
        localization_test(MnistMLP(width=0.05, seed=0), g, methods=["gradient"],
                          settings=["gridpg"],
                          layers=["input"], **KW)

    class Fixed(nn.Module):  # flattens to a fixed size that a grid does not have
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3, padding=1)
            self.pool = nn.MaxPool2d(2)
            self.fc = nn.Linear(2 * 14 * 14, 10)

        def forward(self, x):
            return self.fc(self.pool(self.conv(x)).view(-1, 392).relu())

    fixed = zoo._seeded(Fixed, 0)
    with pytest.raises(ValueError, match="gridpg: the model cannot take a 2x2 grid: layer 'fc' "
                                         "failed"):
        localization_test(fixed, g, methods=["gradient"], settings=["gridpg"], layers=["input"],
                          **KW)

    class Other(Fixed):  # its linear layer takes neither the flattened map nor its channels
        def forward(self, x):
            return self.fc(self.conv(x).flatten(1)[:, :392].relu())

    with pytest.raises(ValueError, match="gridpg: .* linear layer 'fc' takes neither"):
        localization_test(zoo._seeded(Other, 0), g, methods=["gradient"], settings=["gridpg"],
                          layers=["input"], **KW)
    with pytest.raises(ValueError, match=r"grid images must be a float tensor \(G, C, n\*H"):
        GridSet(torch.zeros(2, 56 * 56), torch.zeros(2, 4).long(), torch.zeros(2, 4).long())
    with pytest.raises(ValueError, match="n >= 2"):
        GridSet(torch.zeros(2, 1, 28, 28), torch.zeros(2, 1).long(), torch.zeros(2, 1).long())


# ------------------------------------------------------------------------------ ML-Att
def test_layer_gradient_and_gradcam_equal_captum_on_the_grid():
    from captum.attr import LayerGradCam, LayerGradientXActivation

    res, g = _resnet(), _grids(2)
    x, tgt = g.images, g.labels[:, 1]
    cell = x[:, :, :28, :28]
    s = Setting(res, "gridpg", 2, cell)
    from saliency_sanity import methods
    from saliency_sanity.localization import at_layer, head_maps

    for layer in ("layer1", "layer2"):
        a = s.front(layer, x)
        head = Head(s, 1, layer, x)
        maps = dict(head_maps(head, a, tgt, {"gradient": methods.get("gradient"),
                                             "gradcam": at_layer(methods.get("gradcam"))}, ()))
        mod = dict(res.named_modules())[layer]
        want = LayerGradientXActivation(res, mod, multiply_by_inputs=False).attribute(
            x, target=tgt)
        torch.testing.assert_close(maps["gradient"], want, rtol=1e-5, atol=1e-6)
        cam = LayerGradCam(res, mod).attribute(x, target=tgt, relu_attributions=True)
        torch.testing.assert_close(maps["gradcam"], cam, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make", [_cnn, _resnet])
def test_difull_input_methods_localize_exactly(make, global_rng_guard):
    net, g = make(), _grids(3)
    snap = zoo.snapshot(net)
    r = localization_test(net, g, methods=["gradient", "guided_backprop", "gradient_x_input",
                                   ("integrated_gradients", {"steps": 5})],
                          settings=["difull"], layers=["input"], **KW)
    zoo.assert_unchanged(net, snap)
    t = r.table
    assert len(t) == 4 * 3 * 2
    from saliency_sanity import methods

    for row in t[t["value"] != 1.0].itertuples():  # only maps with no positive mass at all
        cell = cell_slice(g.images[row.sample:row.sample + 1], row.head, 2)
        m = methods.get(row.method)(net, cell, g.labels[row.sample:row.sample + 1, row.head])
        assert row.value == 0.0 and not m.any()
    assert (t["value"] == 1.0).mean() > 0.9


def test_difull_layer_gradient_has_no_mass_outside_the_cell_before_upsampling():
    """The guarantee is exact at the layer's resolution; the bilinear upsampling to the grid
    (the paper's protocol) is what moves a little mass over the cell border."""
    net, g = _cnn(), _grids(2)
    cell = g.images[:, :, :28, :28]
    s = Setting(net, "difull", 2, cell)
    from saliency_sanity import methods
    from saliency_sanity.localization import head_maps

    a = s.front("relu2", g.images)
    assert a.shape[2:] == (28, 28)
    for k in (0, 3):
        (_, m), = head_maps(Head(s, k, "relu2", g.images), a, g.labels[:, k],
                            {"gradient": methods.get("gradient")}, ())
        assert float(cell_slice(m, k, 2).abs().sum()) > 0
        cell_slice(m, k, 2).zero_()
        assert not m.any()  # nothing outside cell k


# ------------------------------------------------------------------------------ score
def test_score_by_hand():
    m = torch.zeros(3, 1, 4, 4)
    m[0, 0, 0, 0], m[0, 0, 0, 3], m[0, 0, 3, 0] = 3.0, 1.0, -9.0
    m[1, 0, 3, 3] = 1e-8  # total below 1e-7: 0
    m[2, 0, 2:, 2:] = 2.0
    assert localization(m, 0, 2).tolist() == [0.75, 0.0, 0.0]
    assert localization(m, 3, 2).tolist() == [0.0, 0.0, 1.0]
    # upsample first, then zero the negatives (a 2x2 map, bilinear to 4x4)
    from saliency_sanity.localization import upsample

    up = upsample(torch.tensor([[[[1.0, -1.0], [0.0, 0.0]]]]), (4, 4))
    assert up[0, 0, 0, 1] == 0.5 and up[0, 0, 0, 2] == -0.5
    # positive mass in the top-left cell 1 + .5 + .75 + .375, below it .25 + .125
    assert localization(up, 0, 2).item() == 2.625 / 3.0


def test_gaussian_smoothing_equals_scipy():
    from scipy.ndimage import gaussian_filter

    s = smoothing_settings(True, (28, 28))
    assert s == {"sigma": 2.8, "kernel_size": 19}
    m = torch.randn(2, 1, 30, 30, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    got = gaussian_smooth(m, 2.8, 19)
    want = gaussian_filter(m.numpy(), sigma=(0, 0, 2.8, 2.8), mode="constant", truncate=9 / 2.8)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="odd"):
        smoothing_settings({"kernel_size": 4}, (28, 28))


def test_aggatt_bins_by_hand():
    maps = np.arange(100.0).reshape(100, 1, 1)
    scores = np.linspace(1, 0, 100)  # map i has the i-th best score
    means, sizes = aggatt_bins(maps, scores, np.zeros(100))
    assert sizes.tolist() == [2, 3, 45, 45, 3, 2]
    assert means[:, 0, 0].tolist() == [0.5, 3.0, 27.0, 72.0, 96.0, 98.5]


# ------------------------------------------------------------------------------ the check
def test_check_table_resume_reproducible_and_model_untouched(tmp_path, global_rng_guard):
    net, g = _cnn(), _grids(3)
    snap = zoo.snapshot(net)
    kw = dict(KW, methods=["gradient", "gradcam", ("smoothgrad", {"samples": 3})],
              layers=["input", "final"], smoothing=True)
    a = localization_test(net, g, run_dir=tmp_path / "r", **kw)
    zoo.assert_unchanged(net, snap)
    assert list(a.table.columns) == ["method", "setting", "layer", "sample", "head", "metric",
                                     "value"]
    t = a.table
    assert set(t.metric) == {"localization", "localization_smoothed"}
    assert sorted(t[t.setting == "gridpg"]["head"].unique()) == [0, 1, 2, 3]
    assert sorted(t[t.setting == "difull"]["head"].unique()) == [0, 3]
    assert t["value"].between(0, 1).all()
    b = localization_test(net, g, **kw)
    pd.testing.assert_frame_equal(a.table, b.table, check_exact=True)
    c = localization_test(net, g, run_dir=tmp_path / "r", **kw)  # finished: loaded
    pd.testing.assert_frame_equal(a.table, c.table, check_dtype=False)
    d = type(a).load(tmp_path / "r")
    pd.testing.assert_frame_equal(a.table, d.table, check_dtype=False)
    agg = d.examples["maps"]["gradient:gridpg:input"]
    assert sorted(agg) == [0, 1, 2, 3, 4, 5] and agg[0].shape == (56, 56)
    assert d.summary().columns[:5].tolist() == ["method", "setting", "layer", "head", "metric"]


def test_bad_inputs_leave_no_files(tmp_path):
    net, g = _cnn(), _grids(1)
    out = tmp_path / "run"
    with pytest.raises(KeyError):
        localization_test(net, g, methods=["gradient"], layers=["nope"], run_dir=out, **KW)
    with pytest.raises(ValueError, match="unknown settings"):
        localization_test(net, g, methods=["gradient"], settings=["gridpg", "full"], run_dir=out,
                          **KW)
    with pytest.raises(TypeError, match="GridSet"):
        localization_test(net, g.images, methods=["gradient"], run_dir=out, **KW)
    assert not out.exists()


def test_crash_then_resume_equals_uninterrupted(tmp_path):
    from saliency_sanity import methods

    net, g = _cnn(), _grids(3)
    grad = methods.get("gradient")
    calls = {"n": 0}

    def crashing(m, a, t):
        calls["n"] += 1
        if calls["n"] == 5:  # 4 heads per GridPG unit: in the second unit
            raise RuntimeError("simulated crash")
        return grad(m, a, t)

    kw = dict(KW, settings=["gridpg"], layers=["input"])
    with pytest.raises(RuntimeError, match="simulated crash"):
        localization_test(net, g, methods={"gradient": crashing}, run_dir=tmp_path / "r", **kw)
    assert [p.name for p in (tmp_path / "r" / "partial").glob("batch-*.npz")] == [
        "batch-000000.npz"]
    assert not (tmp_path / "r" / "results.csv").exists()
    resumed = localization_test(net, g, methods={"gradient": crashing}, run_dir=tmp_path / "r",
                                **kw)
    assert calls["n"] == 4 + 1 + 4  # unit 0, the crash, unit 1 again: unit 0 not recomputed
    full = localization_test(net, g, methods={"gradient": grad}, **kw)
    np.testing.assert_array_equal(resumed.table["value"], full.table["value"])


@pytest.mark.parametrize("setting", ["gridpg", "dipart", "difull"])
def test_shared_passes_equal_the_methods_own_calls(setting):
    """Gradient-type maps and Grad-CAM from one pass of all heads equal each method's own call
    on each head (and all_heads equals the heads one by one)."""
    from saliency_sanity import methods
    from saliency_sanity.localization import at_layer, setting_layer_maps

    net, g = _cnn(), _grids(2)
    s = Setting(net, setting, 2, g.images[:, :, :28, :28])
    objs = {"gradient": methods.get("gradient"), "gradient_x_input":
            methods.get("gradient_x_input"), "gradcam": at_layer(methods.get("gradcam"))}
    for layer in (None, "relu1", "pool2"):
        a = s.front(layer, g.images)
        if setting != "difull":
            with torch.no_grad():
                every = s.all_heads(a, layer, g.images)
                for k in range(4):
                    torch.testing.assert_close(every[:, k], Head(s, k, layer, g.images)(a))
        shared = {(k, lab): m for k, lab, m in setting_layer_maps(
            s, layer, g.images, g.labels, [0, 3], objs, ())}
        for k in (0, 3):
            for lab, m in objs.items():
                want = m(Head(s, k, layer, g.images), a, g.labels[:, k])
                torch.testing.assert_close(shared[(k, lab)], want, rtol=1e-5, atol=1e-7)


def test_difull_gradcam_at_final_by_hand():
    """Grad-CAM in DiFull, written out: head k's gradient is zero outside cell k, so its channel
    weights are cell k's gradient summed over the cell / the stitched map's size; the map then
    weights every cell's activations with them (the paper's protocol), which marks other cells."""
    net, g = _cnn(), _grids(2)
    x = g.images
    r = localization_test(net, GridSet(x, g.labels, g.sources), methods=["gradcam"],
                          settings=["difull"], layers=["final"], aggatt_size=56, **KW)
    cells = [cell_slice(x, k, 2) for k in range(4)]
    acts = [net.relu2(net.conv2(net.pool1(net.relu1(net.conv1(c))))) for c in cells]
    top = torch.cat([acts[0], acts[1]], dim=3)
    stitched = torch.cat([top, torch.cat([acts[2], acts[3]], dim=3)], dim=2).detach()
    for k in (0, 3):
        a = acts[k].detach().requires_grad_(True)
        score = net.fc2(net.relu3(net.fc1(net.pool2(a).flatten(1))))
        (gk,) = torch.autograd.grad(score.gather(1, g.labels[:, k:k + 1]).sum(), a)
        w = gk.sum(dim=(2, 3), keepdim=True) / (stitched.shape[2] * stitched.shape[3])
        cam = torch.relu((w * stitched).sum(1, keepdim=True))
        want = localization(F.interpolate(cam, size=(56, 56), mode="bilinear",
                                          align_corners=False), k, 2)
        got = r.table[r.table["head"] == k].sort_values("sample")["value"].to_numpy()
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-5)
        assert (want < 1).all()  # activations of the other cells are weighted too


@pytest.mark.slow
def test_trained_demo_cnn_difull_input_is_exactly_one():
    from saliency_sanity.demo import demo_model

    trained, ds = demo_model(seed=0, progress=False)
    grids = make_grids(trained.model, ds.x_test, ds.y_test, n=2, count=16, seed=0)
    r = localization_test(trained.model, grids, methods=["gradient", "guided_backprop",
                                                 "gradient_x_input",
                                                 ("integrated_gradients", {"steps": 20})],
                          settings=["difull"], layers=["input"], **KW)
    assert len(r.table) == 4 * 16 * 2
    assert (r.table["value"] == 1.0).all()


@pytest.mark.parametrize("make, layers", [(_cnn, ("relu1", "relu2", "pool2")),
                                          (_resnet, ("layer1", "layer2"))])
def test_split_network_equals_the_hooked_network(make, layers):
    """The rest of the network after a layer (a traced split) gives the heads' logits and
    gradients of the full network with the layer's output replaced by hooks."""
    net, g = make(), _grids(2)
    for setting in ("gridpg", "difull", "dipart"):
        s = Setting(net, setting, 2, g.images[:, :, :28, :28])
        hooked = Setting(net, setting, 2, g.images[:, :, :28, :28])
        for layer in layers:
            if setting == "dipart" and layer not in ("relu1", "relu2", "pool2", "layer1",
                                                     "layer2"):
                continue
            assert s.rest(layer) is not None
            hooked._rest[layer] = None  # force the hook path
            a = s.front(layer, g.images).requires_grad_(True)
            for k in (0, 3):
                out = Head(s, k, layer, g.images)(a)
                ref = Head(hooked, k, layer, g.images)(a)
                torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
                t = g.labels[:, k]
                (ga,) = torch.autograd.grad(out.gather(1, t.view(-1, 1)).sum(), a)
                (gb,) = torch.autograd.grad(ref.gather(1, t.view(-1, 1)).sum(), a)
                torch.testing.assert_close(ga, gb, rtol=1e-5, atol=1e-7)
            if setting != "difull":
                torch.testing.assert_close(s.all_heads(a, layer, g.images),
                                           hooked.all_heads(a, layer, g.images))
