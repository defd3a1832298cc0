"""LRP composites: which rule each kind of linear layer gets.

Layer kinds: ``"conv"`` (``F.conv1d/2d/3d``, i.e. ``nn.Conv1d/2d/3d``), ``"linear"``
(``F.linear``, i.e. ``nn.Linear``) and ``"first"``: the first convolution or linear layer that
runs in the forward pass (for the composites with a special first layer, only the kinds in their
``first_kinds`` qualify, as in zennit: EpsilonGammaBox's z-box goes to the first convolution).

==========================  ==============  ==========  =============  ==================
composite (zennit's class)  first layer     conv        linear         first kinds
==========================  ==============  ==========  =============  ==================
``epsilon_plus_flat``       ``flat``        ``zplus``   ``epsilon``    conv, linear
``epsilon_gamma_box``       ``z_box``       ``gamma``   ``epsilon``    conv
``epsilon_alpha2_beta1``    --              alpha=2,    ``epsilon``    --
                                            beta=1
``epsilon_plus``            --              ``zplus``   ``epsilon``    --
==========================  ==============  ==========  =============  ==================

Every composite also handles, like zennit's ``layer_map_base``: activations pass relevance
through unchanged; sums of two input-dependent tensors (residual additions) and average pooling
distribute it in proportion to their inputs (zennit's ``Norm``); batch norm after a linear layer
is merged into it, other batch norms pass relevance through; max pooling keeps its gradient
(winner takes all).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .rules import RULES, Rule, make_rule

KINDS = ("first", "conv", "linear")

COMPOSITES: dict[str, dict[str, Any]] = {
    "epsilon_plus_flat": {"first": "flat", "conv": "zplus", "linear": "epsilon",
                          "first_kinds": ("conv", "linear")},
    "epsilon_gamma_box": {"first": "z_box", "conv": "gamma", "linear": "epsilon",
                          "first_kinds": ("conv",)},
    "epsilon_alpha2_beta1": {"conv": "alpha_beta", "linear": "epsilon"},
    "epsilon_plus": {"conv": "zplus", "linear": "epsilon"},
}


@dataclass(frozen=True)
class RuleMap:
    """The rule of each layer kind (None: no rule; a model with such a layer is refused)."""

    first: Rule | None
    conv: Rule | None
    linear: Rule | None
    first_kinds: tuple[str, ...]

    def rule(self, kind: str, first: bool) -> Rule | None:
        if first and self.first is not None and kind in self.first_kinds:
            return self.first
        return self.conv if kind == "conv" else self.linear


def rule_names(composite: str | None, rules: str | Mapping[str, Any] | None
               ) -> dict[str, Any]:
    """The rule names per kind (and ``first_kinds``) from a composite and per-kind overrides.

    Example:
        >>> rule_names("epsilon_plus", {"linear": "zero"})["linear"]
        'zero'
        >>> rule_names(None, "epsilon")["conv"]
        'epsilon'
    """
    if composite is not None and composite not in COMPOSITES:
        raise ValueError(f"unknown LRP composite {composite!r}; known composites: "
                         f"{', '.join(COMPOSITES)} (or pass rules=... instead)")
    names: dict[str, Any] = dict(COMPOSITES[composite]) if composite else {}
    if isinstance(rules, (str, Rule)):
        rules = {"conv": rules, "linear": rules}
    if rules is not None:
        if not isinstance(rules, Mapping):
            raise TypeError(f"rules must be a rule name or a dict {{kind: rule}}, got "
                            f"{type(rules).__name__}")
        bad = sorted(set(rules) - set(KINDS))
        if bad:
            raise ValueError(f"unknown layer kinds {bad} in rules; use {', '.join(KINDS)}")
        for kind, rule in rules.items():
            if not isinstance(rule, Rule) and rule not in RULES:
                raise ValueError(f"unknown LRP rule {rule!r} for {kind!r}; known rules: "
                                 f"{', '.join(RULES)}")
        names.update(rules)
        if "first" in rules and "first_kinds" not in names:
            names["first_kinds"] = ("conv", "linear")
    if not names:
        raise ValueError("LRP needs a composite or rules: e.g. composite='epsilon_plus_flat' or "
                         "rules={'conv': 'zplus', 'linear': 'epsilon'}")
    names.setdefault("first_kinds", ())
    return names


def build(names: Mapping[str, Any], **params: Any) -> RuleMap:
    """A :class:`RuleMap` from :func:`rule_names`' output and the rule parameters."""
    made = {k: None if names.get(k) is None else make_rule(names[k], **params) for k in KINDS}
    return RuleMap(first=made["first"], conv=made["conv"], linear=made["linear"],
                   first_kinds=tuple(names.get("first_kinds", ())))
