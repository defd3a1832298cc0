"""Architecture-aware blocks and Grad-CAM on tokens, on hand-built modules with the structure of
torchvision's, timm's and Hugging Face's ViTs and of a ResNet (no extra needed; the real models
are in test_vision_models.py)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from saliency_sanity import methods, model_randomization_test
from saliency_sanity._arch import logits_of, repeated_blocks, token_grid, transformer_blocks
from saliency_sanity.methods.base import check_logits
from saliency_sanity.randomization import discover_blocks, randomized_models


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def seeded(cls, *args, seed: int = 0, **kwargs) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(*args, **kwargs)
        with torch.no_grad():  # nothing constant: layer norms, tokens, zero-init biases
            for p in model.parameters():
                p.add_(torch.randn(p.shape) * 0.1)
    return model.eval()


class Attention(nn.Module):
    """timm-style attention: one qkv projection and an output projection."""

    def __init__(self, d: int, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(b, n, d))


class TimmBlock(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d)
        self.attn = Attention(d)
        self.norm2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """timm's layout: patch_embed.proj, cls_token and pos_embed on the root, blocks, norm, head;
    ``pool="token"`` classifies from the class token, ``"avg"`` from the mean patch token."""

    def __init__(self, d: int = 16, depth: int = 3, classes: int = 5, pool: str = "token"):
        super().__init__()
        self.pool = pool
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, d, 4, 4)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, 17, d))
        self.blocks = nn.Sequential(*[TimmBlock(d) for _ in range(depth)])
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls_token.expand(len(t), -1, -1), t], 1) + self.pos_embed
        t = self.norm(self.blocks(t))
        return self.head(t[:, 0] if self.pool == "token" else t[:, 1:].mean(1))


@dataclass
class Output:
    """Like Hugging Face's ImageClassifierOutput: the logits are an attribute."""

    logits: torch.Tensor
    hidden_states: object = None


class HFEmbeddings(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.patch_embeddings = nn.Module()
        self.patch_embeddings.projection = nn.Conv2d(3, d, 4, 4)
        self.position_embeddings = nn.Parameter(torch.zeros(1, 17, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch_embeddings.projection(x).flatten(2).transpose(1, 2)
        return torch.cat([self.cls_token.expand(len(t), -1, -1), t], 1) + self.position_embeddings


class HFLayer(TimmBlock):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:  # a tuple, as older versions do
        return (super().forward(x),)


class HFViT(nn.Module):
    """Hugging Face's layout: vit.embeddings, vit.encoder.layer.N (tuple outputs), vit.layernorm,
    classifier; returns an output object."""

    def __init__(self, d: int = 16, depth: int = 2, classes: int = 5) -> None:
        super().__init__()
        self.vit = nn.Module()
        self.vit.embeddings = HFEmbeddings(d)
        self.vit.encoder = nn.Module()
        self.vit.encoder.layer = nn.ModuleList([HFLayer(d) for _ in range(depth)])
        self.vit.layernorm = nn.LayerNorm(d)
        self.classifier = nn.Linear(d, classes)

    def forward(self, pixel_values: torch.Tensor) -> Output:
        t = self.vit.embeddings(pixel_values)
        for layer in self.vit.encoder.layer:
            t = layer(t)[0]
        return Output(logits=self.classifier(self.vit.layernorm(t)[:, 0]))


class EncoderNet(nn.Module):
    """nn.TransformerEncoder, sequence-first, mean-pooled over tokens without a class token."""

    def __init__(self, d: int = 16, classes: int = 5) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, d, 4, 4)
        layer = nn.TransformerEncoderLayer(d, 2, dim_feedforward=32, dropout=0.0)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(d, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x).flatten(2).permute(2, 0, 1)  # (N, B, D)
        return self.head(self.encoder(t).mean(0))


class BasicBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class TinyResNet(nn.Module):
    """torchvision's layout: conv1, bn1, layer1/layer2 of two basic blocks each, fc."""

    def __init__(self, c: int = 4, classes: int = 5) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, c, 3, padding=1), nn.BatchNorm2d(c)
        self.layer1 = nn.Sequential(BasicBlock(c), BasicBlock(c))
        self.layer2 = nn.Sequential(BasicBlock(c), BasicBlock(c))
        self.fc = nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(torch.relu(self.bn1(self.conv1(x)))))
        return self.fc(x.mean((2, 3)))


def images(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, generator=gen(4))


# -- blocks --------------------------------------------------------------------------------------
def test_blocks_of_each_layout():
    x = images(1)
    names = {
        "timm": [b.name for b in discover_blocks(seeded(TinyViT), x)],
        "hf": [b.name for b in discover_blocks(seeded(HFViT), x)],
        "torch": [b.name for b in discover_blocks(seeded(EncoderNet), x)],
        "resnet": [b.name for b in discover_blocks(seeded(TinyResNet), x)],
    }
    assert names == {
        "timm": ["embeddings", "blocks.0", "blocks.1", "blocks.2", "norm", "head"],
        "hf": ["vit.embeddings", "vit.encoder.layer.0", "vit.encoder.layer.1", "vit.layernorm",
               "classifier"],
        "torch": ["embed", "encoder.layers.0", "encoder.layers.1", "head"],
        "resnet": ["conv1", "bn1", "layer1.0", "layer1.1", "layer2.0", "layer2.1", "fc"],
    }


def test_embeddings_block_holds_patch_embedding_class_token_and_positions():
    blocks = discover_blocks(seeded(TinyViT), images(1))
    assert blocks[0].modules == ("patch_embed.proj", "")
    assert set(blocks[0].params) == {"patch_embed.proj.weight", "patch_embed.proj.bias",
                                     "cls_token", "pos_embed"}
    block = discover_blocks(seeded(TinyResNet), images(1))[2]
    assert block.buffers == tuple(f"layer1.0.bn{i}.{b}" for i in (1, 2) for b in
                                  ("running_mean", "running_var", "num_batches_tracked"))


def test_group_by_modules_and_children_keep_their_meaning():
    model, x = seeded(TinyViT, depth=2), images(1)
    per_module = [b.name for b in discover_blocks(model, x, group_by="modules")]
    assert per_module[:3] == ["patch_embed.proj", "<root>", "blocks.0.norm1"]
    assert len(per_module) == 2 + 2 * 6 + 2  # 6 parameterized modules per block
    assert [b.name for b in discover_blocks(model, x, group_by="children")] == [
        "patch_embed", "<root>", "blocks", "norm", "head"]
    with pytest.raises(ValueError, match="modules"):
        discover_blocks(model, x, group_by="layers")


def test_repeated_blocks_rules():
    # leaves are never blocks; a single nn.TransformerEncoderLayer is; plain containers are not
    assert repeated_blocks(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))) == []
    assert repeated_blocks(nn.Sequential(nn.TransformerEncoderLayer(4, 2))) == ["0"]
    nested = nn.Sequential(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)),
                           nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)))
    assert repeated_blocks(nested) == []
    assert transformer_blocks(seeded(TinyResNet)) == []
    assert repeated_blocks(seeded(TinyResNet)) == ["layer1.0", "layer1.1", "layer2.0",
                                                   "layer2.1"]


@pytest.mark.parametrize("init", ["paper", "reinit", "permute", "moment_matched"])
@pytest.mark.parametrize("cls", [TinyViT, HFViT, EncoderNet])
def test_every_scheme_changes_every_tensor(cls, init):
    model = seeded(cls)
    stages = list(randomized_models(model, init=init, example_input=images(1)))
    final = dict(stages[-1].model.named_parameters())
    assert [n for n, p in model.named_parameters() if torch.equal(final[n], p)] == []
    assert stages[-1].output_change["max_abs_logit_diff"] > 0


# -- outputs -------------------------------------------------------------------------------------
def test_logits_from_output_objects():
    t = torch.zeros(2, 3)
    assert logits_of(Output(t)) is t and logits_of({"logits": t}) is t
    assert check_logits(Output(t), 2) is t
    with pytest.raises(TypeError, match="logits"):
        check_logits(("no", "tensor"), 2)
    with pytest.raises(TypeError, match="logits"):
        logits_of(object())


def test_output_object_model_end_to_end_unchanged():
    model, x = seeded(HFViT), images(2)
    before = copy.deepcopy(model.state_dict())
    res = model_randomization_test(
        model, x, methods=["gradient", ("integrated_gradients", {"steps": 4}), "gradcam"],
        scores=["spearman_abs"], controls=["random_uniform"], null_reference=False,
        progress=False)
    assert set(res.table["layer"]) == {"vit.embeddings", "vit.encoder.layer.0",
                                       "vit.encoder.layer.1", "vit.layernorm", "classifier"}
    assert res.settings["methods"]["gradcam"]["resolved_layer"] == "vit.encoder.layer.0"
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    # the same gradient as the logits read by hand
    target = torch.tensor([1, 3])
    xg = x.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(model(xg).logits[torch.arange(2), target].sum(), xg)
    assert torch.allclose(methods.get("gradient")(model, x, target), ref)


# -- Grad-CAM on tokens ----------------------------------------------------------------------------
def reference_cam(model, x, target, module, seq_first=False):
    """Grad-CAM by hand: the module's tokens and their gradient, leading class token dropped
    when the model has one (17 tokens: 1 + 4 x 4), patch tokens on the 4 x 4 grid."""
    box = {}
    h = module.register_forward_hook(
        lambda m, a, o: box.__setitem__("t", o[0] if isinstance(o, tuple) else o))
    try:
        out = logits_of(model(x))
    finally:
        h.remove()
    (grad,) = torch.autograd.grad(out[torch.arange(len(x)), target].sum(), box["t"])
    tokens = box["t"].detach()
    if seq_first:
        tokens, grad = tokens.transpose(0, 1), grad.transpose(0, 1)
    if tokens.shape[1] == 17:
        tokens, grad = tokens[:, 1:], grad[:, 1:]
    weights = grad.mean(1)
    cam = torch.relu((weights[:, None, :] * tokens).sum(-1)).reshape(len(x), 1, 4, 4)
    return F.interpolate(cam, size=x.shape[2:], mode="bilinear", align_corners=False), cam


@pytest.mark.parametrize("case", ["timm_token", "timm_avg", "hf", "torch_seq_first"])
def test_gradcam_on_tokens(case):
    model, layer, seq_first = {
        "timm_token": (seeded(TinyViT), "blocks.1", False),  # the class token reads blocks.2
        "timm_avg": (seeded(TinyViT, pool="avg"), "blocks.2", False),  # mean-pooled: the last
        "hf": (seeded(HFViT), "vit.encoder.layer.0", False),
        "torch_seq_first": (seeded(EncoderNet), "encoder.layers.1", True),
    }[case]
    x, target = images(3), torch.tensor([0, 2, 4])
    gc = methods.get("gradcam")
    assert gc.resolved_settings(model, x)["resolved_layer"] == layer
    got = gc(model, x, target)
    ref, cam = reference_cam(model, x, target, dict(model.named_modules())[layer], seq_first)
    assert torch.allclose(got, ref, atol=1e-6)
    assert float((cam > 0).float().mean()) > 0.25  # not degenerate


def test_gradcam_at_the_last_block_of_a_class_token_vit_is_zero():
    # why the default stops one block early: those patch tokens never reach the class token
    model, x = seeded(TinyViT), images(2)
    assert float(methods.GradCAM(layer="blocks.2")(model, x, "predicted").abs().max()) == 0.0


def test_guided_backprop_refuses_gelu_in_a_vit():
    with pytest.raises(ValueError, match="GELU"):
        methods.get("guided_backprop")(seeded(TinyViT), images(1), "predicted")


def test_token_grid():
    assert token_grid(17, 16, 16) == (1, 4, 4)
    assert token_grid(18, 16, 16) == (2, 4, 4)  # class + distillation token
    assert token_grid(16, 16, 16) == (0, 4, 4)
    assert token_grid(8, 16, 32) == (0, 2, 4)  # a wide image: a wide grid
    assert token_grid(9, 16, 32) == (1, 2, 4)
    with pytest.raises(ValueError, match="patch grid"):
        token_grid(7, 16, 16, prefix=0)


def hf_factory() -> nn.Module:
    return seeded(HFViT)


def test_cli_takes_an_output_object_model(tmp_path):
    import json

    import numpy as np

    from saliency_sanity.cli import main

    data = tmp_path / "x.npz"
    np.savez(data, x=images(2).numpy(), y=np.array([0, 1]))
    out = tmp_path / "run"
    rc = main(["model-randomization", "--model", "test_architectures:hf_factory", "--data",
               str(data), "--methods", "gradient,gradcam", "--scores", "spearman_abs",
               "--controls", "none", "--out", str(out), "--no-progress"])
    assert rc == 0
    run = json.loads((out / "run.json").read_text())
    assert run["settings"]["methods"]["gradcam"]["resolved_layer"] == "vit.encoder.layer.0"
    assert [b["name"] for b in run["settings"]["blocks"]] == [
        "vit.embeddings", "vit.encoder.layer.0", "vit.encoder.layer.1", "vit.layernorm",
        "classifier"]
    assert run["settings"]["accuracy"]["n"] == 2  # the logits were read for the accuracy too


def test_trainer_accuracy_reads_output_objects():
    from saliency_sanity.training.trainer import accuracy

    model, x = seeded(HFViT), images(4)
    with torch.no_grad():
        y = model(x).logits.argmax(1)
    assert accuracy(model, x, y) == 1.0
    assert accuracy(model, x, (y + 1) % 5) == 0.0
