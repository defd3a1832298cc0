"""One LRP map vs one gradient map (and vs zennit where it is installed).

For each model (the demo MNIST CNN at 1x28x28; the ResNet-18-shaped net of ``_common`` at
3 x size x size) and each composite, times in one process, interleaved:

- ``gradient``: ``methods.get("gradient")`` (one forward and one backward pass);
- ``lrp_<composite>``: ``methods.get("lrp", composite=...)``;
- ``zennit`` (when zennit imports): zennit 0.5.1's ``Gradient`` attributor with the composite,
  canonizers (batch norm merged; the residual additions as ``Sum`` modules) applied and removed
  inside the timed call, as a user would; the maps' max relative difference is printed too
  (with zennit's merge made exact: its merge keeps the batch norms' eps otherwise).

All calls get the same targets as a LongTensor (no extra pass to resolve "predicted"). Prints the
median wall and CPU seconds and the ratios LRP / gradient and LRP / zennit.

Run: ``python benchmarks/bench_lrp.py`` (a few minutes on 2 cores; ``--quick`` for a smaller
ResNet input); in the vision environment for the zennit column. ``--threads 1`` on a loaded
machine, and read the CPU-time ratios.
"""

from __future__ import annotations

import argparse
from typing import Any

import _common as C
import torch

from saliency_sanity import methods

COMPOSITES = ["epsilon_plus_flat", "epsilon_gamma_box", "epsilon_alpha2_beta1", "epsilon_plus"]


def _zennit_canonizers(model: torch.nn.Module) -> list:
    """Batch norms merged (and, for the ResNet-18-shaped net, its residual additions as
    zennit ``Sum`` modules, as zennit's ResNetCanonizer does for torchvision's blocks)."""
    from zennit.canonizers import AttributeCanonizer, SequentialMergeBatchNorm
    from zennit.layer import Sum

    class ExactMerge(SequentialMergeBatchNorm):
        """zennit's merge also setting the batch norm's eps to 0 (see docs/methods.md)."""

        def register(self, linears: Any, batch_norm: Any) -> None:
            self._eps = batch_norm.eps
            super().register(linears, batch_norm)
            batch_norm.eps = 0.0

        def remove(self) -> None:
            super().remove()
            self.batch_norm.eps = self._eps

    if not isinstance(model, C.ResNet18):
        return [ExactMerge()]
    pairs = [(["conv1"], "bn1")]
    for name, m in model.named_modules():
        if isinstance(m, C.BasicBlock):
            pairs += [([f"{name}.conv1"], f"{name}.bn1"), ([f"{name}.conv2"], f"{name}.bn2")]

    def forward(self: Any, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu2(self.canonizer_sum(torch.stack([identity, out], dim=-1)))

    def attributes(name: str, module: torch.nn.Module) -> dict[str, Any] | None:
        if isinstance(module, C.BasicBlock):
            return {"forward": forward.__get__(module), "canonizer_sum": Sum()}
        return None

    return [ExactMerge(), AttributeCanonizer(attributes)]


def zennit_fn(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, composite: str
              ) -> Any:
    """A zennit attribution as a zero-argument callable, or None without zennit."""
    try:
        from zennit.attribution import Gradient
        from zennit.composites import COMPOSITES as ZC
    except ImportError:
        return None
    kw = {"low": 0.0, "high": 1.0} if composite == "epsilon_gamma_box" else {}

    def run() -> torch.Tensor:
        comp = ZC[composite](canonizers=_zennit_canonizers(model), **kw)
        with Gradient(model=model, composite=comp) as attributor:
            def out_fn(out: torch.Tensor) -> torch.Tensor:
                idx = target.view(-1, 1)
                return torch.zeros_like(out).scatter(1, idx, out.gather(1, idx))
            _, rel = attributor(x.clone().requires_grad_(True), out_fn)
        return rel

    return run


def run(case: C.ModelCase, n: int, repeats: int, device: torch.device,
        composites: list[str]) -> list[dict[str, Any]]:
    model = case.build().to(device).eval()
    x = C.make_inputs(n, case.input_shape).to(device)
    with torch.no_grad():
        target = model(x).argmax(1)
    grad = methods.get("gradient")
    cases: dict[str, Any] = {"gradient": lambda: grad(model, x, target, checked_target=True)}
    for comp in composites:
        kw = {"low": 0.0, "high": 1.0} if comp == "epsilon_gamma_box" else {}
        m = methods.get("lrp", composite=comp, **kw)
        cases[f"lrp_{comp}"] = (lambda m=m: m(model, x, target, checked_target=True))
        z = zennit_fn(model, x, target, comp)
        if z is not None:
            cases[f"zennit_{comp}"] = z
    times, outs = C.interleaved(cases, repeats, device)
    g_wall, g_cpu = C.median(times["gradient"]), C.median(times["gradient:cpu"])
    rows = []
    for comp in composites:
        key = f"lrp_{comp}"
        row = {"case": case.name, "n": n, "composite": comp,
               "gradient_wall": g_wall, "gradient_cpu": g_cpu,
               "lrp_wall": C.median(times[key]), "lrp_cpu": C.median(times[key + ":cpu"])}
        row["lrp/gradient_cpu"] = row["lrp_cpu"] / g_cpu
        row["lrp/gradient_wall"] = row["lrp_wall"] / g_wall
        if f"zennit_{comp}" in times:
            row["zennit_cpu"] = C.median(times[f"zennit_{comp}:cpu"])
            row["lrp/zennit_cpu"] = row["lrp_cpu"] / row["zennit_cpu"]
            ref = outs[f"zennit_{comp}"]
            row["max_rel_diff"] = float((outs[key] - ref).abs().max() / ref.abs().max())
        rows.append(row)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=8, help="images per map (8)")
    p.add_argument("--size", type=int, default=224, help="ResNet-18 input size (224)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="ResNet-18 at 64x64, 3 repeats")
    p.add_argument("--composites", default=",".join(COMPOSITES))
    args = p.parse_args()
    if args.threads:
        C.setup_threads(args.threads)
    device = torch.device(args.device)
    C.print_machine(device)
    size, repeats = (64, 3) if args.quick else (args.size, args.repeats)
    comps = args.composites.split(",")
    rows = run(C.model_case("cnn"), args.n, repeats, device, comps)
    rows += run(C.model_case("resnet18", size), args.n, repeats, device, comps)
    print("| case | composite | gradient CPU s | LRP CPU s | LRP/gradient CPU (wall) | "
          "LRP/zennit CPU | vs zennit |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        zen = f"{r['lrp/zennit_cpu']:.2f}" if "lrp/zennit_cpu" in r else "-"
        diff = f"{r['max_rel_diff']:.1e}" if "max_rel_diff" in r else "-"
        print(f"| {r['case']} | {r['composite']} | {r['gradient_cpu']:.4f} | {r['lrp_cpu']:.4f} | "
              f"{r['lrp/gradient_cpu']:.2f} ({r['lrp/gradient_wall']:.2f}) | {zen} | {diff} |")


if __name__ == "__main__":
    main()
