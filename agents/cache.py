"""The generation cache on disk (SQLite): every finished generation is stored as it completes.

Keyed by the expert's identity (name, backend, model file hash or path) and the full
request (prompt and every sampling parameter), so a killed run redoes nothing that finished
and methods that ask the same prompt share the answer. Failed generations are not cached.
The query pipeline's ``execute`` stage is its only reader and writer.

Damage is handled at two levels:

* a row that cannot be read back (NULL, invalid UTF-8, invalid JSON, a record of another
  shape, a failed or empty generation) is a miss: it is generated again (and overwritten)
  and counted in ``bad_rows``;
* a file that cannot be used is one ``CacheError`` line naming it and saying what to do. A
  damaged file (not a database, truncated, a corrupt page) is found when it is opened
  (``PRAGMA quick_check`` reads every page once) or, if it is damaged
  while in use, by the query that touches the damage; the message says to move it aside. A
  cache locked by another process, a read-only file, a full disk and an SQLite database that
  is not a generation cache each get their own message. Opening never writes to a file it
  refuses: a damaged file is left exactly as it was.

Several processes may share one cache (two runs of one evaluation, a server beside an
eval): before generating, a process ``claim``s the keys it is about to run; another process
skips keys claimed by a live owner and picks their results up from the cache when they are
stored, so finished work is shared, not done twice. A claim whose owner died (same host,
no such process) or went silent for ``CLAIM_TTL_S`` is taken over.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from pydantic import ValidationError

from agents.backends.base import Generation, GenerationRequest
from agents.errors import SymoeError
from agents.pool import ExpertSpec

COLUMNS = ("key", "expert", "result")
CLAIM_TTL_S = 900.0
OWNER = f"{socket.gethostname()}:{os.getpid()}"
DAMAGED = ("SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_IOERR_SHORT_READ")
LOCKED = ("SQLITE_BUSY", "SQLITE_LOCKED")


#: engine parameters that schedule work without choosing what is generated: left out of the key.
#: ``bulk`` (llama.cpp sequences decoded together) can flip a greedy near-tie by float rounding,
#: as a server's own batching does; a bulk-built matrix and a later ``symoe eval`` of the same
#: questions must share their generations (bench/results/multiseq/README.md)
SCHEDULING_PARAMS = frozenset({"bulk"})


def expert_identity(spec: ExpertSpec) -> str:
    """What makes a model's generation what it is: its entry, engine, weights (the file's
    sha256 where known), chat template and every engine parameter but the scheduling ones (a
    dtype, a batch size: a float32 and a bfloat16 run never share rows). An entry without
    parameters keeps the key it always had."""
    kept = {k: v for k, v in spec.params.items() if k not in SCHEDULING_PARAMS}
    ident = spec.source.sha256 if spec.source else str(spec.model or spec.path or kept)
    params = "|" + json.dumps(kept, sort_keys=True, default=str) if kept else ""
    # the model's entry, not the expert's: experts sharing one model share its generations
    return f"{spec.load_as}|{spec.backend}|{ident}|{spec.chat_template}{params}"


def request_key(spec: ExpertSpec, request: GenerationRequest) -> str:
    text = expert_identity(spec) + "\n" + request.cache_key()
    return hashlib.sha256(text.encode()).hexdigest()


class CacheError(SymoeError):
    """The cache file cannot be used; the message names it and says what to do."""


def sqlite_problem(exc: sqlite3.Error) -> str:
    """What kind of failure an SQLite error is: damaged, locked, readonly, cantopen, full or other."""
    name = getattr(exc, "sqlite_errorname", None) or ""
    text = str(exc).lower()
    if name.startswith(DAMAGED) or "malformed" in text or "not a database" in text:
        return "damaged"
    if name.startswith(LOCKED) or "locked" in text:
        return "locked"
    if name.startswith("SQLITE_READONLY") or "readonly" in text:
        return "readonly"
    if name.startswith("SQLITE_CANTOPEN") or "unable to open" in text:
        return "cantopen"
    if name.startswith("SQLITE_FULL") or "disk is full" in text:
        return "full"
    return "other"


def servable(raw: bytes | str | None) -> Generation | None:
    """A stored (or shipped) generation the cache would serve: it parses, succeeded and has
    text; else None (a row that ``put`` could not have written)."""
    if raw is None:
        return None
    try:
        gen = Generation.model_validate_json(raw)
    except (ValidationError, ValueError, TypeError):
        return None
    return gen if gen.ok and gen.text.strip() else None


class GenerationCache:
    """SQLite store of generations; safe to share between threads of one process.

    ``timeout`` is how long a write waits for another process's lock before it is an error.
    """

    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.stored = 0
        self._bad_keys: set[str] = set()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CacheError(f"cannot create the generation cache {path} ({exc.strerror or exc})") from None
        if path.is_dir():
            raise CacheError(f"the generation cache {path} is a folder; give a file path for the cache")
        try:
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=timeout)
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        try:
            self._open()
        except sqlite3.Error as exc:
            self._db.close()
            raise self._error(exc) from None
        except CacheError:
            self._db.close()
            raise

    def _open(self) -> None:
        """Check the file before anything is written to it, then make it a cache if it is empty."""
        problems = [row[0] for row in self._db.execute("PRAGMA quick_check(3)")]
        if problems != ["ok"]:
            first = " ".join(" ".join(problems).split())[:160]
            raise self._damaged(f"corrupt: {first}")
        tables = {row[0] for row in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "generations" in tables:
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(generations)")}
            if not set(COLUMNS) <= columns:
                raise CacheError(f"{self.path} has a table `generations` without the columns {', '.join(COLUMNS)}; "
                                 "it is not a symoe generation cache: give another file")
        elif tables:
            raise CacheError(f"{self.path} is an SQLite database but not a symoe generation cache (its tables: "
                             f"{', '.join(sorted(tables)[:5])}); give another file")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS generations (key TEXT PRIMARY KEY, expert TEXT, result TEXT, "
                         "at REAL)")
        if "at" not in {row[1] for row in self._db.execute("PRAGMA table_info(generations)")}:
            try:  # a cache from before stored times: its rows keep at NULL
                self._db.execute("ALTER TABLE generations ADD COLUMN at REAL")
            except sqlite3.OperationalError as exc:  # another process added it first
                if "duplicate column" not in str(exc):
                    raise
        self._db.execute("CREATE TABLE IF NOT EXISTS claims (key TEXT PRIMARY KEY, owner TEXT, at REAL)")

    def _damaged(self, why: str) -> CacheError:
        return CacheError(f"the generation cache {self.path} is damaged ({why}); move it aside "
                          f"(mv {self.path} {self.path}.bad) and run again: what it held is generated anew")

    def _error(self, exc: sqlite3.Error) -> CacheError:
        """One line for an SQLite failure, saying what to do about this kind of failure."""
        kind = sqlite_problem(exc)
        if kind == "damaged":
            return self._damaged(str(exc))
        what = {
            "locked": "is locked by another process ({exc}); wait for the other run to finish, or give this one "
                      "another cache file",
            "readonly": "is read-only ({exc}); make it writable or give another cache file",
            "cantopen": "cannot be opened ({exc}); check that its folder exists and is writable, or give another "
                        "cache file",
            "full": "cannot be written: the disk is full ({exc}); free some space and run again: what finished "
                    "is kept",
        }.get(kind, "cannot be used ({exc}); if this persists, move it aside (mv {path} {path}.bad) and run again")
        return CacheError(f"the generation cache {self.path} " + what.format(exc=exc, path=self.path))

    def get(self, key: str) -> Generation | None:
        try:
            with self._lock:
                row = self._db.execute("SELECT CAST(result AS BLOB) FROM generations WHERE key=?",
                                       (key,)).fetchone()
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        if row is not None:
            gen = self._parse(row[0])
            if gen is None:
                self._bad_keys.add(key)  # a key looked up twice (before and after a claim) counts once
            else:
                self.hits += 1
                return gen
        self.misses += 1
        return None

    @property
    def bad_rows(self) -> int:
        """How many distinct stored rows could not be read back (and were generated again)."""
        return len(self._bad_keys)

    @staticmethod
    def _parse(raw: bytes | None) -> Generation | None:
        return servable(raw)

    def put(self, key: str, expert: str, generation: Generation) -> None:
        if generation.error:
            return
        try:
            with self._lock:
                self._db.execute("INSERT OR REPLACE INTO generations (key, expert, result, at) VALUES (?, ?, ?, ?)",
                                 (key, expert, generation.model_dump_json(), time.time()))
                self.stored += 1
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    def put_if_absent(self, rows: list[tuple[str, str, Generation, float | None]]) -> list[str]:
        """Store each (key, expert, generation, time first stored or None for now) unless its
        key holds a readable generation, in one transaction; per row ``"added"``, ``"present"``
        (the same generation, timing aside) or ``"conflict"`` (a different one: the stored one
        is kept). A stored row that cannot be read back is replaced. Failed or empty
        generations are refused (``ValueError``): ``put`` never stores them."""
        if any(gen.error or not gen.text.strip() for _, _, gen, _ in rows):
            raise ValueError("only successful, non-empty generations can be stored")
        outcomes: list[str] = []
        try:
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    for key, expert, gen, at in rows:
                        row = self._db.execute("SELECT CAST(result AS BLOB) FROM generations WHERE key=?",
                                               (key,)).fetchone()
                        held = self._parse(row[0]) if row is not None else None
                        if held is None:
                            self._db.execute("INSERT OR REPLACE INTO generations (key, expert, result, at) "
                                             "VALUES (?, ?, ?, ?)", (key, expert, gen.model_dump_json(),
                                                                     time.time() if at is None else at))
                        outcomes.append("added" if held is None else
                                        "present" if same_generation(held, gen) else "conflict")
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self.stored += outcomes.count("added")
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        return outcomes

    def rows(self, experts: set[str] | None = None, since: float | None = None,
             until: float | None = None) -> Iterator[tuple[str, str, bytes | None, float | None]]:
        """Every stored row as (key, expert, result JSON bytes, time stored or None), in key
        order, read 1,000 at a time; ``experts`` keeps those models' rows, ``since``/``until``
        (epoch seconds, ``since <= at < until``) those stored in the window (a row from before
        times were stored has none: a window leaves it out). Rows are as stored: callers check them."""
        where: list[str] = ["key > ?"]
        args: list[str | float] = []
        if experts is not None:
            where.append(f"expert IN ({','.join('?' * len(experts))})")
            args.extend(sorted(experts))
        if since is not None:
            where.append("at >= ?")
            args.append(since)
        if until is not None:
            where.append("at < ?")
            args.append(until)
        sql = ("SELECT key, expert, CAST(result AS BLOB), at FROM generations WHERE "
               + " AND ".join(where) + " ORDER BY key LIMIT 1000")
        after = ""
        while True:
            try:
                with self._lock:
                    found = self._db.execute(sql, [after, *args]).fetchall()
            except sqlite3.Error as exc:
                raise self._error(exc) from None
            yield from found
            if len(found) < 1000:
                return
            after = found[-1][0]

    def claim(self, keys: list[str]) -> list[str]:
        """The keys this process may generate now: those nobody claimed (now claimed by it),
        its own, and those whose owner is dead or silent. Keys held by a live owner are left."""
        if not keys:
            return []
        now = time.time()
        mine: list[str] = []
        try:
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    for lo in range(0, len(keys), 500):
                        part = keys[lo:lo + 500]
                        self._db.executemany("INSERT OR IGNORE INTO claims VALUES (?, ?, ?)",
                                             [(k, OWNER, now) for k in part])
                        marks = ",".join("?" * len(part))
                        for key, owner, at in self._db.execute(
                                f"SELECT key, owner, at FROM claims WHERE key IN ({marks})", part).fetchall():
                            if owner == OWNER:
                                mine.append(key)
                            elif _stale(owner, at, now):
                                self._db.execute("UPDATE claims SET owner=?, at=? WHERE key=?", (OWNER, now, key))
                                mine.append(key)
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        return mine

    def release(self, keys: list[str]) -> None:
        """Drop this process's claims on these keys (their results are stored, or failed)."""
        try:
            with self._lock:
                for lo in range(0, len(keys), 500):
                    part = keys[lo:lo + 500]
                    self._db.execute(f"DELETE FROM claims WHERE owner=? AND key IN ({','.join('?' * len(part))})",
                                     [OWNER, *part])
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    def touch(self) -> None:
        """Keep this process's claims fresh while it works on them."""
        try:
            with self._lock:
                self._db.execute("UPDATE claims SET at=? WHERE owner=?", (time.time(), OWNER))
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    def count(self, expert: str | None = None) -> int:
        try:
            with self._lock:
                if expert is None:
                    return int(self._db.execute("SELECT COUNT(*) FROM generations").fetchone()[0])
                return int(self._db.execute("SELECT COUNT(*) FROM generations WHERE expert=?",
                                            (expert,)).fetchone()[0])
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    def close(self) -> None:
        with self._lock:
            self._db.close()


def same_generation(a: Generation, b: Generation) -> bool:
    """Whether two generations are the same answer: equal in everything but the seconds taken."""
    return a.model_dump(exclude={"usage": {"seconds"}}) == b.model_dump(exclude={"usage": {"seconds"}})


def _stale(owner: str, at: float, now: float) -> bool:
    """A claim nobody will finish: its process is gone (same host), or it went silent."""
    host, _, pid = owner.rpartition(":")
    if host == socket.gethostname() and pid.isdigit() and not Path(f"/proc/{pid}").exists():
        return True
    return now - at > CLAIM_TTL_S
