"""Cluster routing (Avengers-style): experts scored per group of similar validation questions.

The profile's validation questions are embedded (the shipped MiniLM) and split by k-means
(cosine, k-means++ seeding under a seed, so the same profile always gives the same
clusters). On each cluster every expert gets a score: its accuracy there, shrunk towards
its accuracy over all clusters (``prior`` pseudo-questions), so a cluster of three questions
does not outvote the whole profile; ties go to the expert that generated fewer tokens. A
query is embedded once and goes to its nearest centroid's top experts: no LLM call, one
matrix product. The ``clusters`` method (``orchestrator.methods``) turns that into slots.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel

from orchestrator.config import ClusterConfig
from orchestrator.profiles import ProfiledExample


class ClusterScore(BaseModel):
    """One cluster: its size and each expert's shrunk accuracy and mean tokens on it."""

    cluster: int
    size: int
    accuracy: dict[str, float]
    tokens: dict[str, float]

    def ranking(self, experts: list[str]) -> list[str]:
        """These experts, best first (higher accuracy, then fewer tokens, then name)."""
        return sorted(experts, key=lambda e: (-self.accuracy.get(e, 0.0), self.tokens.get(e, 0.0), e))


def kmeans(vectors: np.ndarray, count: int, seed: int, iterations: int = 25) -> np.ndarray:
    """Centroids (count, dims), unit length, of normalised ``vectors`` (spherical k-means)."""
    rng = np.random.default_rng(seed)
    n = len(vectors)
    count = max(1, min(count, n))
    chosen = [int(rng.integers(n))]
    for _ in range(1, count):  # k-means++: far points are likelier next centres
        distance = np.min(1.0 - vectors @ vectors[chosen].T, axis=1).clip(min=0.0)
        total = float(distance.sum())
        chosen.append(int(rng.choice(n, p=distance / total)) if total > 0 else int(rng.integers(n)))
    centroids = vectors[chosen].copy()
    for _ in range(iterations):
        labels = np.argmax(vectors @ centroids.T, axis=1)
        moved = centroids.copy()
        for c in range(count):
            members = vectors[labels == c]
            if len(members):
                mean = members.sum(axis=0)
                moved[c] = mean / (np.linalg.norm(mean) or 1.0)
        if np.allclose(moved, centroids):
            break
        centroids = moved
    return centroids


class ClusterRouter:
    """Centroids of the profile's questions and each expert's score on each cluster."""

    def __init__(self, examples: list[ProfiledExample], vectors: np.ndarray, config: ClusterConfig,
                 seed: int = 0) -> None:
        keep = [i for i, e in enumerate(examples) if e.correct]
        graded = [examples[i] for i in keep]
        vectors = np.asarray(vectors, dtype=np.float32)[keep]
        if not graded:
            self.centroids = np.zeros((0, vectors.shape[1] if vectors.ndim == 2 else 0), dtype=np.float32)
            self.scores: list[ClusterScore] = []
            return
        self.centroids = kmeans(vectors, config.count, seed, config.iterations)
        labels = np.argmax(vectors @ self.centroids.T, axis=1)
        experts = sorted({e for x in graded for e in x.correct})
        overall = {e: _mean([x.correct[e] for x in graded if e in x.correct]) for e in experts}
        self.scores = []
        for c in range(len(self.centroids)):
            members = [x for x, label in zip(graded, labels, strict=True) if label == c]
            accuracy, tokens = {}, {}
            for e in experts:
                right = [x.correct[e] for x in members if e in x.correct]
                accuracy[e] = round((sum(right) + config.prior * overall[e]) / (len(right) + config.prior or 1), 4)
                tokens[e] = round(_mean([x.tokens.get(e, 0) for x in members if e in x.correct]), 1)
            self.scores.append(ClusterScore(cluster=c, size=len(members), accuracy=accuracy, tokens=tokens))

    @property
    def ready(self) -> bool:
        return bool(self.scores)

    def nearest(self, vectors: np.ndarray) -> list[ClusterScore]:
        """Each query's nearest cluster (``vectors``: normalised query embeddings)."""
        return [self.scores[int(i)] for i in np.argmax(np.asarray(vectors) @ self.centroids.T, axis=1)]


def _mean(values: list[float] | list[bool] | list[int]) -> float:
    return float(sum(values)) / len(values) if values else 0.0
