"""The localization check against its compute floor, in one process.

Case: the demo CNN (the paper's MNIST CNN, full width, random weights) on 2 x 2 grids of
28 x 28 cells (56 x 56), ``--grids`` grids in one batch, one method and one layer per run.

Ours: the whole check (``localization_test`` with one setting, method and layer, no controls, no
progress bar): front activations, maps, channel sums, upsampling, scores, AggAtt maps, tables.
The floor: the forward and backward passes the setting needs, in plain torch with the network's
layers called directly (no hooks, no wrappers, no scoring):

- GridPG: one forward of the grid through the features and the convolutional head (fc1 as a
  7 x 7 convolution, fc2 as 1 x 1, averaged), one backward per head (4 heads);
- DiFull: per scored head (2: top-left, bottom-right), that cell through the network, one
  backward (Grad-CAM: first every cell to ``relu2``, the stitched map its channel weights
  apply to, then per head the rest of the network from its cell's activations);
- DiPart: one forward of the grid's features, the 2 scored slices through the classifier, one
  backward per head.

Gradient: backward to the input. Grad-CAM at the final layer (``relu2``): the forward split at
``relu2`` (its output a leaf), backward to it, then ReLU(sum_c mean(g_c) A_c).

Ratios are of the median CPU times (one thread) over interleaved rounds, and of the fastest
rounds; on a loaded machine the fastest rounds are the better estimate of the work.

Run: ``python benchmarks/bench_localization.py`` (a few minutes), ``--quick``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import _common as C
import torch
import torch.nn.functional as F

from saliency_sanity import localization_test
from saliency_sanity.grids import GridSet, cell_slice, stitch


def _features(net: Any, x: torch.Tensor) -> torch.Tensor:  # up to relu2
    return net.relu2(net.conv2(net.pool1(net.relu1(net.conv1(x)))))


def _classify(net: Any, f: torch.Tensor) -> torch.Tensor:  # pooled features -> logits
    return net.fc2(net.relu3(net.fc1(f.flatten(1))))


def _conv_head(net: Any, f: torch.Tensor) -> torch.Tensor:  # GridPG's head on the grid
    w1 = net.fc1.weight.view(net.fc1.out_features, f.shape[1], 7, 7)
    h = torch.relu(F.conv2d(f, w1, net.fc1.bias))
    return F.conv2d(h, net.fc2.weight[:, :, None, None], net.fc2.bias).mean(dim=(2, 3))


def floor(net: Any, x: torch.Tensor, labels: torch.Tensor, setting: str, method: str
          ) -> list[torch.Tensor]:
    heads = [0, 1, 2, 3] if setting == "gridpg" else [0, 3]
    cam = method == "gradcam"
    out, acts = [], []
    if setting == "difull" and cam:  # every cell's activations (the stitched map), then heads
        b = x.shape[0]
        with torch.no_grad():
            cells = _features(net, torch.cat([cell_slice(x, k, 2) for k in range(4)]))
        stitched = stitch(cells, 2)
        for k in heads:
            a = cells[k * b:(k + 1) * b].clone().requires_grad_(True)
            logits = _classify(net, net.pool2(a))
            (g,) = torch.autograd.grad(logits.gather(1, labels[:, k:k + 1]).sum(), a)
            w = g.sum(dim=(2, 3), keepdim=True) / (stitched.shape[2] * stitched.shape[3])
            out.append(torch.relu((w * stitched).sum(1)))
        return out
    if setting == "difull":
        for k in heads:
            cell = cell_slice(x, k, 2).detach().requires_grad_(not cam)
            if cam:
                a = _features(net, cell).detach().requires_grad_(True)
                logits, leaf = _classify(net, net.pool2(a)), a
            else:
                logits, leaf = _classify(net, net.pool2(_features(net, cell))), cell
            (g,) = torch.autograd.grad(logits.gather(1, labels[:, k:k + 1]).sum(), leaf)
            out.append(g)
            acts.append(leaf.detach())
    else:
        xg = x.detach().requires_grad_(not cam)
        a = _features(net, xg)
        if cam:
            a = a.detach().requires_grad_(True)
        f = net.pool2(a)
        if setting == "gridpg":
            logits = _conv_head(net, f).unsqueeze(1).expand(-1, 4, -1)
        else:
            parts = torch.cat([cell_slice(f, k, 2) for k in heads])
            logits = _classify(net, parts).view(len(heads), x.shape[0], -1).transpose(0, 1)
            logits = torch.stack([logits[:, heads.index(k)] if k in heads else logits[:, 0]
                                  for k in range(4)], dim=1)
        leaf = a if cam else xg
        for i, k in enumerate(heads):
            score = logits[:, k].gather(1, labels[:, k:k + 1]).sum()
            (g,) = torch.autograd.grad(score, leaf, retain_graph=i < len(heads) - 1)
            out.append(g)
            acts.append(leaf.detach())
    if cam:
        return [torch.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(1))
                for g, a in zip(out, acts, strict=True)]
    return out


def bench(n_grids: int, repeats: int, settings: tuple[str, ...] = ("gridpg", "difull", "dipart")
          ) -> list[dict[str, Any]]:
    net = C.demo_cnn(seed=0)
    for p in net.parameters():
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n_grids, 1, 56, 56, generator=gen)
    labels = torch.stack([torch.randperm(10, generator=gen)[:4] for _ in range(n_grids)])
    grids = GridSet(x, labels, torch.zeros_like(labels))
    rows = []
    for method, layer in (("gradient", "input"), ("gradcam", "final")):
        for setting in settings:
            def ours(method: str = method, layer: str = layer, setting: str = setting) -> Any:
                return localization_test(net, grids, methods=[method], settings=[setting],
                                         layers=[layer], controls=False, progress=False,
                                         batch_size=n_grids)

            def base(method: str = method, setting: str = setting) -> Any:
                return floor(net, x, labels, setting, method)

            cases: dict[str, Callable[[], Any]] = {"ours": ours, "floor": base}
            times, _ = C.interleaved(cases, repeats, torch.device("cpu"))
            row = {"setting": setting, "method": method, "layer": layer, "grids": n_grids,
                   **{k: C.median(v) for k, v in times.items()}}
            row["ratio_cpu"] = row["ours:cpu"] / row["floor:cpu"]
            row["ratio_wall"] = row["ours"] / row["floor"]
            row["ratio_cpu_min"] = min(times["ours:cpu"]) / min(times["floor:cpu"])
            rows.append(row)
            print(f"{setting:7s} {method:9s} {layer:6s} ours {row['ours:cpu'] * 1e3:8.1f} ms cpu"
                  f"  floor {row['floor:cpu'] * 1e3:8.1f} ms  ratio {row['ratio_cpu']:.2f}x "
                  f"(fastest runs {row['ratio_cpu_min']:.2f}x, wall {row['ratio_wall']:.2f}x)",
                  flush=True)
    return rows


def main() -> None:
    p = C.parser(__doc__, "fewer grids and repeats", threads=1)
    p.add_argument("--grids", type=int, default=None)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--settings", default="gridpg,difull,dipart", help="comma-separated")
    a = C.start(p)
    n = a.grids or (8 if a.quick else 64)
    repeats = a.repeats or (3 if a.quick else 9)
    print(f"# grids {n}, repeats {repeats}, threads {a.threads}")
    rows = bench(n, repeats, tuple(v for v in a.settings.split(",") if v))
    C.write_rows(a.json, rows)


if __name__ == "__main__":
    main()
