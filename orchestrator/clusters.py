"""Cluster routing (Avengers-style): experts scored per group of similar validation questions.

The profile's validation questions are embedded (the shipped MiniLM) and split by k-means
(faiss's spherical k-means, so cosine, its starting centroids drawn under a seed, so the same
profile always gives the same clusters). On each cluster every expert gets a score: its
accuracy there, shrunk towards its accuracy over all clusters (``prior`` pseudo-questions),
so a cluster of three questions does not outvote the whole profile; ties go to the expert
that generated fewer tokens. A query is embedded once and goes to its nearest centroid's
top experts: no LLM call, one matrix product. The ``clusters`` method
(``orchestrator.methods``) turns that into slots.

For the cost/quality knob (the ``budget`` method) each cluster also scores its *options*:
every expert alone, and the vote of its top 3, 5, ... experts (up to ``teams``), each with
its shrunk accuracy there (a vote replayed on the experts' recorded answers, by the
pipeline's majority rule) and its mean cost (prompt + generated tokens, as ``symoe eval``
counts). ``ClusterScore.choose(quality)`` takes the option of highest
``quality * accuracy - (1 - quality) * tokens / cost_scale``: 0 is the cheapest, 1 the
most accurate whatever it costs. Where the profile recorded answer margins, each option also
comes *sure-first*: the cheapest expert whose letter margin was calibrated (``margin_threshold``)
answers alone, its answer standing when it is that sure, the option's experts answering
otherwise (a cascade, replayed on the recorded margins like the votes).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from agents.backends import Generation
from orchestrator.aggregate import accepted, majority
from orchestrator.config import ClusterConfig
from orchestrator.profiles import ProfiledExample, margin_threshold, recorded_margins
from orchestrator.records import ExpertAnswer

#: validation answers a sure-first threshold must rest on
MIN_SURE = 5


class RoutingOption(BaseModel):
    """One expert, or a vote of several, on one cluster: estimated accuracy and cost per
    question; with ``first``, that expert answers before them and its letter stands when its
    margin is at least ``accept_margin``."""

    experts: list[str]
    accuracy: float
    tokens: float = Field(description="mean prompt + generated tokens of all its experts")
    first: str | None = None
    accept_margin: float | None = None

    def sure(self, example: ProfiledExample, memo: ReplayMemo | None = None) -> bool:
        """Whether the first expert's recorded answer would have stood here, by the live
        cascade's rule (``aggregate.accepted``: answered, and that sure of its letter)."""
        if self.first is None or self.accept_margin is None:
            return False
        if memo is None:
            return accepted([recorded_answer(example, self.first)], self.accept_margin)
        key = (id(example), self.first, self.accept_margin)
        found = memo.sure.get(key)
        if found is None:
            found = memo.sure[key] = accepted([recorded_answer(example, self.first, memo)], self.accept_margin)
        return found

    def replay(self, example: ProfiledExample, weights: dict[str, float],
               memo: ReplayMemo | None = None) -> tuple[int, bool]:
        """What this option cost on a graded example and whether it was right, from the
        experts' recorded answers (a first-round expert that the rest include is paid once);
        ``memo`` keeps what was read (answers, acceptances, votes) for the next option."""
        return self.replays([example], weights, memo)[0]

    def replays(self, examples: list[ProfiledExample], weights: dict[str, float],
                memo: ReplayMemo | None = None) -> list[tuple[int, bool]]:
        """``replay`` on each of the examples, in order."""
        first, experts = self.first, self.experts
        also_first = first if first is not None and first not in experts else None  # paid beside the vote
        out: list[tuple[int, bool]] = []
        for x in examples:
            if first is not None and self.sure(x, memo):
                out.append((x.cost(first), x.correct.get(first, False)))
                continue
            cost = sum([x.cost(e) for e in experts if e in x.correct])
            if also_first is not None:
                cost += x.cost(also_first)
            out.append((cost, vote_correct(x, experts, weights, memo)))
        return out


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
        those whose experts (its sure-first expert too) are all in ``experts`` (None: all); ties go
        to the cheaper one."""
        allowed = [o for o in self.options
                   if experts is None or set(o.experts) | ({o.first} if o.first else set()) <= set(experts)]
        if not allowed:
            return None
        scale = self.cost_scale or 1.0
        return max(allowed, key=lambda o: (round(quality * o.accuracy - (1 - quality) * o.tokens / scale, 9),
                                           -o.tokens, -len(o.experts)))


#: recorded answers already read, by (``id`` of the example, expert)
AnswerMemo = dict[tuple[int, str], ExpertAnswer]
#: a vote's winner (None: nobody) by its experts, their weights and the answers they stated
VoteMemo = dict[tuple[tuple[str, ...], tuple[float, ...], tuple[str | None, ...]], str | None]


class ReplayMemo:
    """What a cluster build reads of its graded examples again and again (for every option and
    cluster that replays them), each read once, by the same rules:

    * ``answers``: each recorded answer (``recorded_answer``), built once;
    * ``sure``: whether a first expert's answer stood on an example at a margin (``accepted``);
    * ``votes``: the winner of ``majority`` by the voters, their weights and the answers they
      stated: a recorded answer is always ``ok`` (its generation has no error) and its
      ``sample`` is 0, so these are all that ``majority`` reads of the records, and the same
      ones give the same winner (one vote of letters stands for every example with them).

    The examples must outlive the memo (it keys them by ``id``): a build keeps them all."""

    def __init__(self) -> None:
        self.answers: AnswerMemo = {}
        self.sure: dict[tuple[int, str, float], bool] = {}
        self.votes: VoteMemo = {}


def recorded_answer(example: ProfiledExample, expert: str, memo: ReplayMemo | None = None) -> ExpertAnswer:
    """An expert's answer to a graded example as the live rules read one: the answer it stated
    when profiled (None: none, or it failed) and its letter's margin (kept in ``memo``, when
    given, for the next reading; the rules never change an answer record)."""
    if memo is not None:
        found = memo.answers.get((id(example), expert))
        if found is None:
            found = memo.answers[id(example), expert] = recorded_answer(example, expert)
        return found
    return ExpertAnswer(expert=expert, generation=Generation(text=example.answers.get(expert) or "", model=expert),
                        answer=example.answers.get(expert), margin=example.margins.get(expert))


def vote_correct(example: ProfiledExample, experts: list[str], weights: dict[str, float],
                 memo: ReplayMemo | None = None) -> bool:
    """Whether these experts' vote on a graded example was right: the pipeline's own majority
    rule (``aggregate.majority``) on their recorded answers (its winner kept in ``memo`` for
    the same voters, weights and answers)."""
    voters = [e for e in experts if e in example.correct]
    if memo is None:
        best = majority([recorded_answer(example, e) for e in voters], weights)
        return best is not None and example.correct[best.expert]
    stated = example.answers
    key = (tuple(voters), tuple([weights.get(e, 0.0) for e in voters]), tuple([stated.get(e) for e in voters]))
    if key in memo.votes:
        winner = memo.votes[key]
    else:
        best = majority([recorded_answer(example, e, memo) for e in voters], weights)
        winner = memo.votes[key] = best.expert if best is not None else None
    return winner is not None and example.correct[winner]


def kmeans(vectors: np.ndarray, count: int, seed: int, iterations: int = 25) -> np.ndarray:
    """Centroids (count, dims), unit length, float32, of normalised ``vectors``: faiss's spherical
    k-means (``faiss.Kmeans``, ``spherical=True``) under ``seed``, on every vector (no subsampling).
    ``count`` is cut to the number of distinct vectors (at least 1): faiss needs as many points
    as centroids, and identical points would only give it copies of one centroid to split."""
    import faiss

    points = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dims = points.shape
    count = max(1, min(count, len(np.unique(points, axis=0))))
    # min_points_per_centroid=1: no warning for fewer than 39 points a centroid (a profile has
    # a few hundred questions); max_points_per_centroid=n: faiss samples none of them away
    means = faiss.Kmeans(dims, count, niter=iterations, seed=seed, spherical=True, verbose=False,
                         min_points_per_centroid=1, max_points_per_centroid=n)
    means.train(points)
    return np.asarray(means.centroids, dtype=np.float32).copy()


class ClusterRouter:
    """Centroids of the profile's questions and each expert's score on each cluster."""

    def __init__(self, examples: list[ProfiledExample], vectors: np.ndarray, config: ClusterConfig,
                 seed: int = 0, teams: int = 1, sure_first: bool = False) -> None:
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
        first = _sure_first(graded, experts, overall) if sure_first else None
        replays: dict[tuple[Any, ...], dict[int, tuple[int, bool]]] = {}  # an option's replay, shared by clusters
        memo = ReplayMemo()  # each recorded answer, acceptance and vote read once, for every option
        self.scores = []
        for c in range(len(self.centroids)):
            members = [x for x, label in zip(graded, labels, strict=True) if label == c]
            accuracy, tokens = {}, {}
            for e in experts:
                right = [x.correct[e] for x in members if e in x.correct]
                accuracy[e] = _shrunk(right, overall[e], config.prior)
                tokens[e] = round(_mean([x.tokens.get(e, 0) for x in members if e in x.correct]), 1)
            score = ClusterScore(cluster=c, size=len(members), accuracy=accuracy, tokens=tokens)
            score.options = _options(score, members, graded, experts, teams, config.prior, first, replays, memo)
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


def _sure_first(graded: list[ProfiledExample], experts: list[str],
                overall: dict[str, float]) -> tuple[str, float] | None:
    """The cheapest expert whose letters can stand on their margin, and its threshold: the
    lowest margin at which its recorded answers were right at least as often as the best
    expert overall (over at least ``MIN_SURE`` of them). None when none qualifies."""
    bar = max(overall.values(), default=0.0)
    cost = {e: _mean([x.cost(e) for x in graded if e in x.correct]) for e in experts}
    for e in sorted(experts, key=lambda e: (cost[e], e)):
        found = margin_threshold(recorded_margins(graded, e), bar, MIN_SURE)
        if found is not None:
            return e, found[0]
    return None


def _options(score: ClusterScore, members: list[ProfiledExample], graded: list[ProfiledExample],
             experts: list[str], teams: int, prior: float, first: tuple[str, float] | None,
             replays: dict[tuple[Any, ...], dict[int, tuple[int, bool]]],
             memo: ReplayMemo | None = None) -> list[RoutingOption]:
    """Each expert alone, then the vote of the cluster's top 3, 5, ... (while ``teams`` allows
    and the examples recorded answers to replay); with ``first``, each of them sure-first too."""
    options = [RoutingOption(experts=[e], accuracy=score.accuracy[e],
                             tokens=round(_mean([x.cost(e) for x in members if e in x.correct]), 1))
               for e in experts]
    ranked = score.ranking(experts)
    if not any(x.answers for x in graded):
        return options
    for size in range(3, min(teams, len(ranked)) + 1, 2):
        options.append(_replayed(RoutingOption(experts=ranked[:size], accuracy=0.0, tokens=0.0), score,
                                 members, graded, prior, replays, memo))
    if first is not None:
        expert, threshold = first
        options += [_replayed(RoutingOption(experts=o.experts, accuracy=0.0, tokens=0.0, first=expert,
                                            accept_margin=threshold), score, members, graded, prior, replays,
                                  memo)
                    for o in list(options) if o.experts != [expert]]
    return options


def _replayed(option: RoutingOption, score: ClusterScore, members: list[ProfiledExample],
              graded: list[ProfiledExample], prior: float,
              replays: dict[tuple[Any, ...], dict[int, tuple[int, bool]]],
              memo: ReplayMemo | None = None) -> RoutingOption:
    """The option with its accuracy (on the cluster, shrunk towards all questions) and mean
    cost replayed on the recorded answers. A replay is kept in ``replays`` for the other
    clusters: one expert's does not depend on the cluster, a vote's depends on its weights."""
    weights = tuple((e, score.accuracy[e]) for e in option.experts) if len(option.experts) > 1 else ()
    key = (tuple(option.experts), option.first, option.accept_margin, weights)
    if key not in replays:
        # on every graded example (the cluster's members are among them)
        replays[key] = dict(zip(map(id, graded), option.replays(graded, score.accuracy, memo), strict=True))
    replayed = replays[key]
    overall = _mean([right for _, right in replayed.values()])
    on_members = [replayed[id(x)] for x in members]
    return option.model_copy(update={"accuracy": _shrunk([r for _, r in on_members], overall, prior),
                                     "tokens": round(_mean([c for c, _ in on_members]), 1)})


def _shrunk(right: list[bool], overall: float, prior: float) -> float:
    """Accuracy on a cluster, shrunk towards ``overall`` by ``prior`` pseudo-questions."""
    return round((sum(right) + prior * overall) / (len(right) + prior or 1), 4)


def _mean(values: list[float] | list[bool] | list[int]) -> float:
    return float(sum(values)) / len(values) if values else 0.0
