"""Typed records of the team framework: timed events, plans, generator outputs, critic scores,
attempts, review issues and the trace that records every decision.

Everything a team decides or measures is one of these pydantic records, so a run can be
written to JSON and read back (``TeamResult.model_dump_json``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator


class Event(BaseModel):
    """One timed piece of output the generation team must produce (a speech line, a cue...)."""

    id: str
    type: str
    start: float
    duration: float
    text: str = Field("", description="the script: words to speak, or the generator's input")
    description: str = Field("", description="what it should sound like")
    loudness: float = Field(-20.0, description="target integrated loudness, LUFS")
    params: dict[str, Any] = Field(default_factory=dict, description="generator knobs set by rewrites")
    locked: bool = Field(False, description="times fixed by the brief or the video: never moved")
    scene: int | None = None

    @property
    def end(self) -> float:
        return self.start + self.duration

    @property
    def prompt(self) -> str:
        return self.text or self.description


class Plan(BaseModel):
    """The planner's timeline: events inside ``[0, duration]``, with what was repaired."""

    title: str = ""
    duration: float
    events: list[Event]
    cuts: list[float] = Field(default_factory=list, description="scene cuts (seconds), e.g. from a video")
    repairs: list[str] = Field(default_factory=list)
    source: Literal["storyboard", "llm", "mixed", "python"] = "python"

    def event(self, event_id: str) -> Event:
        for e in self.events:
            if e.id == event_id:
                return e
        raise KeyError(event_id)


class Artifact(BaseModel):
    """A generator's output on disk, with what it measured while making it."""

    path: Path
    generator: str
    duration: float
    sample_rate: int
    meta: dict[str, Any] = Field(default_factory=dict)


class Score(BaseModel):
    """A critic's judgement of one artifact: a score in [0, 1], what it measured, what to change."""

    critic: str
    score: float
    measured: dict[str, Any] = Field(default_factory=dict)
    suggestion: str | None = None
    hint: dict[str, Any] = Field(default_factory=dict, description="machine-readable fix for the rewriter")

    @field_validator("score")
    @classmethod
    def _clip(cls, v: float) -> float:
        return round(min(1.0, max(0.0, float(v))), 4)


class Attempt(BaseModel):
    """One try of one generator on one event (the event as it was for that try)."""

    event: Event
    generator: str
    round: int
    try_index: int
    artifact: Artifact | None = None
    scores: list[Score] = Field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    @property
    def total(self) -> float:
        return sum(s.score for s in self.scores) / len(self.scores) if self.scores else 0.0

    def passed(self, threshold: float) -> bool:
        return self.error is None and bool(self.scores) and all(s.score >= threshold for s in self.scores)

    def failing(self, threshold: float) -> list[Score]:
        return [s for s in self.scores if s.score < threshold]


class EventResult(BaseModel):
    """Every attempt on one event and the chosen one (best total score)."""

    event_id: str
    attempts: list[Attempt] = Field(default_factory=list)
    chosen: int | None = Field(None, description="index into attempts")

    @property
    def best(self) -> Attempt | None:
        return self.attempts[self.chosen] if self.chosen is not None else None


class Issue(BaseModel):
    """A supervisor finding. ``event_id`` None means the whole plan or output."""

    critic: str
    message: str
    event_id: str | None = None
    severity: Literal["error", "warning"] = "error"
    hint: dict[str, Any] = Field(default_factory=dict)


class TraceEntry(BaseModel):
    t: float
    stage: str
    agent: str
    message: str
    event_id: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class Trace(BaseModel):
    """The ordered record of a run: every plan repair, choice, try, score, review and rewrite."""

    entries: list[TraceEntry] = Field(default_factory=list)
    started: float = Field(default_factory=time.time)

    def add(self, stage: str, agent: str, message: str, event_id: str | None = None, **data: Any) -> None:
        self.entries.append(TraceEntry(t=round(time.time() - self.started, 3), stage=stage, agent=agent,
                                       message=message, event_id=event_id, data=data))

    def of(self, stage: str) -> list[TraceEntry]:
        return [e for e in self.entries if e.stage == stage]


class TeamResult(BaseModel):
    """What ``Team.run`` returns: the final plan, each event's attempts, reviews, outputs, trace."""

    plan: Plan
    results: dict[str, EventResult]
    reviews: list[list[Issue]] = Field(default_factory=list)
    outputs: dict[str, Any] = Field(default_factory=dict)
    trace: Trace
    seconds: float = 0.0

    def regenerated(self, threshold: float = 0.7) -> list[str]:
        """Events where some attempt failed a critic and a later attempt was made."""
        return [eid for eid, r in self.results.items()
                if len(r.attempts) > 1 and any(not a.passed(threshold) for a in r.attempts[:-1])]
