"""A small name -> factory registry, one per kind (methods, scores, init schemes)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories. Unknown names raise a ``KeyError`` listing the known ones.

    Example:
        >>> reg = Registry("colour")
        >>> @reg.register("red")
        ... def red(shade: int = 1) -> str:
        ...     return f"red{shade}"
        >>> reg.get("red", shade=2)
        'red2'
        >>> reg.list()
        ['red']
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Callable[..., T]] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def register(self, name: str, **meta: Any) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Register a factory under ``name``, with metadata ``meta`` (read by :meth:`meta`)."""
        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = factory
            self._meta[name] = dict(meta)
            return factory

        return deco

    def meta(self, name: str) -> dict[str, Any]:
        """The metadata ``name`` was registered with.

        Example:
            >>> reg = Registry("colour")
            >>> _ = reg.register("red", default=1)(str)
            >>> reg.meta("red")
            {'default': 1}
        """
        self.factory(name)
        return dict(self._meta[name])

    def factory(self, name: str) -> Callable[..., T]:
        if not isinstance(name, str) or name not in self._items:
            known = ", ".join(sorted(self._items))
            raise KeyError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}")
        return self._items[name]

    def get(self, name: str, **settings: Any) -> T:
        return self.factory(name)(**settings)

    def list(self) -> list[str]:
        return sorted(self._items)

    def names(self) -> list[str]:
        """The registered names in registration order (``list`` sorts them).

        Example:
            >>> reg = Registry("colour")
            >>> _ = reg.register("red")(str), reg.register("blue")(str)
            >>> reg.names(), reg.list()
            (['red', 'blue'], ['blue', 'red'])
        """
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items
