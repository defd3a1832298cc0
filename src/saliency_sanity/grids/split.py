"""The rest of a network after one of its layers, as a module of its own (``torch.fx``).

A method at a layer needs the network forwarded from the layer's activations. Forward hooks can
hand the layer's consumers new activations, but the layers before it still run; splitting the
traced graph at the layer computes only what comes after. :func:`rest_after` returns that part,
or None when the model cannot be traced symbolically, the layer is not one call in the graph, or
something after the layer also reads values computed before it (a connection around the layer):
the hook path is then used instead (:class:`~saliency_sanity.grids.Head`).

The returned module shares the network's submodules (hooks and substitutions on them, such as
guided backprop's, apply) and is built once per model and layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import fx, nn


def rest_after(net: nn.Module, layer: str, leaves: Sequence[str] = ()) -> nn.Module | None:
    """A module mapping ``layer``'s output to the network's output, or None (see above).
    ``leaves``: modules kept as single calls (their hooks must fire: DiPart's split point).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3))
        >>> rest = rest_after(net, "1")
        >>> a = torch.randn(2, 2, 2, 2)
        >>> torch.equal(rest(a), net[3](net[2](a)))
        True
    """
    class _Tracer(fx.Tracer):  # the layer is one call, however it is built inside
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return (qualname == layer or qualname in leaves
                    or super().is_leaf_module(m, qualname))

    try:
        gm = fx.GraphModule(net, _Tracer().trace(net))
    except Exception:  # any tracing failure means: use the hook path
        return None
    nodes = list(gm.graph.nodes)
    hits = [n for n in nodes if n.op == "call_module" and n.target == layer]
    if len(hits) != 1:
        return None
    start = hits[0]
    after: set[fx.Node] = set()
    seen_start = False
    for n in nodes:
        if n is start:
            seen_start = True
            continue
        if seen_start and any(a is start or a in after for a in n.all_input_nodes):
            after.add(n)
    output = next((n for n in nodes if n.op == "output"), None)
    if output not in after:
        return None
    for n in after:  # nothing after the layer may read another value from before it
        for a in n.all_input_nodes:
            if a is not start and a not in after and a.op != "get_attr":
                return None
    graph = fx.Graph()
    env: dict[fx.Node, Any] = {start: graph.placeholder("activations")}
    for n in nodes:
        if n in after:
            for a in n.all_input_nodes:
                if a not in env:  # a constant (get_attr) read after the layer
                    env[a] = graph.node_copy(a, lambda m: env[m])
            env[n] = graph.node_copy(n, lambda m: env[m])
    graph.lint()
    return fx.GraphModule(gm, graph)


def same_as_hooks(rest: nn.Module, net: nn.Module, layer: str, x: torch.Tensor) -> bool:
    """Whether ``rest`` reproduces the network from ``layer`` on ``x`` (checked once)."""
    module = dict(net.named_modules())[layer]
    got: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, o: got.append(o))
    try:
        with torch.no_grad():
            want = net(x)
            out = rest(got[0]) if len(got) == 1 else None
    finally:
        handle.remove()
    return isinstance(out, torch.Tensor) and out.shape == want.shape and bool(
        torch.allclose(out, want, rtol=1e-5, atol=1e-6))
