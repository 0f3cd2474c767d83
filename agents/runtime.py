"""From an expert's spec to a ready backend: prepare its file, resolve its path, build it."""

from __future__ import annotations

import threading
from pathlib import Path

from agents.backends import Backend, create_backend
from agents.backends.registry import backend_class
from agents.pool import ExpertSpec, ensure_ready


def resolve(spec: ExpertSpec, home: Path) -> ExpertSpec:
    """The spec with ``path`` pointing at its verified model file (prepared if needed)."""
    if not backend_class(spec.backend).needs_model_file:
        return spec
    path = ensure_ready(spec, home)
    params = {"home": str(home), **spec.params}
    return spec.model_copy(update={"path": path, "params": params})


def build_backend(spec: ExpertSpec, home: Path) -> Backend:
    """A backend for the expert, not yet loaded (``load`` or first ``generate`` loads it)."""
    return create_backend(resolve(spec, home))


class LoadedPool:
    """Keeps backends loaded across calls in one process; ``close`` frees them all."""

    def __init__(self, experts: dict[str, ExpertSpec], home: Path) -> None:
        self.experts = experts
        self.home = home
        self._backends: dict[str, Backend] = {}
        self.loads: list[str] = []
        self._lock = threading.Lock()

    def get(self, name: str) -> Backend:
        with self._lock:
            backend = self._backends.get(name)
            if backend is None:
                backend = build_backend(self.experts[name], self.home)
                self._backends[name] = backend
            if not backend.loaded:
                backend.load()
                self.loads.append(name)
            return backend

    def unload(self, name: str) -> None:
        backend = self._backends.pop(name, None)
        if backend is not None:
            backend.unload()

    def loaded(self) -> list[str]:
        return [n for n, b in self._backends.items() if b.loaded]

    def close(self) -> None:
        for name in list(self._backends):
            self.unload(name)
