"""zennit (0.5.1) as the reference for the LRP method: composites, canonizers, attributions.

Imported only where zennit is installed (the vision environment): by the tests marked
``vision`` and by ``tools/make_lrp_reference.py``, which stores zennit's maps for the main
environment. The relevance at the output is ``one_hot * logits`` (the target's logit), as in
``methods.get("lrp")``.
"""

from __future__ import annotations

import torch
import zoo
from torch import nn
from zennit.attribution import Gradient
from zennit.canonizers import AttributeCanonizer, NamedMergeBatchNorm, SequentialMergeBatchNorm
from zennit.composites import (
    EpsilonAlpha2Beta1,
    EpsilonGammaBox,
    EpsilonPlus,
    EpsilonPlusFlat,
    LayerMapComposite,
    SpecialFirstLayerMapComposite,
    layer_map_base,
)
from zennit.layer import Sum
from zennit.rules import AlphaBeta, Epsilon, Flat, Gamma, WSquare, ZBox, ZPlus
from zennit.types import Convolution
from zennit.types import Linear as AnyLinear


def _block_forward(self, x):
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    out = self.canonizer_sum(torch.stack([x, out], dim=-1))
    return self.relu(out)


class BlockCanonizer(AttributeCanonizer):
    """The residual addition of ``zoo.Block`` as a ``Sum`` module (zennit's ResNet canonizer,
    written for the test zoo's block)."""

    def __init__(self):
        super().__init__(self._attribute_map)

    @staticmethod
    def _attribute_map(name, module):
        if isinstance(module, zoo.Block):
            return {"forward": _block_forward.__get__(module), "canonizer_sum": Sum()}
        return None


def bn_pairs(model: nn.Module) -> list[tuple[list[str], str]]:
    """(linear layer names, batch norm name) of the zoo's residual nets."""
    names = dict(model.named_modules())
    pairs = []
    for name, m in names.items():
        if isinstance(m, nn.BatchNorm2d):
            parent, _, leaf = name.rpartition(".")
            conv = {"bn": "stem", "bn1": "conv1", "bn2": "conv2"}[leaf]
            pairs.append(([f"{parent}.{conv}" if parent else conv], name))
    return pairs


class _ExactIdentity:
    """zennit 0.5.1's merge leaves the batch norm's ``eps`` in place, so its "identity" batch
    norm divides by sqrt(1 + eps) (a relative 5e-6 per batch norm with eps = 1e-5, measured);
    these canonizers also set ``eps`` to 0 while merged (and restore it), making the canonized
    model compute the original model's function."""

    def register(self, linears, batch_norm):
        self._eps = batch_norm.eps
        super().register(linears, batch_norm)
        batch_norm.eps = 0.0

    def remove(self):
        super().remove()
        self.batch_norm.eps = self._eps


class ExactNamedMergeBatchNorm(_ExactIdentity, NamedMergeBatchNorm):
    pass


class ExactSequentialMergeBatchNorm(_ExactIdentity, SequentialMergeBatchNorm):
    pass


def canonizers(model: nn.Module, exact: bool = True) -> list:
    named = ExactNamedMergeBatchNorm if exact else NamedMergeBatchNorm
    seq = ExactSequentialMergeBatchNorm if exact else SequentialMergeBatchNorm
    if any(isinstance(m, zoo.Block) for m in model.modules()):
        return [named(bn_pairs(model)), BlockCanonizer()]
    return [seq()]


def composite(name: str, model: nn.Module, low=None, high=None, exact: bool = True,
              **rule_kw):
    """zennit's composite ``name`` (ours: ``lrp.COMPOSITES``) or, for ``rule:<rule>``, that rule
    on every linear layer; ``first:<rule>:<rest>`` puts ``<rule>`` on the first layer."""
    canon = canonizers(model, exact)
    if name == "epsilon_plus_flat":
        return EpsilonPlusFlat(canonizers=canon)
    if name == "epsilon_gamma_box":
        return EpsilonGammaBox(low=low, high=high, canonizers=canon)
    if name == "epsilon_alpha2_beta1":
        return EpsilonAlpha2Beta1(canonizers=canon)
    if name == "epsilon_plus":
        return EpsilonPlus(canonizers=canon)
    kind, *rest = name.split(":")
    rules = {
        "zero": lambda: Epsilon(epsilon=0.0), "epsilon": lambda: Epsilon(**rule_kw),
        "gamma": lambda: Gamma(**rule_kw), "zplus": lambda: ZPlus(),
        "alpha_beta": lambda: AlphaBeta(**rule_kw), "flat": lambda: Flat(),
        "w_square": lambda: WSquare(), "z_box": lambda: ZBox(low=low, high=high),
    }
    if kind == "rule":
        rule = rules[rest[0]]
        return LayerMapComposite(layer_map=layer_map_base() + [
            (Convolution, rule()), (nn.Linear, rule())], canonizers=canon)
    if kind == "first":
        first, other = rules[rest[0]], rules[rest[1]]
        return SpecialFirstLayerMapComposite(
            layer_map=layer_map_base() + [(Convolution, other()), (nn.Linear, other())],
            first_map=[(AnyLinear, first())], canonizers=canon)
    raise KeyError(name)


def attribute(model: nn.Module, x: torch.Tensor, target: torch.Tensor, comp) -> torch.Tensor:
    """zennit's map for ``target`` with the target's logit as the output relevance."""
    model = model.eval()
    with Gradient(model=model, composite=comp) as attributor:
        def attr_output(out):
            return torch.zeros_like(out).scatter(1, target.view(-1, 1),
                                                 out.gather(1, target.view(-1, 1)))
        _, rel = attributor(x.clone().requires_grad_(True), attr_output)
    return rel.detach()
