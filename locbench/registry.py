"""One small generic registry for losses, augmentation presets, mixers and heads.

Backbones are not registered here: they go straight through ``timm.create_model``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from locbench.errors import LocbenchError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories; refuses duplicates; lists itself for ``locbench list``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._docs: dict[str, str] = {}

    def register(self, name: str, doc: str = "") -> Callable[[T], T]:
        """Decorator: register ``obj`` under ``name``; a second entry of the same name raises."""

        def wrap(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            first_line = (doc or (getattr(obj, "__doc__", None) or "")).strip().splitlines()
            self._docs[name] = first_line[0] if first_line else ""
            return obj

        return wrap

    def get(self, name: str) -> T:
        """Return the entry ``name`` or raise a :class:`LocbenchError` listing the valid names."""
        try:
            return self._entries[name]
        except KeyError:
            raise LocbenchError(f"unknown {self.kind} {name!r}; valid names: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def describe(self) -> dict[str, str]:
        """Name → one-line description, for ``locbench list``."""
        return {n: self._docs[n] for n in self.names()}

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
