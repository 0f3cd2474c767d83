"""Routers that learn from graded questions which expert gets which question right.

A router is a small class: ``fit(graded, embeddings) -> self`` on graded questions (an outcome
matrix, ``eval.matrix``, or a profile's examples, ``ExampleTable``) and their embeddings (one
row per question, in order), then
``score(embeddings, tasks=None) -> (questions, experts)`` predicted ``correct`` of each expert
(higher is better); ``route`` picks the best expert of each question, optionally trading
accuracy against a per-expert cost. They are a registry, as methods are
(``routers.get("knn")(k=20)``); each trains in seconds on 2 CPU cores:

* ``knn``: the mean outcome of the question's k nearest validation questions (faiss
  ``IndexFlatIP`` on L2-normalised embeddings, i.e. cosine), shrunk toward each expert's
  overall accuracy by ``prior`` pseudo-questions (so ties go to the best expert overall);
* ``knn-task``: ``knn`` shrunk toward each expert's accuracy on the question's task (``prior``
  pseudo-neighbours of the task's record): the task's best expert unless the neighbours say
  clearly otherwise;
* ``logreg``: one scikit-learn ``LogisticRegression`` per expert (a fractional ``correct``
  is a weighted pair of examples, 1 and 0);
* ``mlp``: one scikit-learn ``MLPClassifier`` over every expert at once (multi-label);
* ``mf``: matrix factorisation as RouteLLM's MF router: ``P(correct | q, e) =
  sigmoid(u_e . (W q) + b_e)``, a learned projection of the question embedding against one
  learned vector per expert, fitted full-batch with Adam in numpy.

``logreg``, ``mlp`` and ``mf`` use the question's task when it is known (a one-hot feature
beside the embedding; ``uses_task`` says so; a task unseen in training adds nothing); ``knn``
ignores it (``knn-task`` reads it). They also read the question's answer format (a one-hot of
``FORMATS``; ``uses_format``), which a live ask always knows even when its task is unknown: a
program expert that rarely states a letter is then not chosen for options. The
``learned:NAME`` router (``orchestrator.methods``) fits one on the profile's graded questions
and routes each query to its best-scored expert.
"""

from __future__ import annotations

import abc
import warnings
from collections.abc import Sequence
from typing import Any, ClassVar, Protocol

import numpy as np
from threadpoolctl import threadpool_limits  # scikit-learn's own dependency

from agents.errors import SymoeError
from agents.registry import Registry

#: the answer formats a router may read, in the order of their one-hot feature
FORMATS: tuple[str, ...] = ("choice", "number", "text")
#: each question's answer format, in order (None where unknown), or none given
Formats = Sequence[str | None] | None


class RouterError(SymoeError):
    """A router used before it was fitted, or given inputs of the wrong shape."""


class Graded(Protocol):
    """Graded questions to fit on: an outcome matrix (``eval.matrix.Matrix``) or ``ExampleTable``."""

    @property
    def experts(self) -> list[str]: ...

    @property
    def tasks(self) -> list[str]: ...

    def question_tasks(self) -> list[str]: ...

    def question_formats(self) -> list[str | None]: ...

    def correct(self) -> np.ndarray: ...

    def __len__(self) -> int: ...


class ExampleTable:
    """A profile's graded questions (``ProfiledExample``) as ``Graded``: each expert's outcome
    per question (questions where an expert has none count at its mean)."""

    def __init__(self, examples: Sequence[Any], experts: Sequence[str]) -> None:
        self.examples, self._experts = list(examples), list(experts)

    @property
    def experts(self) -> list[str]:
        return self._experts

    @property
    def tasks(self) -> list[str]:
        return sorted({e.task for e in self.examples})

    def question_tasks(self) -> list[str]:
        return [e.task for e in self.examples]

    def question_formats(self) -> list[str | None]:
        return [e.format for e in self.examples]

    def correct(self) -> np.ndarray:
        y = np.full((len(self.examples), len(self._experts)), np.nan)
        for i, e in enumerate(self.examples):
            for j, name in enumerate(self._experts):
                if name in e.correct:
                    y[i, j] = float(e.correct[name])
        means = [float(np.nanmean(col)) if not np.isnan(col).all() else 0.0 for col in y.T]
        return np.where(np.isnan(y), np.array(means)[None, :], y)

    def __len__(self) -> int:
        return len(self.examples)


def normalise(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def one_blas_thread() -> Any:
    """BLAS on one thread: these routers multiply small matrices, where a second BLAS thread
    only waits (on a busy 2-core machine the MF fit took 7.5 s with two, 0.33 s with one)."""
    return threadpool_limits(limits=1, user_api="blas")


class LearnedRouter(abc.ABC):
    """Fit on a matrix's outcomes and its questions' embeddings; score new questions."""

    name: ClassVar[str] = ""
    #: whether ``score`` uses the question's task (a router that ignores it says so in reports)
    uses_task: bool = False
    #: whether ``score`` uses the question's answer format (``FORMATS``)
    uses_format: bool = False

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.experts: list[str] = []
        self.tasks: list[str] = []
        self.formats_seen = False  # whether training knew its questions' formats
        self.prior: np.ndarray | None = None  # each expert's accuracy in training

    def fit(self, matrix: Graded, embeddings: np.ndarray) -> LearnedRouter:
        x = np.asarray(embeddings, dtype=np.float32)
        if x.ndim != 2 or len(x) != len(matrix):
            raise RouterError(f"{self.name}: {len(matrix)} questions but embeddings of shape {x.shape}")
        if not len(matrix):
            raise RouterError(f"{self.name}: nothing to fit (no questions)")
        self.experts, self.tasks = list(matrix.experts), list(matrix.tasks)
        formats = matrix.question_formats()
        self.formats_seen = any(f is not None for f in formats)
        y = matrix.correct()
        self.prior = y.mean(axis=0)
        with one_blas_thread():
            self._fit(x, y, matrix.question_tasks(), formats)
        return self

    def score(self, embeddings: np.ndarray, tasks: Sequence[str] | None = None,
              formats: Sequence[str | None] | None = None) -> np.ndarray:
        """(questions, experts): each expert's predicted ``correct`` on each question (its task
        and answer format where known)."""
        if self.prior is None:
            raise RouterError(f"{self.name}: score called before fit")
        x = np.asarray(embeddings, dtype=np.float32)
        if x.ndim != 2:
            raise RouterError(f"{self.name}: embeddings must be (questions, dims), not {x.shape}")
        if tasks is not None and len(tasks) != len(x):
            raise RouterError(f"{self.name}: {len(x)} embeddings but {len(tasks)} tasks")
        if formats is not None and len(formats) != len(x):
            raise RouterError(f"{self.name}: {len(x)} embeddings but {len(formats)} formats")
        if not len(x):
            return np.zeros((0, len(self.experts)))
        with one_blas_thread():
            return self._score(x, tasks, formats)

    def route(self, embeddings: np.ndarray, tasks: Sequence[str] | None = None,
              costs: np.ndarray | None = None, cost_weight: float = 0.0,
              formats: Sequence[str | None] | None = None) -> np.ndarray:
        """Index of the chosen expert per question: the best score, less ``cost_weight`` x cost."""
        s = self.score(embeddings, tasks, formats)
        if costs is not None and cost_weight:
            s = s - cost_weight * np.asarray(costs, dtype=np.float64)[None, :]
        return s.argmax(axis=1)

    # -------------------------------------------------------------- for subclasses

    @abc.abstractmethod
    def _fit(self, x: np.ndarray, y: np.ndarray, tasks: list[str], formats: Formats) -> None: ...

    @abc.abstractmethod
    def _score(self, x: np.ndarray, tasks: Sequence[str] | None, formats: Formats) -> np.ndarray: ...

    def _features(self, x: np.ndarray, tasks: Sequence[str] | None, formats: Formats) -> np.ndarray:
        """The normalised embedding, then (``uses_task``) a one-hot of the training tasks, then
        (``uses_format``, when training knew formats) a one-hot of the answer format being
        fitted or scored (zeros where unknown)."""
        parts = [normalise(x)]
        if self.uses_task and len(self.tasks) >= 2:
            parts.append(_onehot(tasks, self.tasks, len(x)))
        if self.uses_format and self.formats_seen:
            parts.append(_onehot(formats, FORMATS, len(x)))
        return parts[0] if len(parts) == 1 else np.hstack(parts)


def _onehot(values: Sequence[str | None] | None, vocabulary: Sequence[str], n: int) -> np.ndarray:
    """(n, len(vocabulary)) one-hot of ``values`` (zeros for a value outside it, or none given)."""
    out = np.zeros((n, len(vocabulary)), dtype=np.float32)
    if values is not None:
        position = {v: k for k, v in enumerate(vocabulary)}
        for i, v in enumerate(values):
            if v in position:
                out[i, position[v]] = 1.0
    return out


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

    def _fit(self, x: np.ndarray, y: np.ndarray, tasks: list[str], formats: Formats) -> None:
        import faiss

        x = normalise(x)
        self._index = faiss.IndexFlatIP(x.shape[1])
        self._index.add(x)
        self._y = y

    def _score(self, x: np.ndarray, tasks: Sequence[str] | None, formats: Formats) -> np.ndarray:
        assert self._y is not None
        k = min(self.k, len(self._y))
        _, neighbours = self._index.search(normalise(x), k)
        found = neighbours >= 0
        sums = np.einsum("nk,nke->ne", found.astype(np.float64), self._y[np.maximum(neighbours, 0)])
        counts = found.sum(axis=1, keepdims=True)
        return (sums + self.prior_weight * self._base(len(x), tasks)) / (counts + self.prior_weight)

    def _base(self, n: int, tasks: Sequence[str] | None) -> np.ndarray:
        """What the neighbours are shrunk toward: each expert's overall accuracy."""
        assert self.prior is not None
        return np.broadcast_to(self.prior[None, :], (n, len(self.prior)))


@routers.register_named
class TaskKnnRouter(KnnRouter):
    """``knn`` shrunk toward the question's task: each expert's accuracy on the question's task
    in training (itself shrunk toward its overall accuracy by ``task_prior`` questions) stands
    for ``prior`` pseudo-neighbours, so the task's best expert answers unless the k nearest
    questions say clearly otherwise (a task unseen in training: overall accuracy)."""

    name = "knn-task"
    uses_task = True

    def __init__(self, seed: int = 0, k: int = 20, prior: float = 20.0, task_prior: float = 5.0) -> None:
        super().__init__(seed, k=k, prior=prior)
        self.task_prior = task_prior
        self._by_task: dict[str, np.ndarray] = {}

    def _fit(self, x: np.ndarray, y: np.ndarray, tasks: list[str], formats: Formats) -> None:
        super()._fit(x, y, tasks, formats)
        assert self.prior is not None
        names = np.array(tasks)
        for t in dict.fromkeys(tasks):
            rows = y[names == t]
            self._by_task[t] = (rows.sum(axis=0) + self.task_prior * self.prior) / (len(rows) + self.task_prior)

    def _base(self, n: int, tasks: Sequence[str] | None) -> np.ndarray:
        """Each expert's accuracy on the question's task (overall for a task unseen in training)."""
        assert self.prior is not None
        return np.stack([self._by_task.get(t, self.prior) for t in (tasks or [""] * n)])


def _constant_or_none(column: np.ndarray) -> float | None:
    return float(column[0]) if np.all(column == column[0]) else None


@routers.register_named
class LogisticRouter(LearnedRouter):
    name = "logreg"

    def __init__(self, seed: int = 0, c: float = 1.0, task_feature: bool = True,
                 format_feature: bool = True) -> None:
        super().__init__(seed)
        self.c, self.uses_task, self.uses_format = c, task_feature, format_feature
        self._models: list[Any] = []  # a LogisticRegression per expert, or its constant outcome

    def _fit(self, x: np.ndarray, y: np.ndarray, tasks: list[str], formats: Formats) -> None:
        from sklearn.linear_model import LogisticRegression  # scikit-learn loads only when fitted

        features = self._features(x, tasks, formats)
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

    def _score(self, x: np.ndarray, tasks: Sequence[str] | None, formats: Formats) -> np.ndarray:
        features = self._features(x, tasks, formats)
        columns = [np.full(len(x), m) if isinstance(m, float) else m.predict_proba(features)[:, 1]
                   for m in self._models]
        return np.stack(columns, axis=1)


@routers.register_named
class MlpRouter(LearnedRouter):
    name = "mlp"

    def __init__(self, seed: int = 0, hidden: int = 128, alpha: float = 1e-3, max_iter: int = 200,
                 task_feature: bool = True, format_feature: bool = True) -> None:
        super().__init__(seed)
        self.hidden, self.alpha, self.max_iter = hidden, alpha, max_iter
        self.uses_task, self.uses_format = task_feature, format_feature
        self._model: Any = None  # an MLPClassifier
        self._constant: dict[int, float] = {}

    def _fit(self, x: np.ndarray, y: np.ndarray, tasks: list[str], formats: Formats) -> None:
        from sklearn.exceptions import ConvergenceWarning  # scikit-learn loads only when fitted
        from sklearn.neural_network import MLPClassifier

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
        with warnings.catch_warnings():  # a small profile stops at max_iter: the fit is still the best found
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(self._features(x, tasks, formats), target if target.shape[1] > 1 else target[:, 0])
        self._model = model

    def _score(self, x: np.ndarray, tasks: Sequence[str] | None, formats: Formats) -> np.ndarray:
        out = np.zeros((len(x), len(self.experts)))
        for j, value in self._constant.items():
            out[:, j] = value
        if self._model is not None:
            proba = self._model.predict_proba(self._features(x, tasks, formats))
            if len(self._varying) == 1:
                proba = proba[:, 1:2]
            out[:, self._varying] = proba
        return out


@routers.register_named
class MfRouter(LearnedRouter):
    """RouteLLM's matrix factorisation, for any number of experts: a projection ``W`` of the
    question's features and one vector ``u_e`` (and bias) per expert; logistic loss on
    ``correct``, L2 penalty ``l2``, full-batch Adam in float32. 150 steps at ``lr`` 0.02 replay as
    300 at 0.01 did (10,000 synthetic questions, 5 folds: 80.3% against 80.2%; the default pool's
    168 test questions: 35.7% against 35.1%) at half the fit's cost, its two products a step being
    most of a replay's fitting (bench/results/replay/README.md, session 18)."""

    name = "mf"

    def __init__(self, seed: int = 0, dims: int = 32, steps: int = 150, lr: float = 0.02, l2: float = 1e-4,
                 task_feature: bool = True, format_feature: bool = True) -> None:
        super().__init__(seed)
        self.dims, self.steps, self.lr, self.l2 = dims, steps, lr, l2
        self.uses_task, self.uses_format = task_feature, format_feature
        self._w: np.ndarray | None = None
        self._u: np.ndarray | None = None
        self._b: np.ndarray | None = None

    def _fit(self, x: np.ndarray, y: np.ndarray, tasks: list[str], formats: Formats) -> None:
        f = self._features(x, tasks, formats).astype(np.float32)  # float32: half the memory traffic of float64
        y = y.astype(np.float32)
        rng = np.random.default_rng(self.seed)
        n, d = f.shape
        e = y.shape[1]
        prior = np.clip(y.mean(axis=0), 1e-3, 1 - 1e-3)
        params = {"w": rng.normal(0, 1 / np.sqrt(d), (d, self.dims)), "u": rng.normal(0, 0.1, (e, self.dims)),
                  "b": np.log(prior / (1 - prior))}
        params = {k: v.astype(np.float32) for k, v in params.items()}
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

    def _score(self, x: np.ndarray, tasks: Sequence[str] | None, formats: Formats) -> np.ndarray:
        assert self._w is not None and self._u is not None and self._b is not None
        logits = (self._features(x, tasks, formats).astype(np.float32) @ self._w) @ self._u.T + self._b
        return 1.0 / (1.0 + np.exp(-logits))


