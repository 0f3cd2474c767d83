"""One registry type for everything users plug in by name: backends, methods, tasks,
generators and critics.

    backends: Registry[type[Backend]] = Registry("backend")

    @backends.register("mine")
    class Mine(Backend): ...

``get(name)`` raises a ``RegistryError`` whose one line lists the known names and, for a
near miss, suggests the closest ones (``did you mean 'llamacpp'?``).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from agents.errors import SymoeError

T = TypeVar("T")


class RegistryError(SymoeError):
    """An unknown name was asked of a registry."""

    def __init__(self, kind: str, name: str, known: list[str]) -> None:
        self.kind, self.name, self.known = kind, name, known
        close = difflib.get_close_matches(name, known, n=2, cutoff=0.6)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        super().__init__(f"unknown {kind} {name!r}{hint} (known: {', '.join(known) or 'none'})")


class Registry(Generic[T]):
    """Named entries of one kind; a later registration under a name replaces the earlier one."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@registry.register("name")`` adds the decorated object under ``name``."""
        if not name:
            raise ValueError(f"a {self.kind} needs a name to be registered")

        def add(entry: T) -> T:
            self._entries[name] = entry
            return entry

        return add

    def register_named(self, entry: T) -> T:
        """Decorator for entries that carry their own ``name`` (``@generators.register_named``)."""
        name = getattr(entry, "name", "")
        if not name:
            raise ValueError(f"{entry!r} needs a `name` to be registered as a {self.kind}")
        return self.register(name)(entry)

    def add(self, name: str, entry: T) -> T:
        return self.register(name)(entry)

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise RegistryError(self.kind, name, self.names()) from None

    def names(self) -> list[str]:
        """Names in registration order."""
        return list(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return [(name, self._entries[name]) for name in self._entries]

    def values(self) -> list[T]:
        return list(self._entries.values())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
