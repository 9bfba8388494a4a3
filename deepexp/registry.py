"""One registry helper for everything chosen by name (models, activations, datasets).

The name in `configs/<group>/<name>.yaml`, the registry key and the command-line
choice are the same string, so there is never an if/elif chain from names to objects.
"""

from __future__ import annotations

from typing import Callable, Dict, Generic, List, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object table that refuses duplicates and explains unknown names."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: Dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        def add(obj: T) -> T:
            key = name or obj.__name__  # type: ignore[attr-defined]
            if key in self._entries:
                raise ValueError(f"duplicate {self.kind} name {key!r}")
            self._entries[key] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}") from None

    def names(self) -> List[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries
