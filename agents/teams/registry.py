"""Registries of generators and critics by name, so users plug in their own.

    from agents.teams.registry import generators, critics

    @generators.register
    class MyTTS(Generator):
        name = "my-tts"; event_types = ("speech",); prior = 0.6
        def generate(self, event, ctx): ...

``generators.create("my-tts")`` builds one; ``generators.for_type("speech")`` lists candidates.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from agents.errors import SymoeError
from agents.teams.interfaces import Critic, Generator

T = TypeVar("T", Generator, Critic)


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._classes: dict[str, type[T]] = {}

    def register(self, cls: type[T]) -> type[T]:
        """Class decorator: add ``cls`` under ``cls.name`` (a later registration replaces it)."""
        if not cls.name:
            raise ValueError(f"{cls.__name__} needs a `name` to be registered as a {self.kind}")
        self._classes[cls.name] = cls
        return cls

    def names(self) -> list[str]:
        return sorted(self._classes)

    def get(self, name: str) -> type[T]:
        try:
            return self._classes[name]
        except KeyError:
            raise SymoeError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names()) or 'none'}") from None

    def create(self, name: str) -> T:
        return self.get(name)()

    def for_type(self, event_type: str) -> list[str]:
        return [n for n, c in sorted(self._classes.items()) if event_type in c.event_types]


generators: Registry[Generator] = Registry("generator")
critics: Registry[Critic] = Registry("critic")
