"""The document index: a faiss inner-product index on disk, its chunk store and metadata.

This module owns the on-disk format and the two operations on it:

* ``build_index(paths, index_dir, embedding)``: index files and folders incrementally. A
  file whose size and mtime match the metadata is skipped unread; one whose content hash
  matches is skipped too; a changed file's old chunks are removed (``remove_ids``) and its
  new ones added; a file that vanished from a folder being indexed is removed. A file that
  cannot be read or parsed is reported in the ``BuildReport`` and skipped (its previous
  chunks, if any, are kept) while the rest is indexed.
* ``open_index(index_dir, embedding)`` -> ``Retriever``: ``search(query, k)`` returns typed
  ``Hit`` records, best first. An index built by another embedding model, a missing index
  or an inconsistent one is a ``SymoeError`` whose one line says which command fixes it.
* ``check_index(index_dir)``: the health check of ``symoe index info`` (no model needed).

Damage is found when an index is opened (for searching, for an incremental build or by
``check_index``), before anything is written: ``index.faiss`` must load and hold
``meta.chunks`` vectors of the model's dimensions; ``chunks.sqlite`` must pass ``PRAGMA
quick_check``, hold exactly the chunk ids of ``index.faiss`` and no row with a column of the
wrong type. Damage found later (a row that cannot be read back when a search touches it,
e.g. text that is not UTF-8) is the same kind of error. Every sqlite and faiss failure
becomes one ``SymoeError`` line: a damaged index says to rebuild it (``--rebuild``), a chunk
store locked by a running build says to wait. A journal left by a build killed before its
commit is rolled back when the index is next opened. ``--rebuild`` deletes the index files
(and sqlite's journal files) whatever state they are in; so does a build into a folder
without ``meta.json`` (what a first build killed part-way leaves).

Layout of an index folder:

* ``index.faiss``: ``IndexIDMap2(IndexFlatIP(dims))`` over L2-normalised vectors, so a
  score is a cosine similarity; ids are chunk ids.
* ``chunks.sqlite``: one row per chunk (id, file, document id, title, source, offsets, line,
  text).
* ``meta.json``: ``IndexMeta``: format, the embedding identity (name, fingerprint, dims),
  chunking parameters, and every indexed file with its size, mtime, sha256 and counts.

The default index is ``<home>/index/corpus`` (``default_index_dir``): ``symoe index corpus``
and ``symoe index build`` both add to it unless told otherwise, and ``symoe ask`` searches it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field, ValidationError

from agents.cache import sqlite_problem
from agents.embedder import EmbeddingConfig, EmbeddingIdentity, embedding_identity, encode
from agents.errors import SymoeError
from agents.pool import sha256_file
from agents.progress import StageReport
from retrieval.chunking import (
    MAX_WORDS,
    OVERLAP_WORDS,
    Chunk,
    UnreadableFile,
    chunk_document,
    is_supported,
    read_documents,
)
from retrieval.records import Hit

FORMAT = 1
INDEX_FILE = "index.faiss"
CHUNKS_FILE = "chunks.sqlite"
META_FILE = "meta.json"
DEFAULT_NAME = "corpus"
CHUNK_COLUMNS = ("id", "file", "doc_id", "title", "source", "start", "end_", "line", "text")
#: a chunk row that ``Hit`` could not hold (one SQL scan; invalid UTF-8 is found when a search reads it)
GARBLED = ("typeof(file) != 'text' OR typeof(doc_id) != 'text' OR typeof(title) != 'text' OR "
           "typeof(source) != 'text' OR typeof(text) != 'text' OR typeof(start) != 'integer' OR "
           "typeof(end_) != 'integer' OR typeof(line) NOT IN ('integer', 'null')")


class FileRecord(BaseModel):
    size: int
    mtime_ns: int
    sha256: str
    documents: int
    chunks: int


class IndexMeta(BaseModel):
    format: int = FORMAT
    embedding: EmbeddingIdentity
    max_words: int = MAX_WORDS
    overlap: int = OVERLAP_WORDS
    chunks: int = 0
    updated: str = ""
    files: dict[str, FileRecord] = Field(default_factory=dict)


class FileProblem(BaseModel):
    path: str
    reason: str
    kept_previous: bool = False


class BuildReport(BaseModel):
    index: str
    added: list[str] = Field(default_factory=list)
    updated: list[str] = Field(default_factory=list)
    unchanged: list[str] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list)
    failed: list[FileProblem] = Field(default_factory=list)
    ignored: int = 0  # files in the folders with an unsupported suffix
    chunks_added: int = 0
    chunks_total: int = 0
    seconds: float = 0.0


def default_index_dir(home: Path, name: str = DEFAULT_NAME) -> Path:
    return home / "index" / name


def _build_hint(index_dir: Path) -> str:
    return f"`symoe index build PATH... --index {index_dir}` (or `symoe index corpus` for the built-in corpus)"


def read_meta(index_dir: Path) -> IndexMeta:
    """The metadata of an index folder; a one-line ``SymoeError`` if it is missing or unreadable."""
    meta_path = index_dir / META_FILE
    if not meta_path.exists():
        raise SymoeError(f"no index at {index_dir}; build one with {_build_hint(index_dir)}")
    try:
        meta = IndexMeta.model_validate_json(meta_path.read_text())
    except (OSError, ValidationError, ValueError) as exc:
        first = str(exc).splitlines()[0]
        raise SymoeError(f"index metadata {meta_path} is unreadable ({first}); rebuild the index "
                         f"with `symoe index build PATH... --index {index_dir} --rebuild`") from None
    if meta.format != FORMAT:
        raise SymoeError(f"index {index_dir} has format {meta.format}, this symoe reads {FORMAT}; "
                         f"rebuild it with `symoe index build PATH... --index {index_dir} --rebuild`")
    return meta


def _check_model(index_dir: Path, meta: IndexMeta, current: EmbeddingIdentity) -> None:
    if not meta.embedding.same_model(current):
        raise SymoeError(
            f"index {index_dir} was built with embedding model {meta.embedding.describe()}, but the "
            f"configured one is {current.describe()}; rebuild it with "
            f"`symoe index build PATH... --index {index_dir} --rebuild` (or `symoe index corpus --rebuild`)")


def _rebuild_hint(index_dir: Path) -> str:
    return f"rebuild it with `symoe index build PATH... --index {index_dir} --rebuild`"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]


def _store_error(index_dir: Path, exc: sqlite3.Error) -> SymoeError:
    """One line for an SQLite failure of the chunk store, saying what to do about it."""
    path = index_dir / CHUNKS_FILE
    kind = sqlite_problem(exc)
    if kind == "locked":
        return SymoeError(f"the chunk store {path} is locked by another process ({_one_line(exc)}); wait for "
                          "the running `symoe index build` to finish and try again")
    if kind == "readonly" and "ROLLBACK" in (getattr(exc, "sqlite_errorname", None) or ""):
        return SymoeError(f"the chunk store {path} has an unfinished write to roll back ({path.name}-journal, "
                          f"left by an interrupted build) and {index_dir} is read-only; make it writable and "
                          "try again")
    if kind == "readonly":
        return SymoeError(f"the chunk store {path} is read-only ({_one_line(exc)}); make {index_dir} writable")
    if kind == "full":
        return SymoeError(f"the disk holding {path} is full ({_one_line(exc)}); free some space and build again")
    if kind == "cantopen":
        return SymoeError(f"cannot open the chunk store {path} ({_one_line(exc)}); check that {index_dir} "
                          f"is readable, or {_rebuild_hint(index_dir)}")
    return SymoeError(f"index {index_dir} is damaged: its chunk store {path.name} is unreadable "
                      f"({_one_line(exc)}); {_rebuild_hint(index_dir)}")


def _faiss() -> Any:
    import faiss

    return faiss


def _connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    """The chunk store; sqlite errors are the caller's to turn into ``_store_error``."""
    if readonly:
        return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE IF NOT EXISTS chunks (id INTEGER PRIMARY KEY, file TEXT NOT NULL, "
               "doc_id TEXT, title TEXT, source TEXT, start INTEGER, end_ INTEGER, line INTEGER, "
               "text TEXT)")
    db.execute("CREATE INDEX IF NOT EXISTS chunks_file ON chunks(file)")
    return db


class Retriever:
    """An opened index: ``search(query, k)``. Searching changes nothing; safe across threads."""

    def __init__(self, index_dir: Path, meta: IndexMeta, index: Any, embedding: EmbeddingConfig) -> None:
        self.index_dir = index_dir
        self.meta = meta
        self.index = index
        self.embedding = embedding

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def search(self, query: str, k: int = 5) -> list[Hit]:
        return self.search_many([query], k)[0]

    def search_many(self, queries: list[str], k: int = 5) -> list[list[Hit]]:
        return self.search_vectors(encode(queries, self.embedding), k)

    def search_vectors(self, vectors: np.ndarray, k: int = 5) -> list[list[Hit]]:
        if len(vectors) == 0:
            return []
        if k < 1 or self.index.ntotal == 0:
            return [[] for _ in range(len(vectors))]
        scores, ids = self.index.search(np.ascontiguousarray(vectors, dtype=np.float32),
                                        min(k, int(self.index.ntotal)))
        wanted = sorted({int(i) for row in ids for i in row if i >= 0})
        rows = self._rows(wanted)
        return [[self._hit(rows[int(i)], float(s)) for s, i in zip(srow, irow, strict=True) if int(i) in rows]
                for srow, irow in zip(scores, ids, strict=True)]

    def _rows(self, ids: list[int]) -> dict[int, tuple[Any, ...]]:
        """The chunk rows of ``ids``; a missing row is a damaged index (one ``SymoeError`` line)."""
        try:
            db = _connect(self.index_dir / CHUNKS_FILE, readonly=True)
            try:
                out: dict[int, tuple[Any, ...]] = {}
                for start in range(0, len(ids), 500):
                    part = ids[start:start + 500]
                    marks = ",".join("?" * len(part))
                    for row in db.execute(f"SELECT {', '.join(CHUNK_COLUMNS)} FROM chunks WHERE id IN ({marks})",
                                          part):
                        out[int(row[0])] = row
            finally:
                db.close()
        except sqlite3.Error as exc:
            raise _store_error(self.index_dir, exc) from None
        missing = [i for i in ids if i not in out]
        if missing:
            raise SymoeError(f"index {self.index_dir} is damaged: {len(missing)} chunk id(s) of {INDEX_FILE} "
                             f"have no row in {CHUNKS_FILE} (first: {missing[0]}); {_rebuild_hint(self.index_dir)}")
        return out

    def _hit(self, row: tuple[Any, ...], score: float) -> Hit:
        chunk_id, file, doc_id, title, source, start, end, line, text = row
        try:
            return Hit(chunk_id=chunk_id, score=score, text=text, source=source, title=title, doc_id=doc_id,
                       file=file, start=start, end=end, line=line)
        except ValidationError as exc:
            field = ".".join(str(x) for x in exc.errors()[0]["loc"])
            raise SymoeError(f"index {self.index_dir} is damaged: row {chunk_id} of {CHUNKS_FILE} is garbled "
                             f"(its {field} is {exc.errors()[0]['msg'].lower()}); "
                             f"{_rebuild_hint(self.index_dir)}") from None


def open_index(index_dir: Path, embedding: EmbeddingConfig) -> Retriever:
    """Open an index for searching with the configured embedding model."""
    index_dir = Path(index_dir).expanduser()
    meta = read_meta(index_dir)
    _check_model(index_dir, meta, embedding_identity(embedding))
    index = _load(index_dir, meta)
    return Retriever(index_dir, meta, index, embedding)


def check_index(index_dir: Path) -> IndexMeta:
    """The metadata of a healthy index; a damaged one is a one-line ``SymoeError`` (``symoe index info``).

    The same checks as opening it for a search, without the embedding model: ``index.faiss``
    loads and agrees with ``meta.json``, ``chunks.sqlite`` passes ``quick_check``, holds
    exactly the chunk ids of ``index.faiss`` and no garbled row.
    """
    index_dir = Path(index_dir).expanduser()
    meta = read_meta(index_dir)
    _load(index_dir, meta)
    return meta


def _load(index_dir: Path, meta: IndexMeta) -> Any:
    """The faiss index of a folder, after checking it and the chunk store against the metadata."""
    faiss = _faiss()
    path = index_dir / INDEX_FILE
    rebuild = _rebuild_hint(index_dir)
    if not path.is_file() or not (index_dir / CHUNKS_FILE).is_file():
        raise SymoeError(f"index {index_dir} is incomplete (no {path.name} or {CHUNKS_FILE}); {rebuild}")
    try:
        index = faiss.read_index(str(path))
    except (RuntimeError, MemoryError, ValueError):
        raise SymoeError(f"index {index_dir} is damaged: {path.name} is not a readable faiss index; "
                         f"{rebuild}") from None
    if index.ntotal != meta.chunks or index.d != meta.embedding.dims:
        raise SymoeError(f"index {index_dir} is inconsistent ({index.ntotal} vectors of {index.d} dims, "
                         f"metadata says {meta.chunks} of {meta.embedding.dims}); {rebuild}")
    _roll_back_unfinished_write(index_dir)
    id_map = getattr(index, "id_map", None)
    if id_map is None:
        raise SymoeError(f"index {index_dir} is damaged: {path.name} has no chunk ids; {rebuild}")
    _check_store(index_dir, meta, np.sort(faiss.vector_to_array(id_map).astype(np.int64)))
    return index


def _roll_back_unfinished_write(index_dir: Path) -> None:
    """A build killed before its commit leaves ``chunks.sqlite-journal``: a read-only
    connection cannot roll it back (``SQLITE_READONLY_ROLLBACK``), a read-write one does, on
    its first read. Without a journal there is nothing to do."""
    if not (index_dir / f"{CHUNKS_FILE}-journal").exists():
        return
    try:
        db = _connect(index_dir / CHUNKS_FILE)
        db.close()
    except sqlite3.Error as exc:
        raise _store_error(index_dir, exc) from None


def _check_store(index_dir: Path, meta: IndexMeta, vector_ids: np.ndarray) -> None:
    """``chunks.sqlite`` passes ``quick_check``, holds one well-typed row for each id of ``index.faiss``."""
    rebuild = _rebuild_hint(index_dir)
    try:
        db = _connect(index_dir / CHUNKS_FILE, readonly=True)
        try:
            problems = [row[0] for row in db.execute("PRAGMA quick_check(3)")]
            if problems != ["ok"]:
                raise SymoeError(f"index {index_dir} is damaged: its chunk store {CHUNKS_FILE} is corrupt "
                                 f"({' '.join(' '.join(problems).split())[:160]}); {rebuild}")
            columns = {row[1] for row in db.execute("PRAGMA table_info(chunks)")}
            if not set(CHUNK_COLUMNS) <= columns:
                raise SymoeError(f"index {index_dir} is damaged: its chunk store {CHUNKS_FILE} has no chunks "
                                 f"table; {rebuild}")
            rows = np.fromiter((row[0] for row in db.execute("SELECT id FROM chunks ORDER BY id")), dtype=np.int64)
            garbled = db.execute(f"SELECT id FROM chunks WHERE {GARBLED} LIMIT 1").fetchone()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise _store_error(index_dir, exc) from None
    if len(rows) != meta.chunks or sum(f.chunks for f in meta.files.values()) != meta.chunks:
        raise SymoeError(f"index {index_dir} is inconsistent: {CHUNKS_FILE} holds {len(rows)} chunks, "
                         f"{INDEX_FILE} {len(vector_ids)} and {META_FILE} says {meta.chunks}; {rebuild}")
    if garbled is not None:
        raise SymoeError(f"index {index_dir} is damaged: row {garbled[0]} of {CHUNKS_FILE} is garbled (a column "
                         f"of the wrong type); {rebuild}")
    if not np.array_equal(rows, vector_ids):
        lost = np.setdiff1d(vector_ids, rows)
        first = f" (first: {int(lost[0])})" if len(lost) else ""
        raise SymoeError(f"index {index_dir} is damaged: {len(lost) or 'some'} chunk id(s) of {INDEX_FILE} have "
                         f"no row in {CHUNKS_FILE}{first}; {rebuild}")


# ---------------------------------------------------------------- building


def _collect(paths: list[Path], index_dir: Path, report: BuildReport) -> tuple[list[Path], list[Path]]:
    """(files to index, folder roots) under the given paths; hidden files and the index are skipped."""
    files: list[Path] = []
    roots: list[Path] = []
    inside_index = index_dir.resolve()
    for given in paths:
        path = Path(given).expanduser()
        if not path.exists():
            raise SymoeError(f"{path} does not exist")
        path = path.resolve()
        if path.is_file():
            files.append(path)
            continue
        roots.append(path)
        for found in sorted(path.rglob("*")):
            rel = found.relative_to(path).parts
            if any(part.startswith(".") for part in rel) or inside_index in found.parents:
                continue
            if found.is_file():
                if is_supported(found):
                    files.append(found)
                else:
                    report.ignored += 1
    return list(dict.fromkeys(files)), roots



def embedding_text(chunk: Chunk) -> str:
    """What is embedded for a chunk: its title (when it has one) and its text."""
    return f"{chunk.title}\n{chunk.text}" if chunk.title else chunk.text


def build_index(paths: list[Path], index_dir: Path, embedding: EmbeddingConfig, *, rebuild: bool = False,
                progress: StageReport | None = None) -> BuildReport:
    """Index (incrementally) the supported files in ``paths`` into ``index_dir``."""
    started = time.perf_counter()
    index_dir = Path(index_dir).expanduser()
    report = BuildReport(index=str(index_dir))
    files, roots = _collect(paths, index_dir, report)
    current = embedding_identity(embedding)
    faiss = _faiss()

    exists = (index_dir / META_FILE).exists()
    if rebuild or not exists:  # without metadata, what is left is an unfinished first build
        _remove_index_files(index_dir)
        exists = False
    if exists:
        meta = read_meta(index_dir)
        _check_model(index_dir, meta, current)
        index = _load(index_dir, meta)
    else:
        meta = IndexMeta(embedding=current)
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(current.dims))

    # read what changed
    fresh: dict[str, tuple[FileRecord, list[Chunk]]] = {}
    seen: set[str] = set()
    for path in files:
        key = str(path)
        seen.add(key)
        old = meta.files.get(key)
        try:
            stat = path.stat()
            if old and old.size == stat.st_size and old.mtime_ns == stat.st_mtime_ns:
                report.unchanged.append(key)
                continue
            sha = sha256_file(path)
            if old and old.sha256 == sha:
                meta.files[key] = old.model_copy(update={"mtime_ns": stat.st_mtime_ns})
                report.unchanged.append(key)
                continue
            docs = read_documents(path)
        except OSError as exc:
            report.failed.append(FileProblem(path=key, reason=f"cannot read: {exc.strerror or exc}",
                                             kept_previous=old is not None))
            continue
        except UnreadableFile as exc:
            report.failed.append(FileProblem(path=key, reason=str(exc), kept_previous=old is not None))
            continue
        finally:
            if progress:
                progress("reading files", 1, len(files))
        chunks = [c for doc in docs for c in chunk_document(doc, meta.max_words, meta.overlap)]
        fresh[key] = (FileRecord(size=stat.st_size, mtime_ns=stat.st_mtime_ns, sha256=sha,
                                 documents=len(docs), chunks=len(chunks)), chunks)
        (report.updated if old else report.added).append(key)

    for key in meta.files:
        if key not in seen and any(Path(key).is_relative_to(root) for root in roots) and not Path(key).exists():
            report.removed.append(key)

    # embed before touching anything on disk: an interrupted build leaves the index as it was
    new_chunks = [c for _, chunks in fresh.values() for c in chunks]
    total = len(new_chunks)
    vectors = encode([embedding_text(c) for c in new_chunks], embedding,
                     progress=(lambda n: progress("embedding chunks", n, total)) if progress else None)

    index_dir.mkdir(parents=True, exist_ok=True)
    try:
        _write(index_dir, index, meta, fresh, report, vectors)
    except sqlite3.Error as exc:
        raise _store_error(index_dir, exc) from None
    report.chunks_added = total
    report.chunks_total = meta.chunks
    report.seconds = round(time.perf_counter() - started, 2)
    return report


def _remove_index_files(index_dir: Path) -> None:
    """Delete an index's files, with sqlite's journals: a journal left beside a new chunk store
    would be rolled back into it."""
    for name in (INDEX_FILE, CHUNKS_FILE, META_FILE):
        for suffix in ("", "-journal", "-wal", "-shm", ".tmp"):
            try:
                (index_dir / f"{name}{suffix}").unlink(missing_ok=True)
            except IsADirectoryError:
                raise SymoeError(f"{index_dir / (name + suffix)} is a folder; move it out of the index folder "
                                 f"{index_dir}") from None


def _write(index_dir: Path, index: Any, meta: IndexMeta, fresh: dict[str, tuple[FileRecord, list[Chunk]]],
           report: BuildReport, vectors: np.ndarray) -> None:
    """Apply a build to disk: the chunk rows, then the vectors and metadata (written aside, then renamed)."""
    faiss = _faiss()
    total = len(vectors)
    db = _connect(index_dir / CHUNKS_FILE)
    try:
        stale = [*report.removed, *(k for k in fresh if k in meta.files)]
        for key in stale:
            old_ids = [r[0] for r in db.execute("SELECT id FROM chunks WHERE file = ?", (key,))]
            if old_ids:
                index.remove_ids(np.array(old_ids, dtype=np.int64))
            db.execute("DELETE FROM chunks WHERE file = ?", (key,))
            meta.files.pop(key, None)
        next_id = (db.execute("SELECT max(id) FROM chunks").fetchone()[0] or 0) + 1
        ids = np.arange(next_id, next_id + total, dtype=np.int64)
        rows = []
        position = 0
        for key, (record, chunks) in fresh.items():
            for chunk in chunks:
                rows.append((int(ids[position]), key, chunk.doc_id, chunk.title, chunk.source, chunk.start,
                             chunk.end, chunk.line, chunk.text))
                position += 1
            meta.files[key] = record
        db.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        if total:
            index.add_with_ids(vectors, ids)
        meta.chunks = int(index.ntotal)
        meta.updated = datetime.now(UTC).isoformat(timespec="seconds")
        tmp_index = index_dir / f"{INDEX_FILE}.tmp"
        tmp_meta = index_dir / f"{META_FILE}.tmp"
        faiss.write_index(index, str(tmp_index))
        tmp_meta.write_text(json.dumps(meta.model_dump(mode="json"), indent=1))
        db.commit()
        os.replace(tmp_index, index_dir / INDEX_FILE)
        os.replace(tmp_meta, index_dir / META_FILE)
    finally:
        db.close()
