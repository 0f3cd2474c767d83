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


def _faiss() -> Any:
    import faiss

    return faiss


def _connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
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
        db = _connect(self.index_dir / CHUNKS_FILE, readonly=True)
        try:
            out: dict[int, tuple[Any, ...]] = {}
            for start in range(0, len(ids), 500):
                part = ids[start:start + 500]
                marks = ",".join("?" * len(part))
                for row in db.execute(f"SELECT id, file, doc_id, title, source, start, end_, line, text "
                                      f"FROM chunks WHERE id IN ({marks})", part):
                    out[int(row[0])] = row
            return out
        finally:
            db.close()

    @staticmethod
    def _hit(row: tuple[Any, ...], score: float) -> Hit:
        chunk_id, file, doc_id, title, source, start, end, line, text = row
        return Hit(chunk_id=chunk_id, score=score, text=text, source=source, title=title, doc_id=doc_id,
                   file=file, start=start, end=end, line=line)


def open_index(index_dir: Path, embedding: EmbeddingConfig) -> Retriever:
    """Open an index for searching with the configured embedding model."""
    index_dir = Path(index_dir).expanduser()
    meta = read_meta(index_dir)
    _check_model(index_dir, meta, embedding_identity(embedding))
    index = _load_faiss(index_dir, meta)
    return Retriever(index_dir, meta, index, embedding)


def _load_faiss(index_dir: Path, meta: IndexMeta) -> Any:
    faiss = _faiss()
    path = index_dir / INDEX_FILE
    rebuild = f"rebuild it with `symoe index build PATH... --index {index_dir} --rebuild`"
    if not path.exists() or not (index_dir / CHUNKS_FILE).exists():
        raise SymoeError(f"index {index_dir} is incomplete (no {path.name} or {CHUNKS_FILE}); {rebuild}")
    try:
        index = faiss.read_index(str(path))
    except RuntimeError:
        raise SymoeError(f"{path} is not a readable faiss index; {rebuild}") from None
    if index.ntotal != meta.chunks or index.d != meta.embedding.dims:
        raise SymoeError(f"index {index_dir} is inconsistent ({index.ntotal} vectors of {index.d} dims, "
                         f"metadata says {meta.chunks} of {meta.embedding.dims}); {rebuild}")
    return index


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
    if rebuild and exists:
        for name in (INDEX_FILE, CHUNKS_FILE, META_FILE):
            (index_dir / name).unlink(missing_ok=True)
        exists = False
    if exists:
        meta = read_meta(index_dir)
        _check_model(index_dir, meta, current)
        index = _load_faiss(index_dir, meta)
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
    report.chunks_added = total
    report.chunks_total = meta.chunks
    report.seconds = round(time.perf_counter() - started, 2)
    return report
