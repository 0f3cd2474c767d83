"""Typed records that flow one way through the query pipeline and out to JSON files."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class ExpertAnswer(BaseModel):
    """One expert's reply in a slot; ``sample`` > 0 marks an extra sampled slot of that expert."""

    expert: str
    sample: int = 0
    temperature: float = 0.0
    text: str
    answer: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    error: str | None = None


class Recruit(BaseModel):
    """Why an expert was recruited: its local (skill) and global scores and its weight."""

    expert: str
    weight: float
    local: float = 0.0
    global_strength: float = 0.0
    slots: int = 1


class StepUsage(BaseModel):
    step: str
    seconds: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0


class RetrievalDecision(BaseModel):
    mode: Literal["auto", "always", "never"]
    retrieved: bool
    reason: str
    score: float | None = None
    passages: list[dict[str, Any]] = Field(default_factory=list)


class AskResult(BaseModel):
    """The answer to one query and everything that explains it."""

    question: str
    answer: str
    text: str
    routed: bool
    skills: list[str] = Field(default_factory=list)
    unknown_skills: list[str] = Field(default_factory=list)
    recruited: list[Recruit] = Field(default_factory=list)
    expert_answers: list[ExpertAnswer] = Field(default_factory=list)
    aggregator: str | None = None
    aggregated: bool = False
    retrieval: RetrievalDecision | None = None
    profile: str | None = None
    steps: list[StepUsage] = Field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    provenance: dict[str, Any] = Field(default_factory=dict)

    @property
    def experts(self) -> list[str]:
        """Distinct recruited experts."""
        return [r.expert for r in self.recruited]
