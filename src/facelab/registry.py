"""A small name → object registry used for detectors, runners, templates' peers and backbones.

Registries replace ``if name == ...`` chains: each implementation registers itself with a
decorator, and a duplicate name is an error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from facelab.errors import ConfigError

T = TypeVar("T")

__all__ = ["Registry", "RUNNERS"]


class Registry(Generic[T]):
    """Map names to objects.

    Example:
        >>> reg = Registry("thing")
        >>> @reg.register("a")
        ... class A: ...
        >>> reg.get("a") is A
        True
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers its target under ``name``; a duplicate name raises ``ConfigError``."""

        def decorator(obj: T) -> T:
            if name in self._items:
                raise ConfigError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        """Return the object registered as ``name``; ``KeyError`` naming the known ones otherwise."""
        try:
            return self._items[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; known: {sorted(self._items)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)


#: Model runners by card task ("detection", "recognition", "landmark_2d_106", ...). Each entry is
#: a class with ``from_card(card: ModelCard, path: Path, runtime: RuntimeOptions | None) -> runner``.
RUNNERS: Registry = Registry("model runner")
