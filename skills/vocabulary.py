"""The canonical skill vocabulary and the nearest-neighbour map from keywords onto it.

Keywords and the vocabulary's phrases are embedded with sentence-transformers (the offline
all-MiniLM-L6-v2); a keyword maps to the skill of its nearest phrase when the cosine
similarity clears a threshold, and is kept as an unknown skill otherwise.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import yaml
from pydantic import BaseModel

from agents.embedder import EmbeddingConfig, encode


class SkillMatch(BaseModel):
    keyword: str
    skill: str | None
    similarity: float


def load_vocabulary(path: Path | None = None) -> dict[str, list[str]]:
    text = path.read_text() if path else resources.files("skills").joinpath("vocabulary.yaml").read_text()
    data = yaml.safe_load(text)
    return {str(skill): [str(p) for p in phrases] for skill, phrases in data.items()}


class SkillMatcher:
    """Maps free keywords onto canonical skills by cosine similarity."""

    def __init__(self, embedding: EmbeddingConfig, threshold: float = 0.45,
                 vocabulary: dict[str, list[str]] | None = None) -> None:
        self.vocabulary = vocabulary or load_vocabulary()
        self.embedding = embedding
        self.threshold = threshold
        self._labels = [skill for skill, phrases in self.vocabulary.items() for _ in phrases]
        phrases = [phrase for phrases in self.vocabulary.values() for phrase in phrases]
        self._matrix = encode(phrases, embedding)
        self._memo: dict[str, SkillMatch] = {}

    @property
    def skills(self) -> list[str]:
        return list(self.vocabulary)

    def match(self, keywords: list[str]) -> list[SkillMatch]:
        todo = [k for k in dict.fromkeys(keywords) if k not in self._memo]
        if todo:
            sims = encode(todo, self.embedding) @ self._matrix.T
            for keyword, row in zip(todo, sims, strict=True):
                best = int(np.argmax(row))
                score = float(row[best])
                skill = self._labels[best] if score >= self.threshold else None
                self._memo[keyword] = SkillMatch(keyword=keyword, skill=skill, similarity=round(score, 4))
        return [self._memo[k] for k in keywords]

    def label(self, vectors: np.ndarray, top: int = 2, floor: float = 0.15) -> list[list[str]]:
        """Skills for questions without an LLM: each question's embedding against every
        vocabulary phrase; a skill scores its best phrase, and the ``top`` skills scoring at
        least ``floor`` (cosine) are the question's, best first."""
        if not len(vectors):
            return []
        sims = np.asarray(vectors, dtype=np.float32) @ self._matrix.T
        names = list(self.vocabulary)
        column = {skill: [i for i, label in enumerate(self._labels) if label == skill] for skill in names}
        per_skill = np.stack([sims[:, column[skill]].max(axis=1) for skill in names], axis=1)
        out = []
        for row in per_skill:
            order = np.argsort(-row, kind="stable")[:top]
            out.append([names[i] for i in order if row[i] >= floor])
        return out

    def canonical(self, keywords: list[str]) -> tuple[list[str], list[str]]:
        """(canonical skills in order, deduplicated; unknown keywords)."""
        skills: list[str] = []
        unknown: list[str] = []
        for m in self.match(keywords):
            if m.skill is None:
                unknown.append(m.keyword)
            elif m.skill not in skills:
                skills.append(m.skill)
        return skills, unknown
