"""Optional dependencies, guarded in one place with a message naming the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

_EXTRAS = {
    "captum": "pip install 'saliency-sanity[captum]'  (or: pip install captum)",
    "torchvision": "pip install 'saliency-sanity[vision]'",
    "timm": "pip install 'saliency-sanity[vision]'",
    "quantus": "pip install quantus==0.6.0",
    "ray": "pip install 'saliency-sanity[ray]'  (or: pip install 'ray>=2.9')",
}


def require(module: str) -> ModuleType:
    """Import an optional module or raise an ImportError that says how to install it.

    Example:
        >>> require("math").sqrt(4.0)
        2.0
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        hint = _EXTRAS.get(module.split(".")[0], f"pip install {module.split('.')[0]}")
        raise ImportError(f"{module!r} is needed here; install it with: {hint}") from err


def available(module: str) -> bool:
    """Whether an optional module can be imported."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True
