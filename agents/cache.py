"""A generation cache on disk (SQLite): every finished generation is stored as it completes.

Keyed by the expert's identity (name, backend, model file hash or path) and the full
request (prompt and every sampling parameter), so a killed run redoes nothing that finished
and methods that ask the same prompt share the answer. Failed generations are not cached.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from pathlib import Path

from agents.backends.base import Backend, Generation, GenerationRequest
from agents.pool import ExpertSpec


def expert_identity(spec: ExpertSpec) -> str:
    ident = spec.source.sha256 if spec.source else str(spec.model or spec.path or spec.params)
    return f"{spec.name}|{spec.backend}|{ident}|{spec.chat_template}"


def request_key(spec: ExpertSpec, request: GenerationRequest) -> str:
    text = expert_identity(spec) + "\n" + request.cache_key()
    return hashlib.sha256(text.encode()).hexdigest()


class GenerationCache:
    """SQLite store of generations; safe to share between threads of one process."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS generations (key TEXT PRIMARY KEY, expert TEXT, result TEXT)"
        )
        self.hits = 0
        self.misses = 0
        self.stored = 0

    def get(self, key: str) -> Generation | None:
        with self._lock:
            row = self._db.execute("SELECT result FROM generations WHERE key=?", (key,)).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return Generation.model_validate_json(row[0])

    def put(self, key: str, expert: str, generation: Generation) -> None:
        if generation.error:
            return
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO generations VALUES (?, ?, ?)",
                             (key, expert, generation.model_dump_json()))
            self.stored += 1

    def count(self, expert: str | None = None) -> int:
        with self._lock:
            if expert is None:
                return int(self._db.execute("SELECT COUNT(*) FROM generations").fetchone()[0])
            return int(self._db.execute("SELECT COUNT(*) FROM generations WHERE expert=?",
                                        (expert,)).fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


def generate_cached(
    backend: Backend,
    requests: list[GenerationRequest],
    cache: GenerationCache | None,
    chunk: int | None = None,
    on_done: object = None,
) -> list[Generation]:
    """Generate what the cache lacks, storing each batch as it completes; results in order.

    Batches follow the engine's natural size (1 for llama.cpp), so a killed run loses at most
    the batch in flight. ``on_done(n)`` is called after each stored batch (progress bars).
    """
    spec = backend.spec
    chunk = chunk or backend.preferred_batch
    keys = [request_key(spec, r) for r in requests]
    results: list[Generation | None] = [cache.get(k) if cache else None for k in keys]
    todo = [i for i, r in enumerate(results) if r is None]
    if on_done and len(requests) - len(todo):
        on_done(len(requests) - len(todo))  # type: ignore[operator]
    for lo in range(0, len(todo), chunk):
        part = todo[lo : lo + chunk]
        for i, gen in zip(part, backend.generate([requests[i] for i in part]), strict=True):
            results[i] = gen
            if cache:
                cache.put(keys[i], spec.name, gen)
        if on_done:
            on_done(len(part))  # type: ignore[operator]
    return [r for r in results if r is not None]
