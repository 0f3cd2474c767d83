"""Routers fitted on an outcome matrix, scored without leakage, on cached embeddings.

The routers themselves (``knn``, ``logreg``, ``mlp``, ``mf``: fit on graded questions, score
new ones) are ``orchestrator.learned``'s registry, so live routing (``learned:NAME``) and
replay use one implementation. This module adds what evaluation needs around them:

* ``cross_fitted_scores`` scores every question of a matrix by a router fitted on the other
  folds only (seeded), so a replay on a matrix without a test split stays honest;
* ``embed_texts`` (``agents.embedder``'s) embeds question texts cached by text hash in
  ``<home>/embeddings/``, so a matrix of thousands of questions is embedded once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import numpy as np

from agents.embedder import embed_texts
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
    tasks, formats = matrix.question_tasks(), matrix.question_formats()
    for k in range(folds):
        test = np.flatnonzero(fold == k)
        train = np.flatnonzero(fold != k)
        if not len(test):
            continue
        if not len(train):
            raise RouterError(f"fold {k} leaves nothing to train on; use fewer folds")
        router = make().fit(matrix.take(train), x[train])
        out[test] = router.score(x[test], [tasks[i] for i in test] if use_task else None,
                                 [formats[i] for i in test])
    return out
