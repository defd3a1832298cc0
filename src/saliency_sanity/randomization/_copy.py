"""Copies of the user's model: a private deep copy, and copy-on-write stage copies."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


def fresh_copy(model: nn.Module, device: torch.device | str | None = None) -> nn.Module:
    """A deep copy in eval mode with no gradients (optionally moved to ``device``).

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2)).train()
        >>> twin = fresh_copy(net)
        >>> twin is net, twin.training, net.training
        (False, False, True)
    """
    twin = copy.deepcopy(model)
    if device is not None:
        twin = twin.to(device)
    for p in twin.parameters():
        p.grad = None
    return twin.eval()


def shared_copy(base: nn.Module, fresh: set[str]) -> nn.Module:
    """A copy of ``base`` that shares everything with it except the tensors named in ``fresh``,
    which are cloned (ready to be randomized in place).

    Stages of a randomization differ only in their randomized blocks, so sharing the rest costs
    no memory and almost no time: copy-on-write on the module tree. Only the modules on the
    path from the root to a fresh tensor are new objects (copied shallowly, with their own
    parameter, buffer, submodule and hook containers); every other submodule is ``base``'s own
    object. A module registered twice is handled once. Nothing may modify a shared module or
    tensor: the runner never does (methods remove the hooks they add).

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
        >>> twin = shared_copy(net, {"1.weight"})
        >>> twin is net, twin[0] is net[0], twin[1] is net[1], twin[1].bias is net[1].bias
        (False, True, False, True)
        >>> torch.equal(twin[1].weight, net[1].weight), twin[1].weight is net[1].weight
        (True, False)
    """
    if isinstance(base, torch.jit.ScriptModule):  # no structural copy for TorchScript
        memo: dict[int, Any] = {}
        for name, t in [*base.named_parameters(), *base.named_buffers()]:
            if name not in fresh:
                memo[id(t)] = t
        return copy.deepcopy(base, memo)
    modules: dict[int, nn.Module] = {}
    tensors: dict[int, torch.Tensor] = {}

    def tensor(t: torch.Tensor | None, name: str) -> torch.Tensor | None:
        if t is None or name not in fresh:
            return t
        if id(t) not in tensors:  # tied tensors stay tied
            if isinstance(t, nn.Parameter):
                tensors[id(t)] = nn.Parameter(t.detach().clone(), requires_grad=t.requires_grad)
            else:
                tensors[id(t)] = t.detach().clone()
        return tensors[id(t)]

    owners = {name.rpartition(".")[0] for name in fresh}
    on_path = {""} | {".".join(o.split(".")[:i]) for o in owners if o
                      for i in range(1, o.count(".") + 2)}

    def clone(mod: nn.Module, prefix: str) -> nn.Module:
        if id(mod) in modules:
            return modules[id(mod)]
        if prefix.rstrip(".") not in on_path:
            modules[id(mod)] = mod  # nothing fresh below: share the module itself
            return mod
        new = object.__new__(type(mod))  # a shallow copy, without copyreg's slow path
        new.__dict__.update({k: copy.copy(v) if isinstance(v, (dict, set)) else v
                             for k, v in vars(mod).items()})
        modules[id(mod)] = new
        new._parameters = {k: tensor(p, prefix + k) for k, p in mod._parameters.items()}
        new._buffers = {k: tensor(b, prefix + k) for k, b in mod._buffers.items()}
        new._modules = {k: None if c is None else clone(c, f"{prefix}{k}.")
                        for k, c in mod._modules.items()}
        return new

    return clone(base, "")
