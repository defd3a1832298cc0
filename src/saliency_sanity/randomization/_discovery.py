"""Layer discovery: parameterized layers in forward-execution order, grouped into blocks."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch import nn
from torch.overrides import TorchFunctionMode

from saliency_sanity._arch import is_attention_block, repeated_blocks
from saliency_sanity._guard import eval_mode

ROOT = "<root>"
"""Block name for parameters registered directly on the root module (e.g. a class token)."""

GroupBy = str | Sequence[str] | None


@dataclass(frozen=True)
class Block:
    """A named group of parameters that is randomized as one unit.

    Attributes:
        name: the block's name (a module name, a ``group_by`` entry, or ``"<root>"``).
        modules: names of the modules whose directly-owned parameters are in the block, in
            forward-execution order (``""`` is the root module).
        params: full (``state_dict``-style) names of the block's parameters.
        buffers: full names of the buffers of the block's modules (e.g. batch-norm running
            statistics); only the ``reinit`` scheme with ``reset_running_stats=True`` changes them.
        reached: False if none of the block's parameters was used in the traced forward pass
            (only possible with ``allow_unused=True``; such blocks are placed last).

    Example:
        >>> Block("fc", ("fc",), ("fc.weight", "fc.bias")).params
        ('fc.weight', 'fc.bias')
    """

    name: str
    modules: tuple[str, ...]
    params: tuple[str, ...]
    buffers: tuple[str, ...] = ()
    reached: bool = True


def call_model(model: nn.Module, example_input: Any) -> Any:
    """Call ``model`` on a tensor, a tuple/list of positional inputs or a dict of keyword inputs."""
    if isinstance(example_input, dict):
        return model(**example_input)
    if isinstance(example_input, (tuple, list)):
        return model(*example_input)
    return model(example_input)


class _ParamUseMode(TorchFunctionMode):
    """Records the first time each parameter appears as an argument of a torch operation."""

    def __init__(self, param_ids: dict[int, str], events: dict[str, int], clock) -> None:
        super().__init__()
        self.param_ids = param_ids
        self.events = events
        self.clock = clock

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        for leaf in pytree.tree_leaves((args, kwargs)):
            name = self.param_ids.get(id(leaf)) if isinstance(leaf, torch.Tensor) else None
            if name is not None and name not in self.events:
                self.events[name] = next(self.clock)
        return func(*args, **kwargs)


def _trace(model: nn.Module, example_input: Any) -> tuple[dict[str, int], dict[str, int]]:
    """One forward pass: first pre-hook time of each module, first use time of each parameter."""
    module_names = {id(m): n for n, m in model.named_modules()}
    param_ids = {id(p): n for n, p in model.named_parameters()}
    clock = itertools.count()
    module_events: dict[str, int] = {}
    param_events: dict[str, int] = {}

    def pre_hook(mod: nn.Module, _args: Any) -> None:
        name = module_names.get(id(mod))
        if name is not None and name not in module_events:
            module_events[name] = next(clock)

    if isinstance(model, torch.jit.ScriptModule):
        # TorchScript runs outside Python: no hooks, no torch-function modes. Fall back to the
        # registration order, which is what a traced or scripted nn.Sequential-like model follows.
        warnings.warn(
            "TorchScript model: its forward pass cannot be traced, so blocks are listed in "
            "registration order; load the model from its Python class for execution order",
            UserWarning,
            stacklevel=3,
        )
        for name, _ in model.named_modules():
            module_events.setdefault(name, next(clock))
        return module_events, param_events

    handles = []
    try:
        for mod in model.modules():
            handles.append(mod.register_forward_pre_hook(pre_hook))
        with eval_mode(model), torch.no_grad(), _ParamUseMode(param_ids, param_events, clock):
            call_model(model, example_input)
    finally:
        for h in handles:
            h.remove()
    return module_events, param_events


def _owner(full_name: str) -> str:
    return full_name.rpartition(".")[0]


def _group_key(module_name: str, group_by: GroupBy) -> str:
    if module_name == "":
        return ROOT
    if group_by is None or group_by == "modules":
        return module_name
    if group_by == "children":
        return module_name.split(".")[0]
    for g in group_by:
        if module_name == g or module_name.startswith(g + "."):
            return g
    return module_name


def _auto_groups(model: nn.Module, unit_time: dict[str, int | None]
                 ) -> tuple[list[str], dict[str, str]]:
    """Architecture-aware grouping (``group_by=None``): the repeated blocks of the model (each
    one block), and for a transformer the units that run before its first encoder layer (patch
    embedding, class token, position embedding) mapped to one embeddings block."""
    stacks = repeated_blocks(model)
    if not stacks:
        return [], {}
    modules = dict(model.named_modules())
    attention = [s for s in stacks if is_attention_block(modules[s])]
    if not attention:
        return stacks, {}
    inside = [t for u, t in unit_time.items() if t is not None
              and any(u == s or u.startswith(s + ".") for s in attention)]
    if not inside:
        return stacks, {}
    first = min(inside)
    pre = [u for u, t in unit_time.items() if t is not None and t < first
           and not any(u == s or u.startswith(s + ".") for s in stacks)]
    if not pre:
        return stacks, {}
    parts = [u.split(".") if u else [] for u in pre]
    common: list[str] = []
    for level in zip(*parts, strict=False):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    name = ".".join(common)
    if not name:  # spread over the model (a class token on the root): a name of its own
        name = "embeddings" if "embeddings" not in modules else "<embeddings>"
    return stacks, {u: name for u in pre}


def discover_blocks(
    model: nn.Module,
    example_input: Any,
    group_by: GroupBy = None,
    allow_unused: bool = False,
) -> list[Block]:
    """The model's parameterized layers in forward-execution order, grouped into named blocks.

    One forward pass on ``example_input`` (eval mode, ``torch.no_grad``; the model's modes, flags
    and hooks are restored afterwards) records when each module is first called and when each
    parameter is first used by a torch operation. A module's position is the first use of one of
    its own parameters (its first call if none was seen), so registration order does not matter,
    a module that is called twice counts at its first call, and parameters registered directly on
    a container (a class token on the root, a multi-head attention's ``in_proj_weight``) sit where
    they are first used. Shared modules and tied parameters appear once, under their first name.

    Args:
        model: the model (not modified).
        example_input: a tensor, a tuple/list of positional inputs or a dict of keyword inputs.
        group_by: ``None`` (the default): architecture-aware blocks. Each repeated block is one
            block (a transformer encoder layer of torchvision's, timm's or Hugging Face's ViTs
            or of ``nn.TransformerEncoder``; a ResNet basic/bottleneck block: see
            :func:`saliency_sanity._arch.repeated_blocks`); in a transformer, everything that
            runs before the first encoder layer (patch embedding, class token, position
            embedding) is one block, named after the module holding it all (``vit.embeddings``)
            or ``"embeddings"``; every other module that owns parameters directly is its own
            block (parameters of the root module form the block ``"<root>"``). A model with no
            repeated block gets one block per module. ``"modules"``: one block per module that
            owns parameters directly, whatever the architecture; ``"children"``: one block per
            top-level child; a list of module names: a module goes to the first listed name
            that equals its name or is a dotted prefix of it, modules matching none stay
            individual blocks.
        allow_unused: a module whose parameters the forward pass never reached raises a
            ``ValueError`` naming it, unless this is True: then its block is placed last with
            ``reached=False`` and a warning is given.

    Returns:
        Blocks in forward-execution order (the output layer last). Modules owning only buffers
        (e.g. a non-affine batch norm) do not form blocks of their own; their buffers join the
        block of their group when ``group_by`` groups them.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> [b.name for b in discover_blocks(net, torch.zeros(1, 3))]
        ['0', '2']
        >>> discover_blocks(net, torch.zeros(1, 3), group_by="children")[0].params
        ('0.weight', '0.bias')
    """
    if group_by is not None and group_by not in ("children", "modules"):
        if isinstance(group_by, str):
            raise ValueError(
                "group_by must be None, 'modules', 'children' or a list of module names, got "
                f"{group_by!r}"
            )
        known = {n for n, _ in model.named_modules()}
        unknown = [g for g in group_by if g not in known]
        if unknown:
            raise ValueError(f"group_by names no module of the model: {unknown}")

    module_events, param_events = _trace(model, example_input)

    # Units: modules owning parameters directly (deduplicated: first name wins).
    unit_params: dict[str, list[str]] = {}
    for pname, _ in model.named_parameters():
        unit_params.setdefault(_owner(pname), []).append(pname)

    unit_time: dict[str, int | None] = {}
    for mname, pnames in unit_params.items():
        used = [param_events[p] for p in pnames if p in param_events]
        unit_time[mname] = min(used) if used else module_events.get(mname)

    unreached = [m or ROOT for m, t in unit_time.items() if t is None]
    if unreached and not allow_unused:
        raise ValueError(
            "the forward pass on example_input never reached the parameters of these modules: "
            f"{unreached}; pass allow_unused=True to place them last (flagged), or group them "
            "into a block that is reached"
        )
    if unreached:
        warnings.warn(
            f"modules never reached by the forward pass are placed last: {unreached}",
            stacklevel=2,
        )

    stacks: list[str] = []
    embeddings: dict[str, str] = {}
    if group_by is None:
        stacks, embeddings = _auto_groups(model, unit_time)

    def key_of(mname: str) -> str:
        if mname in embeddings:
            return embeddings[mname]
        return _group_key(mname, stacks or None) if stacks else _group_key(mname, group_by)

    groups: dict[str, dict[str, Any]] = {}
    for mname, pnames in unit_params.items():
        g = groups.setdefault(key_of(mname), {"units": [], "params": []})
        g["units"].append(mname)
        g["params"].extend(pnames)

    buffers: dict[str, list[str]] = {}
    for bname, _ in model.named_buffers():
        owner = _owner(bname)
        key = key_of(owner)
        if key in groups:
            per_module = group_by in (None, "modules") and key not in stacks
            if per_module and owner not in groups[key]["units"]:
                continue
            buffers.setdefault(key, []).append(bname)

    never = float("inf")

    def time_of(unit: str) -> float:
        t = unit_time[unit]
        return never if t is None else t

    blocks = []
    for key, g in groups.items():
        units = sorted(g["units"], key=time_of)
        reached = any(unit_time[u] is not None for u in units)
        blocks.append(
            (
                time_of(units[0]),
                Block(
                    name=key,
                    modules=tuple(units),
                    params=tuple(g["params"]),
                    buffers=tuple(buffers.get(key, ())),
                    reached=reached,
                ),
            )
        )
    # Stable sort: unreached blocks keep registration order at the end.
    blocks.sort(key=lambda tb: tb[0])
    return [b for _, b in blocks]
