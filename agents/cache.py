"""The generation cache on disk (SQLite): every finished generation is stored as it completes.

Keyed by the expert's identity (name, backend, model file hash or path) and the full
request (prompt and every sampling parameter), so a killed run redoes nothing that finished
and methods that ask the same prompt share the answer. Failed generations are not cached.
The query pipeline's ``execute`` stage is its only reader and writer.

A row that cannot be read back (invalid JSON, a record of another shape) is a miss: it is
generated again and counted in ``bad_rows``. A file that is not an SQLite database is one
``SymoeError`` line naming it.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from pathlib import Path

from pydantic import ValidationError

from agents.backends.base import Generation, GenerationRequest
from agents.errors import SymoeError
from agents.pool import ExpertSpec


def expert_identity(spec: ExpertSpec) -> str:
    ident = spec.source.sha256 if spec.source else str(spec.model or spec.path or spec.params)
    return f"{spec.name}|{spec.backend}|{ident}|{spec.chat_template}"


def request_key(spec: ExpertSpec, request: GenerationRequest) -> str:
    text = expert_identity(spec) + "\n" + request.cache_key()
    return hashlib.sha256(text.encode()).hexdigest()


class CacheError(SymoeError):
    """The cache file cannot be used; the message names it and says what to do."""


class GenerationCache:
    """SQLite store of generations; safe to share between threads of one process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS generations (key TEXT PRIMARY KEY, expert TEXT, result TEXT)"
            )
        except OSError as exc:
            raise CacheError(f"cannot create the generation cache {path} ({exc.strerror})") from None
        except sqlite3.DatabaseError as exc:
            raise self._unreadable(exc) from None
        self.hits = 0
        self.misses = 0
        self.stored = 0
        self.bad_rows = 0

    def _unreadable(self, exc: Exception) -> CacheError:
        return CacheError(f"the generation cache {self.path} is unreadable ({exc}); move it aside "
                          f"(mv {self.path} {self.path}.bad) and run again: what it held is generated anew")

    def get(self, key: str) -> Generation | None:
        try:
            with self._lock:
                row = self._db.execute("SELECT result FROM generations WHERE key=?", (key,)).fetchone()
        except sqlite3.DatabaseError as exc:
            raise self._unreadable(exc) from None
        if row is not None:
            try:
                gen = Generation.model_validate_json(row[0])
            except (ValidationError, ValueError, TypeError):
                self.bad_rows += 1
            else:
                self.hits += 1
                return gen
        self.misses += 1
        return None

    def put(self, key: str, expert: str, generation: Generation) -> None:
        if generation.error:
            return
        try:
            with self._lock:
                self._db.execute("INSERT OR REPLACE INTO generations VALUES (?, ?, ?)",
                                 (key, expert, generation.model_dump_json()))
                self.stored += 1
        except sqlite3.DatabaseError as exc:
            raise self._unreadable(exc) from None

    def count(self, expert: str | None = None) -> int:
        with self._lock:
            if expert is None:
                return int(self._db.execute("SELECT COUNT(*) FROM generations").fetchone()[0])
            return int(self._db.execute("SELECT COUNT(*) FROM generations WHERE expert=?",
                                        (expert,)).fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
