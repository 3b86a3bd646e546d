"""A small name -> factory registry, in the spirit of timm's register_model / create_model."""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from procedge.errors import ProcedgeError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to registered objects; `kind` names the family in error messages."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register `obj` under `name`; a registered class also learns its name (`obj.name`)."""
        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            if isinstance(obj, type):
                obj.name = name
            return obj

        return decorator

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise ProcedgeError(f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}")
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)
