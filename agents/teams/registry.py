"""The generators and critics a team can use, registered by name so users plug in their own.

    from agents.teams.registry import generators, critics

    @generators.register_named
    class MyTTS(Generator):
        name = "my-tts"; event_types = ("speech",); prior = 0.6
        def generate(self, event, ctx): ...

``create(generators, "my-tts")`` builds one; ``for_type(generators, "speech")`` lists candidates.
"""

from __future__ import annotations

from typing import TypeVar

from agents.registry import Registry
from agents.teams.interfaces import Critic, Generator

T = TypeVar("T", Generator, Critic)

generators: Registry[type[Generator]] = Registry("generator")
critics: Registry[type[Critic]] = Registry("critic")


def create(registry: Registry[type[T]], name: str) -> T:
    return registry.get(name)()


def for_type(registry: Registry[type[T]], event_type: str) -> list[str]:
    """Names of the registered classes that handle this event type, sorted."""
    return sorted(n for n, c in registry.items() if event_type in c.event_types)
