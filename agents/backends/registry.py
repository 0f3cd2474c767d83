"""The backend registry: a config names its engine by string (``backend: llamacpp``).

Third-party code registers its own engine with ``@register_backend("name")``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from agents.backends.base import Backend
from agents.registry import Registry

if TYPE_CHECKING:
    from agents.pool import ExpertSpec

backends: Registry[type[Backend]] = Registry("backend")


def register_backend(name: str) -> Callable[[type[Backend]], type[Backend]]:
    """Class decorator: register ``cls`` as backend ``name`` (and set ``cls.name``)."""

    def decorate(cls: type[Backend]) -> type[Backend]:
        cls.name = name
        return backends.add(name, cls)

    return decorate


def available_backends() -> list[str]:
    return backends.names()


def backend_class(name: str) -> type[Backend]:
    return backends.get(name)


def create_backend(spec: ExpertSpec) -> Backend:
    return backend_class(spec.backend)(spec)
