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


#: RAM per byte of model file, by backend (measured: Q4 GGUF -> fp32 transformers peaks near 9.5x).
_RAM_PER_FILE_BYTE = {"llamacpp": 1.3, "transformers": 9.5, "vllm": 4.0}


def memory_estimate(backend: Backend) -> int:
    """Bytes of RAM the loaded model is expected to take (0 for remote experts)."""
    path = backend.spec.path
    if path is None or not Path(path).exists():
        return 0
    p = Path(path)
    size = sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
    estimate = int(size * _RAM_PER_FILE_BYTE.get(backend.spec.backend, 2.0))
    if backend.spec.backend == "vllm":  # KV cache space and worker processes (measured: ~4.2 GB for 135M)
        estimate += int(float(backend.spec.params.get("cpu_kvcache_space_gb", 2)) * 2**30) + (3 << 29)  # type: ignore[arg-type]
    return estimate


def available_memory() -> int:
    """MemAvailable from /proc/meminfo (bytes); 8 GiB where it cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


class LoadedPool:
    """Keeps backends loaded across calls in one process; ``close`` frees them all.

    Backends are keyed by model (``ExpertSpec.load_as``): experts that use one model's entry
    (its methods: direct, cot, program) share its one load. With ``budget_bytes`` set,
    several models stay resident while their estimated memory fits; loading one more evicts
    the least recently used first. ``loads`` lists every load, by model entry.
    """

    def __init__(self, experts: dict[str, ExpertSpec], home: Path, budget_bytes: int | None = None) -> None:
        self.experts = experts
        self.home = home
        self.budget_bytes = budget_bytes
        self._backends: dict[str, Backend] = {}
        self._used: list[str] = []  # least recently used first
        self.loads: list[str] = []
        self._lock = threading.RLock()

    def _model(self, name: str) -> str:
        """The model entry an expert runs on (a model entry's own name for itself)."""
        return self.experts[name].load_as if name in self.experts else name

    def get(self, name: str) -> Backend:
        """The loaded backend of an expert (or of a model entry), loading it if needed."""
        name = self._model(name)
        with self._lock:
            backend = self._backends.get(name)
            if backend is None:
                backend = build_backend(self.experts[name], self.home)
                self._backends[name] = backend
            if not backend.loaded:
                self._make_room(name, memory_estimate(backend))
                backend.load()
                self.loads.append(name)
            if name in self._used:
                self._used.remove(name)
            self._used.append(name)
            return backend

    def resident_bytes(self) -> int:
        return sum(memory_estimate(b) for b in self._backends.values() if b.loaded)

    def _make_room(self, name: str, need: int) -> None:
        if self.budget_bytes is None:
            return
        for other in list(self._used):
            if self.resident_bytes() + need <= self.budget_bytes:
                break
            if other != name:
                self.unload(other)

    def unload(self, name: str) -> None:
        name = self._model(name)
        with self._lock:
            backend = self._backends.pop(name, None)
            if name in self._used:
                self._used.remove(name)
            if backend is not None:
                backend.unload()

    def loaded(self) -> list[str]:
        return [n for n, b in self._backends.items() if b.loaded]

    def forget_state(self) -> None:
        """Every loaded backend drops what it kept from its last request (``Backend.forget_state``)."""
        with self._lock:
            for backend in self._backends.values():
                backend.forget_state()

    def close(self) -> None:
        for name in list(self._backends):
            self.unload(name)
