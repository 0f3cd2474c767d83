"""The generation cache as files: content-addressed, append-only JSONL.gz shards.

A shard is a gzip file (mtime 0, level 9, no file name: the same rows always give the same
bytes) of JSON lines, one per cached generation, sorted by key::

    {"at": 1760000000.5, "expert": "qwen2.5-1.5b", "generation": {...}, "key": "<sha256 hex>"}

``key`` is ``agents.cache.request_key`` (the model file's sha256, the chat template, every
engine and sampling parameter and the prompt), ``expert`` the model name the cache stores,
``generation`` an ``agents.backends.Generation`` and ``at`` when it was first stored (epoch
seconds; null for rows from before the cache stored times). A shard is named by the sha256 of
its bytes, ``<sha256[:16]>.jsonl.gz``, and is at most ``max_bytes`` long (5 MiB by default;
a single row larger than that goes alone in its shard).

``export_shards`` never rewrites a shard: it reads the keys the folder's shards already hold
and writes only new rows, in new shards. ``import_shards`` checks every file (its name is
its content's hash) and every row (JSON, the four fields, a successful generation), adds
what the cache lacks, and keeps a different stored value for the same key (a conflict,
reported with its key and file); a second import adds nothing. See docs/cache.md.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import struct
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agents.backends.base import Generation
from agents.cache import GenerationCache, servable
from agents.errors import SymoeError

__all__ = ["MAX_BYTES", "ExportReport", "ImportReport", "ShardError", "export_shards", "import_shards",
           "shard_files"]

MAX_BYTES = 5 * 2**20
SUFFIX = ".jsonl.gz"
NAME = re.compile(r"^[0-9a-f]{16}\.jsonl\.gz$")
FIELDS = ("at", "expert", "generation", "key")
# gzip header as Python's gzip.compress(mtime=0) writes it: no name, mtime 0, best compression, OS unknown
HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
TRAILER = 8
BATCH = 500


class ShardError(SymoeError):
    """A shard folder or file cannot be used; the message names it and says what to do."""


@dataclass
class ExportReport:
    """What an export did: rows selected, written, skipped because the folder holds their key
    (``differing``: of those, how many hold another generation there), stored rows that could
    not be read (not exported), and the shards written."""

    folder: Path
    selected: int = 0
    written: int = 0
    already_in_folder: int = 0
    differing: int = 0
    unreadable: int = 0
    shards: list[Path] = field(default_factory=list)

    @property
    def bytes_written(self) -> int:
        return sum(p.stat().st_size for p in self.shards)


@dataclass
class ImportReport:
    """What an import did: files and rows read, rows added, already present (the same
    generation), conflicts (another generation stored: kept; ``(key, file)`` each), bad rows
    (``file:line: why`` each) and files refused whole (one line each)."""

    files: int = 0
    rows_read: int = 0
    added: int = 0
    present: int = 0
    conflicts: list[tuple[str, str]] = field(default_factory=list)
    bad_rows: list[str] = field(default_factory=list)
    bad_files: list[str] = field(default_factory=list)


def shard_files(paths: Iterable[Path]) -> list[Path]:
    """The shard files a list of files and folders names: a folder gives its ``*.jsonl.gz``
    (sorted); a missing path is a ``ShardError``."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.iterdir() if p.name.endswith(SUFFIX) and p.is_file()))
        elif path.is_file():
            found.append(path)
        else:
            raise ShardError(f"{path} does not exist; give a shard folder or .jsonl.gz shard files")
    return found


def _row_line(key: str, expert: str, generation: Generation, at: float | None) -> bytes:
    row = {"at": at, "expert": expert, "generation": generation.model_dump(mode="json"), "key": key}
    return (json.dumps(row, sort_keys=True, ensure_ascii=False, separators=(",", ":")) + "\n").encode()



def _fingerprint(generation: Generation) -> str:
    """The generation, timing aside (as ``agents.cache.same_generation`` compares them)."""
    return json.dumps(generation.model_dump(mode="json", exclude={"usage": {"seconds"}}), sort_keys=True)


class _Shard:
    """One shard being built: raw deflate fed line by line, its exact final size known before
    each line is added (a copy of the compressor is flushed)."""

    def __init__(self) -> None:
        self._deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        self._out: list[bytes] = []
        self._size = 0
        self._crc = 0
        self._length = 0
        self.rows = 0

    def size_with(self, line: bytes) -> int:
        """The shard's size in bytes if ``line`` were its last row."""
        trial = self._deflate.copy()
        return len(HEADER) + self._size + len(trial.compress(line)) + len(trial.flush()) + TRAILER

    def add(self, line: bytes) -> None:
        piece = self._deflate.compress(line)
        self._out.append(piece)
        self._size += len(piece)
        self._crc = zlib.crc32(line, self._crc)
        self._length += len(line)
        self.rows += 1

    def finish(self) -> bytes:
        body = b"".join([*self._out, self._deflate.flush()])
        return HEADER + body + struct.pack("<II", self._crc, self._length & 0xFFFFFFFF)


def _write_new(folder: Path, data: bytes) -> Path:
    """Write ``data`` as ``<sha256[:16]>.jsonl.gz`` unless that file exists (same name, same
    content: shards are never rewritten); atomically (a temporary file, then a rename)."""
    path = folder / f"{hashlib.sha256(data).hexdigest()[:16]}{SUFFIX}"
    if path.exists():
        return path
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".shard-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _folder_keys(folder: Path) -> dict[str, str]:
    """Key -> generation fingerprint of every row the folder's shards hold; a damaged shard
    is a ``ShardError`` (its rows would be exported again once it is moved aside)."""
    held: dict[str, str] = {}
    for path in shard_files([folder]):
        problem = _file_problem(path, path.read_bytes())
        if problem:
            raise ShardError(f"{problem}; move it out of {folder} (its rows are exported again) and run again")
        for _, row, _why in _rows(path):
            if row is not None:
                held[row[0]] = _fingerprint(row[2])
    return held


def export_shards(cache: GenerationCache, folder: Path, *, experts: set[str] | None = None,
                  since: float | None = None, until: float | None = None, max_bytes: int = MAX_BYTES) -> ExportReport:
    """Write the cache's rows (of ``experts``, stored in ``[since, until)``) that the shards in
    ``folder`` do not hold yet as new shards of at most ``max_bytes`` each. See the module doc."""
    if max_bytes < 256:
        raise ShardError(f"the shard size limit must be at least 256 bytes, not {max_bytes}")
    if folder.exists() and not folder.is_dir():
        raise ShardError(f"{folder} is not a folder; give a folder for the shards")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ShardError(f"cannot create the shard folder {folder} ({exc.strerror or exc})") from None
    held = _folder_keys(folder)
    report = ExportReport(folder=folder)
    shard = _Shard()
    for key, expert, raw, at in cache.rows(experts=experts, since=since, until=until):
        generation = servable(raw)
        if generation is None:
            report.unreadable += 1
            continue
        report.selected += 1
        if key in held:
            report.already_in_folder += 1
            report.differing += held[key] != _fingerprint(generation)
            continue
        line = _row_line(key, expert, generation, at)
        if shard.rows and shard.size_with(line) > max_bytes:
            report.shards.append(_write_new(folder, shard.finish()))
            shard = _Shard()
        shard.add(line)
        report.written += 1
    if shard.rows:
        report.shards.append(_write_new(folder, shard.finish()))
    return report


def _file_problem(path: Path, data: bytes) -> str | None:
    """Why a shard file cannot be trusted whole (its name is not its content's hash), or None."""
    digest = hashlib.sha256(data).hexdigest()[:16]
    if not NAME.match(path.name):
        return (f"{path}: not a shard name (<sha256[:16]>{SUFFIX}; its content's would be "
                f"{digest}{SUFFIX}); rename it only if it is an intact shard")
    if path.name != f"{digest}{SUFFIX}":
        return (f"{path}: damaged or renamed (its content's sha256 starts {digest}, not {path.name[:16]}); "
                "restore it from where it came (git checkout, or export again)")
    return None


def _rows(path: Path) -> Iterator[tuple[int, tuple[str, str, Generation, float | None] | None, str]]:
    """(line number, (key, expert, generation, at) or None, why it is bad) for each line."""
    try:
        with gzip.open(path, "rb") as fh:
            lines = fh.read().splitlines()
    except (OSError, EOFError, zlib.error) as exc:
        yield 0, None, f"not a readable gzip file ({exc})"
        return
    for number, line in enumerate(lines, 1):
        yield number, *_check_row(line)


def _check_row(line: bytes) -> tuple[tuple[str, str, Generation, float | None] | None, str]:
    try:
        row: Any = json.loads(line)
    except ValueError as exc:
        return None, f"not JSON ({exc})"
    if not isinstance(row, dict):
        return None, "not a JSON object"
    missing = [f for f in FIELDS if f not in row]
    if missing:
        return None, f"missing {', '.join(missing)}"
    key, expert, at = row["key"], row["expert"], row["at"]
    if not (isinstance(key, str) and re.fullmatch(r"[0-9a-f]{64}", key)):
        return None, "key is not a sha256 hex digest"
    if not isinstance(expert, str) or not expert:
        return None, "expert is not a name"
    if at is not None and (isinstance(at, bool) or not isinstance(at, (int, float))):
        return None, "at is not a time"
    try:
        generation = Generation.model_validate(row["generation"])
    except ValidationError as exc:
        return None, f"generation does not parse ({exc.error_count()} errors: {exc.errors()[0]['msg']})"
    if not generation.ok or not generation.text.strip():
        return None, "generation is a failure or empty"
    return (key, expert, generation, None if at is None else float(at)), ""


def import_shards(cache: GenerationCache, paths: list[Path]) -> ImportReport:
    """Add the rows of the shard files (and folders of shards) in ``paths`` that the cache
    lacks; see the module doc. A file whose name is not its content's hash is refused whole."""
    report = ImportReport()
    for path in shard_files(paths):
        report.files += 1
        try:
            data = path.read_bytes()
        except OSError as exc:
            report.bad_files.append(f"{path}: cannot be read ({exc.strerror or exc})")
            continue
        problem = _file_problem(path, data)
        if problem:
            report.bad_files.append(problem)
            continue
        batch: list[tuple[str, str, Generation, float | None]] = []
        for number, row, why in _rows(path):
            if row is None:
                if number == 0:
                    report.bad_files.append(f"{path}: {why}")
                else:
                    report.bad_rows.append(f"{path}:{number}: {why}")
                continue
            report.rows_read += 1
            batch.append(row)
            if len(batch) >= BATCH:
                _store(cache, batch, path, report)
                batch = []
        _store(cache, batch, path, report)
    return report


def _store(cache: GenerationCache, batch: list[tuple[str, str, Generation, float | None]], path: Path,
           report: ImportReport) -> None:
    if not batch:
        return
    for row, outcome in zip(batch, cache.put_if_absent(batch), strict=True):
        if outcome == "added":
            report.added += 1
        elif outcome == "present":
            report.present += 1
        else:
            report.conflicts.append((row[0], str(path)))
