"""``lrp``: Layer-wise Relevance Propagation as a registered method (pure torch).

The relevance at the output is the target's logit (``one_hot * logits``, zennit's
``attr_output``), so LRP-0 on a bias-free ReLU net equals gradient x input and conserving rules
sum to the logit. See ``tracer.py`` for how the model's operations are handled and
``composites.py`` / ``rules.py`` for the rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..base import Method, check_logits, check_target_range
from ..guided import refuse_torchscript
from ..registry import METHODS
from .composites import COMPOSITES, RuleMap, build, rule_names
from .tracer import LRPMode

#: module types with parameters that LRP covers (others with parameters of their own are refused)
COVERED_WITH_PARAMS: tuple[type[nn.Module], ...] = (
    nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
    nn.PReLU,
)
#: module types no rule covers
UNCOVERED: tuple[type[nn.Module], ...] = (
    nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm, nn.modules.instancenorm._InstanceNorm,
    nn.modules.conv._ConvTransposeNd, nn.Embedding, nn.EmbeddingBag, nn.Bilinear,
    nn.MultiheadAttention, nn.RNNBase, nn.Transformer, nn.TransformerEncoderLayer,
    nn.TransformerDecoderLayer,
)


def uncovered_layers(model: nn.Module) -> list[str]:
    """``"name (Type)"`` of every submodule no LRP rule covers: the types in ``UNCOVERED`` and
    leaf modules with parameters of their own other than linear, convolution, batch norm and
    PReLU.

    Example:
        >>> uncovered_layers(nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2)))
        ['1 (LayerNorm)']
    """
    out = []
    skip: set[str] = set()
    for name, m in model.named_modules():
        if any(name.startswith(s + ".") for s in skip):
            continue
        if isinstance(m, UNCOVERED) or (
                not isinstance(m, COVERED_WITH_PARAMS)
                and any(True for _ in m.parameters(recurse=False))):
            out.append(f"{name or '<model>'} ({type(m).__name__})")
            skip.add(name)
    return out


class LRP(Method):
    """Layer-wise Relevance Propagation (Bach et al. 2015; composites as in zennit).

    Args:
        composite: ``epsilon_plus_flat`` (the default when ``rules`` is not given either),
            ``epsilon_gamma_box``, ``epsilon_alpha2_beta1`` or ``epsilon_plus`` (see
            ``lrp.composites``).
        rules: one rule name for every linear layer (``"zero"`` = LRP-0, ``"epsilon"``,
            ``"gamma"``, ``"zplus"``, ``"alpha_beta"``, ``"flat"``, ``"w_square"``,
            ``"z_box"``), or ``{kind: rule}`` with kinds ``"conv"``, ``"linear"``, ``"first"``
            (overriding the composite's choice for those kinds).
        epsilon: the epsilon rule's epsilon (zennit's default 1e-6).
        gamma: the gamma rule's gamma (0.25).
        alpha, beta: the alpha-beta rule's parameters for ``rules`` (alpha - beta = 1).
        stabilizer: the denominators' stabilizer of every other rule, sums and pooling (1e-6).
        low, high: the input data's bounds for ``z_box`` (``epsilon_gamma_box``): numbers,
            one value per channel, or tensors broadcastable to the input. Required there.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(3, 4, bias=False), nn.ReLU(),
        ...                     nn.Linear(4, 2, bias=False))
        >>> x = torch.tensor([[1.0, -2.0, 0.5]])
        >>> r = LRP(rules="epsilon", epsilon=0.0)(net, x, torch.tensor([0]))
        >>> bool(torch.isclose(r.sum(), net(x)[0, 0], atol=1e-5))   # conservation
        True
    """

    name = "lrp"
    #: the composite of the names registered for each composite
    fixed_composite: str | None = None

    def __init__(self, composite: str | None = None,
                 rules: str | Mapping[str, Any] | None = None, epsilon: float = 1e-6,
                 gamma: float = 0.25, alpha: float = 2.0, beta: float = 1.0,
                 stabilizer: float = 1e-6, low: Any = None, high: Any = None) -> None:
        super().__init__()
        if self.fixed_composite is not None:
            if composite not in (None, self.fixed_composite):
                raise ValueError(f"{self.name} uses the composite {self.fixed_composite!r}; use "
                                 f"methods.get('lrp', composite={composite!r}) for another")
            composite = self.fixed_composite
        elif composite is None and rules is None:
            composite = "epsilon_plus_flat"
        names = rule_names(composite, rules)
        self.names = names
        self.stabilizer = float(stabilizer)
        params = {"epsilon": epsilon, "gamma": gamma, "stabilizer": stabilizer,
                  "alpha": alpha, "beta": beta, "low": low, "high": high}
        self._missing_bounds = "z_box" in (names.get("first"), names.get("conv"),
                                           names.get("linear")) and (low is None or high is None)
        self._what = f"composite {composite!r}" if composite else "the z_box rule"
        self.rule_map: RuleMap = build(names, **params)
        self._settings = {"composite": composite,
                          "rules": {k: (v if isinstance(v, str) else repr(v))
                                    for k, v in names.items() if k != "first_kinds"},
                          **params}

    def attribute(self, model: Any, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self._missing_bounds:
            raise ValueError(
                f"{self.name}: {self._what} needs the bounds of the input data: pass low= and "
                "high= (the smallest and largest value an input can take, e.g. low=0.0, "
                "high=1.0 for images in [0, 1]; one value per channel, or tensors, for "
                "normalized inputs)")
        refuse_torchscript(model, self.name)
        if not isinstance(model, nn.Module):
            raise TypeError(f"{self.name} needs an nn.Module (its layers get the rules), got "
                            f"{type(model).__name__}")
        bad = uncovered_layers(model)
        if bad:
            raise ValueError(f"{self.name}: no LRP rule covers these layers: {', '.join(bad)}. "
                             "LRP here handles linear and convolutional layers, batch norm, "
                             "activations, pooling and residual sums")
        for p in model.parameters():  # the guard restores the flags
            p.requires_grad_(False)
        xg = x.detach().clone().requires_grad_(True)
        mode = LRPMode(self.rule_map, self.stabilizer, who=self.name)
        with mode:
            logits = check_logits(model(xg), x.shape[0], self.name)
        check_target_range(target, logits.shape[1], self.name)
        if not logits.requires_grad:
            raise ValueError(f"{self.name}: the model's output does not depend on its input")
        idx = target.view(-1, 1)
        relevance = torch.zeros_like(logits).scatter(1, idx, logits.detach().gather(1, idx))
        (r,) = torch.autograd.grad(logits, xg, relevance)
        return r


METHODS.register("lrp")(LRP)


def _fixed(composite: str) -> type[LRP]:
    doc = (f"LRP with the ``{composite}`` composite (``methods.get('lrp', "
           f"composite='{composite}')`` under a name of its own, so several composites can be "
           "compared in one run).")
    cls = type(f"LRP_{composite}", (LRP,), {"name": f"lrp_{composite}",
                                             "fixed_composite": composite, "__doc__": doc})
    METHODS.register(f"lrp_{composite}")(cls)
    return cls


COMPOSITE_METHODS = {c: _fixed(c) for c in COMPOSITES}
