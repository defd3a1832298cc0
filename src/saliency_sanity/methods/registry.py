"""The method registry (one instance, shared by the method modules)."""

from __future__ import annotations

from .._registry import Registry
from .base import Method

METHODS: Registry[Method] = Registry("method")
