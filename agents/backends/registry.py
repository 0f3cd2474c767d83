"""Backend registry: a config names a backend by string, as lm-evaluation-harness names models.

Third-party code registers its own engine with ``@register_backend("name")``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from agents.backends.base import Backend, BackendError

if TYPE_CHECKING:
    from agents.pool import ExpertSpec

_BACKENDS: dict[str, type[Backend]] = {}


def register_backend(name: str) -> Callable[[type[Backend]], type[Backend]]:
    def decorate(cls: type[Backend]) -> type[Backend]:
        cls.name = name
        _BACKENDS[name] = cls
        return cls

    return decorate


def available_backends() -> list[str]:
    return sorted(_BACKENDS)


def backend_class(name: str) -> type[Backend]:
    try:
        return _BACKENDS[name]
    except KeyError:
        raise BackendError(
            f"unknown backend {name!r}; known backends: {', '.join(available_backends())}"
        ) from None


def create_backend(spec: ExpertSpec) -> Backend:
    return backend_class(spec.backend)(spec)
