"""The model's accuracy on the explained inputs, recorded in a result's settings for the
report's header (the command line and the demo record it beside every check)."""

from __future__ import annotations

from typing import Any

import torch

from .._arch import logits_of
from .._guard import eval_mode, model_device


def model_accuracy(model: Any, x: Any, y: Any, batch_size: int = 64) -> dict[str, Any] | None:
    """The model's accuracy on the explained inputs ``x`` against labels ``y``:
    ``{"correct": k, "n": n, "accuracy": k / n}``, or None when there are no usable labels (no
    ``y``, a length that does not match, or labels outside ``0 .. classes - 1``, such as the -1
    of unlabelled images). Computed in eval mode without gradients, on the model's device; a
    low accuracy on a trained model usually means the inputs are not preprocessed as in training.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Linear(2, 2, bias=False)
        >>> with torch.no_grad():
        ...     _ = net.weight.copy_(torch.eye(2))
        >>> model_accuracy(net, torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]),
        ...                torch.tensor([0, 1, 1]))
        {'correct': 2, 'n': 3, 'accuracy': 0.6666666666666666}
        >>> model_accuracy(net, torch.zeros(2, 2), None) is None
        True
        >>> model_accuracy(net, torch.zeros(2, 2), torch.tensor([-1, -1])) is None  # unlabelled
        True
    """
    if y is None:
        return None
    y = torch.as_tensor(y).reshape(-1)
    if y.dtype.is_floating_point and bool((y == y.round()).all()):
        y = y.long()  # labels saved as floats (3.0)
    if len(y) != len(x) or len(y) == 0 or y.dtype.is_floating_point or bool((y < 0).any()):
        return None
    dev = model_device(model)
    correct = 0
    with torch.no_grad(), eval_mode(model):
        for i in range(0, len(x), batch_size):
            out = logits_of(model(x[i:i + batch_size].to(dev)))
            if out.dim() != 2 or bool((y[i:i + batch_size] >= out.shape[1]).any()):
                return None
            correct += int((out.argmax(1).cpu() == y[i:i + batch_size].cpu()).sum())
    return {"correct": correct, "n": int(len(y)), "accuracy": correct / len(y)}


def record_accuracy(result: Any, model: Any, x: Any, y: Any) -> dict[str, Any] | None:
    """Store :func:`model_accuracy` in ``result.settings["accuracy"]`` (when labels are known)
    for the report's header; return it.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> import pandas as pd
        >>> from saliency_sanity.results import CheckResult
        >>> r = CheckResult(check="model_randomization", table=pd.DataFrame())
        >>> record_accuracy(r, nn.Linear(2, 3), torch.zeros(4, 2), torch.tensor([0, 1, 2, 0]))["n"]
        4
        >>> r.settings["accuracy"]["n"]
        4
    """
    acc = model_accuracy(model, x, y)
    if acc is not None:
        result.settings["accuracy"] = acc
    return acc
