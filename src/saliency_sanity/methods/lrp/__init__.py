"""Layer-wise Relevance Propagation in pure torch: rules, composites, canonization, the method.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from saliency_sanity import methods
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3))
    >>> methods.get("lrp", composite="epsilon_plus")(net, torch.rand(2, 1, 4, 4)).shape
    torch.Size([2, 1, 4, 4])
"""

from .composites import COMPOSITES, KINDS, RuleMap, rule_names
from .method import COMPOSITE_METHODS, LRP, uncovered_layers
from .rules import RULES, LayerCall, Rule, stabilize
from .tracer import LRPMode

__all__ = ["COMPOSITES", "COMPOSITE_METHODS", "KINDS", "LRP", "LRPMode", "LayerCall", "RULES",
           "Rule", "RuleMap", "rule_names", "stabilize", "uncovered_layers"]
