"""Skill profiles of generators, learned from critic scores (the router's idea, per event type).

For each generator and event type the profile keeps how many attempts were scored, how many
passed every critic, and the mean total score. A domain expert ranks its candidates by the
mean shrunk towards the generator's ``prior``, so an unseen generator is tried in prior
order and experience overrides the prior after a few events. Profiles persist as JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

PRIOR_WEIGHT = 2.0


class GeneratorStat(BaseModel):
    n: int = 0
    passed: int = 0
    mean: float = 0.0

    def add(self, score: float, passed: bool) -> None:
        self.n += 1
        self.passed += int(passed)
        self.mean += (score - self.mean) / self.n


class GeneratorProfiles(BaseModel):
    """``stats[generator][event_type]``; ``path`` is where ``save`` writes (None: in memory)."""

    stats: dict[str, dict[str, GeneratorStat]] = Field(default_factory=dict)
    path: Path | None = Field(None, exclude=True)

    @classmethod
    def load(cls, path: Path | None) -> GeneratorProfiles:
        """Read ``path``; a missing or unreadable file gives empty profiles (they are re-learned)."""
        if path is not None and path.exists():
            try:
                prof = cls.model_validate(json.loads(path.read_text()))
            except (OSError, ValueError, ValidationError):
                prof = cls()
        else:
            prof = cls()
        prof.path = path
        return prof

    def stat(self, generator: str, event_type: str) -> GeneratorStat:
        return self.stats.setdefault(generator, {}).setdefault(event_type, GeneratorStat())

    def strength(self, generator: str, event_type: str, prior: float) -> float:
        s = self.stats.get(generator, {}).get(event_type)
        if s is None or s.n == 0:
            return prior
        return (s.n * s.mean + PRIOR_WEIGHT * prior) / (s.n + PRIOR_WEIGHT)

    def rank(self, candidates: dict[str, float], event_type: str) -> list[tuple[str, float]]:
        """Candidates (name -> prior) best first; ties keep the name order (deterministic)."""
        scored = [(name, self.strength(name, event_type, prior)) for name, prior in candidates.items()]
        return sorted(scored, key=lambda kv: (-kv[1], kv[0]))

    def update(self, generator: str, event_type: str, score: float, passed: bool) -> None:
        self.stat(generator, event_type).add(score, passed)

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(self.model_dump_json(indent=2))
        tmp.replace(self.path)
