"""Routers fitted on an outcome matrix, scored without leakage, on cached embeddings.

The routers themselves (``knn``, ``logreg``, ``mlp``, ``mf``: fit on graded questions, score
new ones) are ``orchestrator.learned``'s registry, so live routing (``learned:NAME``) and
replay use one implementation. This module adds what evaluation needs around them:

* ``cross_fitted_scores`` scores every question of a matrix by a router fitted on the other
  folds only (seeded), so a replay on a matrix without a test split stays honest;
* ``embed_texts`` embeds question texts with the configured sentence-transformers model
  (``agents.embedder.encode``), cached by text hash in ``<home>/embeddings/`` (one ``.npz``
  per embedding model), so a matrix of thousands of questions is embedded once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from agents.embedder import EmbeddingConfig, embedder_path, encode
from agents.files import atomic_open
from agents.paths import writable_dir
from eval.matrix import Matrix
from orchestrator.learned import LearnedRouter, RouterError, routers

__all__ = ["LearnedRouter", "RouterError", "cross_fitted_scores", "embed_texts", "fold_of", "routers"]


# ---------------------------------------------------------------------- cross-fitting

def fold_of(ids: Sequence[str], folds: int, seed: int = 0) -> np.ndarray:
    """Each question's fold (0..folds-1), by a seeded hash of its id: stable across runs and orders."""
    if folds < 2:
        raise RouterError("cross-fitting needs at least 2 folds")
    return np.array([int(hashlib.sha256(f"{seed}:{i}".encode()).hexdigest(), 16) % folds for i in ids])


def cross_fitted_scores(make: Callable[[], LearnedRouter], matrix: Matrix, embeddings: np.ndarray,
                        folds: int = 5, seed: int = 0, use_task: bool = True) -> np.ndarray:
    """(questions, experts) scores, each question's from a router fitted on the other folds."""
    x = np.asarray(embeddings, dtype=np.float32)
    if len(x) != len(matrix):
        raise RouterError(f"{len(matrix)} questions but {len(x)} embeddings")
    fold = fold_of(matrix.ids, folds, seed)
    out = np.zeros((len(matrix), len(matrix.experts)))
    tasks = [r.task for r in matrix.rows]
    for k in range(folds):
        test = np.flatnonzero(fold == k)
        train = np.flatnonzero(fold != k)
        if not len(test):
            continue
        if not len(train):
            raise RouterError(f"fold {k} leaves nothing to train on; use fewer folds")
        router = make().fit(matrix.take(train), x[train])
        out[test] = router.score(x[test], [tasks[i] for i in test] if use_task else None)
    return out


# ---------------------------------------------------------------------- embeddings, cached

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
