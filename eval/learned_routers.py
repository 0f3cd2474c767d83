"""Routers that learn from an outcome matrix which expert gets which question right.

A router is a small class: ``fit(matrix, embeddings) -> self`` on the questions of a matrix
(``eval.matrix``) and their embeddings (one row per question, in the matrix's order), then
``score(embeddings, tasks=None) -> (questions, experts)`` predicted ``correct`` of each expert
(higher is better); ``route`` picks the best expert of each question, optionally trading
accuracy against a per-expert cost. They are a registry, as methods are
(``routers.get("knn")(k=20)``); each trains in seconds on 2 CPU cores:

* ``knn``: the mean outcome of the question's k nearest validation questions (faiss
  ``IndexFlatIP`` on L2-normalised embeddings, i.e. cosine), shrunk toward each expert's
  overall accuracy by ``prior`` pseudo-questions (so ties go to the best expert overall);
* ``logreg``: one scikit-learn ``LogisticRegression`` per expert (a fractional ``correct``
  is a weighted pair of examples, 1 and 0);
* ``mlp``: one scikit-learn ``MLPClassifier`` over every expert at once (multi-label);
* ``mf``: matrix factorisation as RouteLLM's MF router: ``P(correct | q, e) =
  sigmoid(u_e . (W q) + b_e)``, a learned projection of the question embedding against one
  learned vector per expert, fitted full-batch with Adam in numpy.

``logreg``, ``mlp`` and ``mf`` use the question's task when it is known (a one-hot feature
beside the embedding; ``uses_task`` says so; a task unseen in training adds nothing); ``knn``
ignores it. ``cross_fitted_scores`` scores every question of a matrix by a router fitted on
the other folds only (seeded), so a replay on a matrix without a test split stays honest.

``embed_texts`` embeds question texts with the configured sentence-transformers model
(``agents.embedder.encode``), cached by text hash in ``<home>/embeddings/`` (one ``.npz`` per
embedding model), so a matrix of thousands of questions is embedded once.
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier

from agents.embedder import EmbeddingConfig, embedder_path, encode
from agents.errors import SymoeError
from agents.files import atomic_open
from agents.paths import writable_dir
from agents.registry import Registry
from eval.matrix import Matrix, MatrixRow


class RouterError(SymoeError):
    """A router used before it was fitted, or given inputs of the wrong shape."""


def _as_matrix(rows: Matrix | Sequence[MatrixRow]) -> Matrix:
    return rows if isinstance(rows, Matrix) else Matrix(list(rows))


def normalise(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


class LearnedRouter(abc.ABC):
    """Fit on a matrix's outcomes and its questions' embeddings; score new questions."""

    name: ClassVar[str] = ""
    #: whether ``score`` uses the question's task (a router that ignores it says so in reports)
    uses_task: bool = False

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.experts: list[str] = []
        self.tasks: list[str] = []
        self.prior: np.ndarray | None = None  # each expert's accuracy in training

    def fit(self, rows: Matrix | Sequence[MatrixRow], embeddings: np.ndarray) -> LearnedRouter:
        matrix = _as_matrix(rows)
        x = np.asarray(embeddings, dtype=np.float32)
        if x.ndim != 2 or len(x) != len(matrix):
            raise RouterError(f"{self.name}: {len(matrix)} questions but embeddings of shape {x.shape}")
        if not len(matrix):
            raise RouterError(f"{self.name}: nothing to fit (no questions)")
        self.experts, self.tasks = list(matrix.experts), list(matrix.tasks)
        y = matrix.correct()
        self.prior = y.mean(axis=0)
        self._fit(x, y, [r.task for r in matrix.rows])
        return self

    def score(self, embeddings: np.ndarray, tasks: Sequence[str] | None = None) -> np.ndarray:
        """(questions, experts): each expert's predicted ``correct`` on each question."""
        if self.prior is None:
            raise RouterError(f"{self.name}: score called before fit")
        x = np.asarray(embeddings, dtype=np.float32)
        if x.ndim != 2:
            raise RouterError(f"{self.name}: embeddings must be (questions, dims), not {x.shape}")
        if tasks is not None and len(tasks) != len(x):
            raise RouterError(f"{self.name}: {len(x)} embeddings but {len(tasks)} tasks")
        if not len(x):
            return np.zeros((0, len(self.experts)))
        return self._score(x, tasks)

    def route(self, embeddings: np.ndarray, tasks: Sequence[str] | None = None,
              costs: np.ndarray | None = None, cost_weight: float = 0.0) -> np.ndarray:
        """Index of the chosen expert per question: the best score, less ``cost_weight`` x cost."""
        s = self.score(embeddings, tasks)
        if costs is not None and cost_weight:
            s = s - cost_weight * np.asarray(costs, dtype=np.float64)[None, :]
        return s.argmax(axis=1)

    # -------------------------------------------------------------- for subclasses

    @abc.abstractmethod
    def _fit(self, x: np.ndarray, y: np.ndarray, tasks: list[str]) -> None: ...

    @abc.abstractmethod
    def _score(self, x: np.ndarray, tasks: Sequence[str] | None) -> np.ndarray: ...

    def _features(self, x: np.ndarray, tasks: Sequence[str] | None) -> np.ndarray:
        """The normalised embedding, then (``uses_task``) a one-hot of the training tasks."""
        x = normalise(x)
        if not self.uses_task or len(self.tasks) < 2:
            return x
        onehot = np.zeros((len(x), len(self.tasks)), dtype=np.float32)
        if tasks is not None:
            position = {t: k for k, t in enumerate(self.tasks)}
            for i, t in enumerate(tasks):
                if t in position:
                    onehot[i, position[t]] = 1.0
        return np.hstack([x, onehot])


routers: Registry[type[LearnedRouter]] = Registry("learned router")


@routers.register_named
class KnnRouter(LearnedRouter):
    name = "knn"
    uses_task = False

    def __init__(self, seed: int = 0, k: int = 20, prior: float = 1.0) -> None:
        super().__init__(seed)
        if k < 1:
            raise RouterError("knn: k must be at least 1")
        self.k, self.prior_weight = k, prior
        self._index: Any = None
        self._y: np.ndarray | None = None

    def _fit(self, x: np.ndarray, y: np.ndarray, tasks: list[str]) -> None:
        import faiss

        x = normalise(x)
        self._index = faiss.IndexFlatIP(x.shape[1])
        self._index.add(x)
        self._y = y

    def _score(self, x: np.ndarray, tasks: Sequence[str] | None) -> np.ndarray:
        assert self._y is not None and self.prior is not None
        k = min(self.k, len(self._y))
        _, neighbours = self._index.search(normalise(x), k)
        found = neighbours >= 0
        sums = np.einsum("nk,nke->ne", found.astype(np.float64), self._y[np.maximum(neighbours, 0)])
        counts = found.sum(axis=1, keepdims=True)
        return (sums + self.prior_weight * self.prior[None, :]) / (counts + self.prior_weight)


def _constant_or_none(column: np.ndarray) -> float | None:
    return float(column[0]) if np.all(column == column[0]) else None


@routers.register_named
class LogisticRouter(LearnedRouter):
    name = "logreg"

    def __init__(self, seed: int = 0, c: float = 1.0, task_feature: bool = True) -> None:
        super().__init__(seed)
        self.c, self.uses_task = c, task_feature
        self._models: list[LogisticRegression | float] = []

    def _fit(self, x: np.ndarray, y: np.ndarray, tasks: list[str]) -> None:
        features = self._features(x, tasks)
        self._models = []
        for j in range(y.shape[1]):
            constant = _constant_or_none(y[:, j])
            if constant is not None:
                self._models.append(constant)
                continue
            model = LogisticRegression(C=self.c, max_iter=1000, random_state=self.seed)
            if np.all((y[:, j] == 0) | (y[:, j] == 1)):
                model.fit(features, y[:, j].astype(np.int64))
            else:  # partial credit: each question twice, as right (weight c) and wrong (weight 1 - c)
                labels = np.concatenate([np.ones(len(y)), np.zeros(len(y))])
                weights = np.concatenate([y[:, j], 1.0 - y[:, j]])
                keep = weights > 0
                model.fit(np.vstack([features, features])[keep], labels[keep], sample_weight=weights[keep])
            self._models.append(model)

    def _score(self, x: np.ndarray, tasks: Sequence[str] | None) -> np.ndarray:
        features = self._features(x, tasks)
        columns = [np.full(len(x), m) if isinstance(m, float) else m.predict_proba(features)[:, 1]
                   for m in self._models]
        return np.stack(columns, axis=1)


@routers.register_named
class MlpRouter(LearnedRouter):
    name = "mlp"

    def __init__(self, seed: int = 0, hidden: int = 128, alpha: float = 1e-3, max_iter: int = 200,
                 task_feature: bool = True) -> None:
        super().__init__(seed)
        self.hidden, self.alpha, self.max_iter, self.uses_task = hidden, alpha, max_iter, task_feature
        self._model: MLPClassifier | None = None
        self._constant: dict[int, float] = {}

    def _fit(self, x: np.ndarray, y: np.ndarray, tasks: list[str]) -> None:
        labels = (y >= 0.5).astype(np.int64)
        self._constant = {j: float(labels[0, j]) for j in range(labels.shape[1])
                          if np.all(labels[:, j] == labels[0, j])}
        varying = [j for j in range(labels.shape[1]) if j not in self._constant]
        self._varying = varying
        if not varying:
            self._model = None
            return
        model = MLPClassifier(hidden_layer_sizes=(self.hidden,), alpha=self.alpha, max_iter=self.max_iter,
                              early_stopping=len(x) >= 50, n_iter_no_change=10, random_state=self.seed)
        target = labels[:, varying]
        model.fit(self._features(x, tasks), target if target.shape[1] > 1 else target[:, 0])
        self._model = model

    def _score(self, x: np.ndarray, tasks: Sequence[str] | None) -> np.ndarray:
        out = np.zeros((len(x), len(self.experts)))
        for j, value in self._constant.items():
            out[:, j] = value
        if self._model is not None:
            proba = self._model.predict_proba(self._features(x, tasks))
            if len(self._varying) == 1:
                proba = proba[:, 1:2]
            out[:, self._varying] = proba
        return out


@routers.register_named
class MfRouter(LearnedRouter):
    """RouteLLM's matrix factorisation, for any number of experts: a projection ``W`` of the
    question's features and one vector ``u_e`` (and bias) per expert; logistic loss on
    ``correct``, L2 penalty ``l2``, full-batch Adam."""

    name = "mf"

    def __init__(self, seed: int = 0, dims: int = 32, steps: int = 300, lr: float = 0.01, l2: float = 1e-4,
                 task_feature: bool = True) -> None:
        super().__init__(seed)
        self.dims, self.steps, self.lr, self.l2, self.uses_task = dims, steps, lr, l2, task_feature
        self._w: np.ndarray | None = None
        self._u: np.ndarray | None = None
        self._b: np.ndarray | None = None

    def _fit(self, x: np.ndarray, y: np.ndarray, tasks: list[str]) -> None:
        f = self._features(x, tasks).astype(np.float64)
        rng = np.random.default_rng(self.seed)
        n, d = f.shape
        e = y.shape[1]
        prior = np.clip(y.mean(axis=0), 1e-3, 1 - 1e-3)
        params = {"w": rng.normal(0, 1 / np.sqrt(d), (d, self.dims)), "u": rng.normal(0, 0.1, (e, self.dims)),
                  "b": np.log(prior / (1 - prior))}
        m = {k: np.zeros_like(v) for k, v in params.items()}
        v2 = {k: np.zeros_like(v) for k, v in params.items()}
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        for step in range(1, self.steps + 1):
            h = f @ params["w"]  # (n, dims)
            logits = h @ params["u"].T + params["b"]
            p = 1.0 / (1.0 + np.exp(-logits))
            g = (p - y) / n  # d loss / d logits (mean logistic loss)
            grads = {"u": g.T @ h + self.l2 * params["u"], "b": g.sum(axis=0),
                     "w": f.T @ (g @ params["u"]) + self.l2 * params["w"]}
            for k in params:
                m[k] = beta1 * m[k] + (1 - beta1) * grads[k]
                v2[k] = beta2 * v2[k] + (1 - beta2) * grads[k] ** 2
                update = (m[k] / (1 - beta1 ** step)) / (np.sqrt(v2[k] / (1 - beta2 ** step)) + eps)
                params[k] = params[k] - self.lr * update
        self._w, self._u, self._b = params["w"], params["u"], params["b"]

    def _score(self, x: np.ndarray, tasks: Sequence[str] | None) -> np.ndarray:
        assert self._w is not None and self._u is not None and self._b is not None
        logits = (self._features(x, tasks).astype(np.float64) @ self._w) @ self._u.T + self._b
        return 1.0 / (1.0 + np.exp(-logits))


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
