"""The models users bring: torchvision's ResNet-18, VGG-11 and ViT-B/16, a timm ViT and a Hugging
Face ViT, built from their libraries' own definitions with random weights (nothing downloaded).

These need the ``vision`` and ``hf`` extras (the second environment of ``.ci/run``); without them
the module is skipped with a message. Hand-built modules of the same structure are covered in the
main environment by ``test_architectures.py``.
"""

from __future__ import annotations

import copy
import importlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from saliency_sanity import methods, model_randomization_test
from saliency_sanity.randomization import discover_blocks, init_schemes, randomized_models

pytestmark = pytest.mark.vision


def _need(name: str):
    try:
        return importlib.import_module(name)
    except Exception as err:  # not installed, or built for another torch
        pytest.skip(f"{name} is not importable ({type(err).__name__}: {err}); install the "
                    "extras: pip install 'saliency-sanity[vision,hf]' (see README)",
                    allow_module_level=True)


torchvision = _need("torchvision")
timm = _need("timm")
transformers = _need("transformers")

SIZE = 32  # the ViTs at 32 x 32 (a 2 x 2 or 4 x 4 patch grid): fast on a CPU
CNN_SIZE = 64  # the CNNs at 64 x 64: a 2 x 2 map in the last conv stage (1 x 1 at 32 x 32)


def _seeded_head(model: nn.Module, head: nn.Linear, seed: int) -> nn.Module:
    """torchvision initializes a ViT's head to zeros: its logits would not depend on the input.
    A trained head is not zero; draw one (private generator)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=g) * 0.02)
    return model


def build(name: str) -> nn.Module:
    tv = torchvision.models
    with torch.random.fork_rng(devices=[]):  # the libraries initialize from the global RNG
        torch.manual_seed(0)
        if name == "resnet18":
            model = tv.resnet18(num_classes=10)
        elif name == "vgg11":
            model = tv.vgg11(num_classes=10)
        elif name == "vit_b_16":
            model = tv.vit_b_16(image_size=SIZE, num_classes=10)
            _seeded_head(model, model.heads.head, 1)
        elif name == "vit_small":  # torchvision's ViT class, two narrow layers
            model = tv.VisionTransformer(image_size=SIZE, patch_size=16, num_layers=2,
                                         num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=10)
            _seeded_head(model, model.heads.head, 1)
        elif name == "timm_vit":
            model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=SIZE,
                                      num_classes=10)
        elif name == "hf_vit":
            cfg = transformers.ViTConfig(image_size=SIZE, patch_size=8, num_channels=3,
                                         hidden_size=32, num_hidden_layers=3,
                                         num_attention_heads=2, intermediate_size=64,
                                         num_labels=10)
            model = transformers.ViTForImageClassification(cfg)
        else:
            raise KeyError(name)
    return model.eval()


def inputs(n: int = 2, name: str = "") -> torch.Tensor:
    size = CNN_SIZE if name in ("resnet18", "vgg11") else SIZE
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(5))


# the big models run end to end on three of their blocks (input side, middle, output side):
# randomizing VGG-11's 103M-weight first classifier layer or all of ViT-B's twelve layers costs
# a minute on a CPU and adds no case; their full block lists are asserted on their own
SUBSET = {"vgg11": ["features.0", "features.18", "classifier.6"],
          "vit_b_16": ["embeddings", "encoder.layers.encoder_layer_11", "heads.head"]}


VIT_B_LAYERS = [f"encoder.layers.encoder_layer_{i}" for i in range(12)]
BLOCKS = {
    "resnet18": ["conv1", "bn1", *[f"layer{s}.{b}" for s in range(1, 5) for b in (0, 1)], "fc"],
    "vgg11": ["features.0", "features.3", "features.6", "features.8", "features.11",
              "features.13", "features.16", "features.18", "classifier.0", "classifier.3",
              "classifier.6"],
    "vit_b_16": ["embeddings", *VIT_B_LAYERS, "encoder.ln", "heads.head"],
    "timm_vit": ["embeddings", *[f"blocks.{i}" for i in range(12)], "norm", "head"],
}
GRADCAM_LAYER = {"resnet18": "layer4", "vgg11": "features.19",
                 "vit_b_16": "encoder.layers.encoder_layer_10", "timm_vit": "blocks.10"}


@pytest.fixture(scope="module")
def hf_names():
    """Hugging Face's module names (``vit.encoder.layer.N`` or ``vit.layers.N`` by version)."""
    model = build("hf_vit")
    layers = [n for n, m in model.named_modules() if type(m).__name__ == "ViTLayer"]
    assert len(layers) == 3
    return {"blocks": ["vit.embeddings", *layers, "vit.layernorm", "classifier"],
            "gradcam": layers[1]}


def expected(name: str, hf_names) -> tuple[list[str], str]:
    if name == "hf_vit":
        return hf_names["blocks"], hf_names["gradcam"]
    return BLOCKS[name], GRADCAM_LAYER[name]


def snapshot(model: nn.Module):
    return ({k: v.detach().clone() for k, v in model.state_dict().items()},
            [m.training for m in model.modules()], [p.requires_grad for p in model.parameters()])


def assert_unchanged(model: nn.Module, snap) -> None:
    state, modes, flags = snapshot(model)
    assert state.keys() == snap[0].keys()
    assert all(torch.equal(state[k], snap[0][k]) for k in state)
    assert modes == snap[1] and flags == snap[2]
    assert all(p.grad is None for p in model.parameters())


MODELS = ["resnet18", "vgg11", "vit_b_16", "timm_vit", "hf_vit"]


@pytest.mark.parametrize("name", MODELS)
def test_blocks_as_documented(name, hf_names):
    model = build(name)
    blocks = discover_blocks(model, inputs(1, name))
    want, _ = expected(name, hf_names)
    assert [b.name for b in blocks] == want
    # every parameter in exactly one block
    params = [p for b in blocks for p in b.params]
    assert sorted(params) == sorted(n for n, _ in model.named_parameters())


@pytest.mark.parametrize("name", MODELS)
def test_model_randomization_end_to_end(name, hf_names):
    model = build(name)
    x = inputs(2, name)
    snap = snapshot(model)
    want_blocks, want_layer = expected(name, hf_names)
    blocks = None
    if name in SUBSET:
        blocks = [b for b in discover_blocks(model, x[:1]) if b.name in SUBSET[name]]
        want_blocks = SUBSET[name]
    res = model_randomization_test(
        model, x, methods=["gradient", ("integrated_gradients", {"steps": 4}), "gradcam"],
        scores=["spearman_abs"], controls=["random_uniform"], null_reference=False,
        blocks=blocks, progress=False, seed=0)
    assert_unchanged(model, snap)
    t = res.table
    assert set(t["method"]) == {"gradient", "integrated_gradients", "gradcam", "random_uniform"}
    assert set(t["layer"]) == set(want_blocks)
    for method, rows in t.groupby("method"):
        assert len(rows) == 2 * len(want_blocks)  # every sample at every stage
        if method == "gradcam":
            # a Grad-CAM map can be zero everywhere after its ReLU (all evidence negative for the
            # target under a random head; activations vanishing deep in the cascade, weights
            # ~ N(0, 0.01)): no rank correlation there (NaN, with a warning). Not every one.
            assert rows["value"].notna().any()
        else:
            assert rows["value"].notna().all()
    assert res.settings["methods"]["gradcam"]["resolved_layer"] == want_layer
    # cascading: at full randomization the gradient no longer matches the trained map
    full = t[(t["method"] == "gradient") & (t["layer"] == want_blocks[0])]["value"]
    assert float(full.mean()) < 0.9


@pytest.mark.parametrize("name", ["vit_b_16", "timm_vit", "hf_vit"])
def test_gradcam_on_tokens_matches_hand_written_reference(name, hf_names):
    model = build(name)
    x = inputs(2)
    _, layer = expected(name, hf_names)
    target = torch.tensor([3, 7])
    got = methods.get("gradcam")(model, x, target)
    # reference: the block's output tokens and their gradient, class token dropped, patch
    # tokens on the grid, weights = gradient averaged over the grid, ReLU, bilinear upsampling
    acts = {}
    module = dict(model.named_modules())[layer]
    h = module.register_forward_hook(
        lambda m, a, o: acts.__setitem__("t", o[0] if isinstance(o, tuple) else o))
    try:
        out = model(x)
    finally:
        h.remove()
    logits = out if isinstance(out, torch.Tensor) else out.logits
    (grad,) = torch.autograd.grad(logits[torch.arange(2), target].sum(), acts["t"])
    tokens, grad = acts["t"].detach()[:, 1:], grad[:, 1:]  # (B, 1 + 4, D): one class token
    side = int(round(tokens.shape[1] ** 0.5))
    weights = grad.mean(dim=1)  # (B, D)
    cam = torch.relu(torch.einsum("bd,bnd->bn", weights, tokens)).reshape(2, 1, side, side)
    ref = F.interpolate(cam, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    assert torch.allclose(got, ref, rtol=1e-4, atol=1e-6 * float(ref.abs().max()))
    # non-degenerate: the weighted token sum is non-zero on every patch and the map (after
    # the ReLU) positive on some of them; the last block's patch tokens never reach the class
    # token, and there Grad-CAM is zero everywhere
    pre = torch.einsum("bd,bnd->bn", weights, tokens)
    assert bool((pre != 0).all())
    assert float((cam > 0).float().mean()) >= 0.25
    last = [n for n, m in model.named_modules() if n and type(m) is type(module)][-1]
    assert float(methods.GradCAM(layer=last)(model, x, target).abs().max()) == 0.0


@pytest.mark.parametrize("name", ["vit_b_16", "timm_vit", "hf_vit"])
def test_guided_backprop_refuses_gelu(name):
    model = build(name)
    with pytest.raises(ValueError, match="(?i)gelu"):
        methods.get("guided_backprop")(model, inputs(1))


@pytest.mark.parametrize("init", ["paper", "reinit", "permute", "moment_matched"])
@pytest.mark.parametrize("name", ["vit_small", "timm_vit", "hf_vit"])
def test_every_scheme_randomizes_every_tensor_of_a_vit(name, init):
    """Layer norms, attention projections, class tokens and position embeddings: every tensor
    changes, except under the schemes that keep a constant tensor's values (a fresh layer norm's
    ones, torchvision's zero class token) under permutation or moment matching."""
    model = build(name)
    with torch.no_grad():  # trained tensors are not constant: make them so (a private generator)
        g = torch.Generator().manual_seed(9)
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.01)
    stages = list(randomized_models(model, init=init, example_input=inputs(1)))
    final = dict(stages[-1].model.named_parameters())
    for pname, p in model.named_parameters():
        assert not torch.equal(final[pname], p), (init, pname)
    assert init in init_schemes.list()


def test_hf_output_object_accepted_without_wrapper():
    model = build("hf_vit")
    x = inputs(2)
    out = model(x)
    assert not isinstance(out, torch.Tensor)
    for name in ["gradient", "integrated_gradients", "gradcam", "smoothgrad"]:
        maps = methods.get(name)(model, x, "predicted")
        assert maps.shape[0] == 2 and bool(torch.isfinite(maps).all())
    from captum.attr import Saliency

    ours = methods.get("gradient")(model, x, torch.tensor([1, 2]))
    theirs = methods.resolve(Saliency, abs=False)(model, x, torch.tensor([1, 2]))
    assert torch.allclose(ours, theirs)
    copy.deepcopy(model)  # still an ordinary module
