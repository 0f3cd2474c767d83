"""Cluster routing (Avengers-style): experts scored per group of similar validation questions.

The profile's validation questions are embedded (the shipped MiniLM) and split by k-means
(cosine, k-means++ seeding under a seed, so the same profile always gives the same
clusters). On each cluster every expert gets a score: its accuracy there, shrunk towards
its accuracy over all clusters (``prior`` pseudo-questions), so a cluster of three questions
does not outvote the whole profile; ties go to the expert that generated fewer tokens. A
query is embedded once and goes to its nearest centroid's top experts: no LLM call, one
matrix product. The ``clusters`` method (``orchestrator.methods``) turns that into slots.

For the cost/quality knob (the ``budget`` method) each cluster also scores its *options*:
every expert alone, and the vote of its top 3, 5, ... experts (up to ``teams``), each with
its shrunk accuracy there (a vote replayed on the experts' recorded answers, by the
pipeline's majority rule) and its mean cost (prompt + generated tokens, as ``symoe eval``
counts). ``ClusterScore.choose(quality)`` takes the option of highest
``quality * accuracy - (1 - quality) * tokens / cost_scale``: 0 is the cheapest, 1 the
most accurate whatever it costs.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from pydantic import BaseModel, Field

from orchestrator.config import ClusterConfig
from orchestrator.profiles import ProfiledExample


class RoutingOption(BaseModel):
    """One expert, or a vote of several, on one cluster: estimated accuracy and cost per question."""

    experts: list[str]
    accuracy: float
    tokens: float = Field(description="mean prompt + generated tokens of all its experts")


class ClusterScore(BaseModel):
    """One cluster: its size, each expert's shrunk accuracy and mean generated tokens on it,
    and the options the cost/quality knob chooses from."""

    cluster: int
    size: int
    accuracy: dict[str, float]
    tokens: dict[str, float]
    options: list[RoutingOption] = Field(default_factory=list)
    cost_scale: float = Field(default=1.0, description="the dearest option's mean cost over all clusters")

    def ranking(self, experts: list[str]) -> list[str]:
        """These experts, best first (higher accuracy, then fewer tokens, then name)."""
        return sorted(experts, key=lambda e: (-self.accuracy.get(e, 0.0), self.tokens.get(e, 0.0), e))

    def choose(self, quality: float, experts: list[str] | None = None) -> RoutingOption | None:
        """The option of best ``quality * accuracy - (1 - quality) * tokens / cost_scale`` among
        those whose experts are all in ``experts`` (None: all); ties go to the cheaper one."""
        allowed = [o for o in self.options if experts is None or set(o.experts) <= set(experts)]
        if not allowed:
            return None
        scale = self.cost_scale or 1.0
        return max(allowed, key=lambda o: (round(quality * o.accuracy - (1 - quality) * o.tokens / scale, 9),
                                           -o.tokens, -len(o.experts)))


def vote_correct(example: ProfiledExample, experts: list[str], weights: dict[str, float]) -> bool:
    """Whether these experts' vote on a graded example was right, by the pipeline's majority
    rule (the most common stated answer; ties to the heavier expert), replayed on their
    recorded answers."""
    graded = [e for e in experts if e in example.correct]
    stated = [e for e in graded if example.answers.get(e) is not None]
    if not stated:
        return bool(graded) and example.correct[max(graded, key=lambda e: weights.get(e, 0.0))]
    counts = Counter(example.answers[e] for e in stated)
    return example.correct[max(stated, key=lambda e: (counts[example.answers[e]], weights.get(e, 0.0)))]


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
                 seed: int = 0, teams: int = 1) -> None:
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
                accuracy[e] = _shrunk(right, overall[e], config.prior)
                tokens[e] = round(_mean([x.tokens.get(e, 0) for x in members if e in x.correct]), 1)
            score = ClusterScore(cluster=c, size=len(members), accuracy=accuracy, tokens=tokens)
            score.options = _options(score, members, graded, experts, teams, config.prior)
            self.scores.append(score)
        scale = max((o.tokens for s in self.scores for o in s.options), default=1.0)
        for s in self.scores:
            s.cost_scale = scale or 1.0

    @property
    def ready(self) -> bool:
        return bool(self.scores)

    def nearest(self, vectors: np.ndarray) -> list[ClusterScore]:
        """Each query's nearest cluster (``vectors``: normalised query embeddings)."""
        return [self.scores[int(i)] for i in np.argmax(np.asarray(vectors) @ self.centroids.T, axis=1)]


def _options(score: ClusterScore, members: list[ProfiledExample], graded: list[ProfiledExample],
             experts: list[str], teams: int, prior: float) -> list[RoutingOption]:
    """Each expert alone, then the vote of the cluster's top 3, 5, ... (while ``teams`` allows
    and the examples recorded answers to replay)."""
    options = [RoutingOption(experts=[e], accuracy=score.accuracy[e],
                             tokens=round(_mean([x.cost(e) for x in members if e in x.correct]), 1))
               for e in experts]
    ranked = score.ranking(experts)
    if not any(x.answers for x in graded):
        return options
    for size in range(3, min(teams, len(ranked)) + 1, 2):
        team = ranked[:size]
        overall = _mean([vote_correct(x, team, score.accuracy) for x in graded])
        right = [vote_correct(x, team, score.accuracy) for x in members]
        cost = _mean([sum(x.cost(e) for e in team if e in x.correct) for x in members])
        options.append(RoutingOption(experts=team, accuracy=_shrunk(right, overall, prior), tokens=round(cost, 1)))
    return options


def _shrunk(right: list[bool], overall: float, prior: float) -> float:
    """Accuracy on a cluster, shrunk towards ``overall`` by ``prior`` pseudo-questions."""
    return round((sum(right) + prior * overall) / (len(right) + prior or 1), 4)


def _mean(values: list[float] | list[bool] | list[int]) -> float:
    return float(sum(values)) / len(values) if values else 0.0
