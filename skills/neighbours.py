"""Skills from neighbours: a query's skills voted by its nearest labelled questions, no LLM call.

The profile's validation questions were annotated by the LLM when the profile was built;
``NeighbourSkills`` embeds them once (the shipped MiniLM), and for a query takes its ``k``
nearest by cosine similarity (exact inner product over normalised vectors: the same ranking
as a flat faiss index, without one for a few hundred rows). Each neighbour votes for its
skills with its similarity as weight; a skill is kept when it holds at least ``share`` of
the weight. One embedding and one matrix product per batch of queries.

``confident`` says whether the vote can stand alone (``skills.source: hybrid`` sends the
others to the LLM annotator): the nearest neighbour is close enough and the top skill holds
enough of the weight.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from pydantic import BaseModel, Field

from agents.embedder import EmbeddingConfig, encode


class LabelledQuestion(BaseModel):
    """A validation question and the skills the LLM annotator gave it."""

    question: str
    skills: list[str] = Field(default_factory=list)
    task: str = ""


class NeighbourVote(BaseModel):
    """The skills a query's neighbours voted for, and how sure the vote is."""

    skills: list[str]
    shares: dict[str, float] = Field(default_factory=dict, description="each kept skill's share of the weight")
    nearest: float = Field(description="cosine similarity of the nearest labelled question")
    agreement: float = Field(description="share of the weight behind the top skill (0 when none)")
    neighbours: list[int] = Field(default_factory=list, description="indices of the neighbours, nearest first")


class NeighbourSkills:
    """Votes a query's skills from its nearest labelled questions."""

    def __init__(self, examples: Sequence[LabelledQuestion], embedding: EmbeddingConfig, k: int = 8,
                 share: float = 0.4, embed: Callable[[list[str]], np.ndarray] | None = None) -> None:
        """``embed`` turns texts into normalised vectors (default: ``encode`` with ``embedding``)."""
        self.examples = [e for e in examples if e.skills]
        self.embedding = embedding
        self.embed = embed or (lambda texts: encode(texts, embedding))
        self.k = max(1, min(k, len(self.examples)))
        self.share = share
        self.vectors = self.embed([e.question for e in self.examples])

    def vote(self, questions: list[str], exclude: list[int | None] | None = None) -> list[NeighbourVote]:
        """One vote per question; ``exclude[i]`` leaves one example out (leave-one-out checks)."""
        if not self.examples:
            return [NeighbourVote(skills=[], nearest=0.0, agreement=0.0) for _ in questions]
        similarity = self.embed(questions) @ self.vectors.T
        out = []
        for row, sims in enumerate(similarity):
            if exclude and exclude[row] is not None:
                sims = sims.copy()
                sims[exclude[row]] = -np.inf
            order = [int(i) for i in nearest(sims, self.k)]
            weights: dict[str, float] = {}
            total = 0.0
            for i in order:
                w = max(float(sims[i]), 0.0)
                total += w
                for skill in dict.fromkeys(self.examples[i].skills):
                    weights[skill] = weights.get(skill, 0.0) + w
            shares = {s: w / total for s, w in weights.items()} if total > 0 else {}
            ranked = sorted(shares, key=lambda s: -shares[s])  # stable: ties keep first-voted order
            kept = [s for s in ranked if shares[s] >= self.share]
            out.append(NeighbourVote(skills=kept, shares={s: round(shares[s], 3) for s in kept},
                                     nearest=round(float(sims[order[0]]), 4),
                                     agreement=round(shares[ranked[0]], 3) if ranked else 0.0, neighbours=order))
        return out


def nearest(sims: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` largest similarities' positions, largest first, ties to the lower position: the
    first ``k`` of a stable descending sort, found by a partition (linear) instead of sorting all."""
    if k >= len(sims):
        return np.argsort(-sims, kind="stable")
    kth = sims[np.argpartition(-sims, k - 1)[:k]].min()
    above = np.flatnonzero(sims > kth)
    chosen = np.concatenate([above, np.flatnonzero(sims == kth)[: k - len(above)]])
    return chosen[np.argsort(-sims[chosen], kind="stable")]


def confident(vote: NeighbourVote, min_similarity: float, min_agreement: float) -> bool:
    """The vote stands alone: a close neighbour, and neighbours that agree on the top skill."""
    return bool(vote.skills) and vote.nearest >= min_similarity and vote.agreement >= min_agreement
