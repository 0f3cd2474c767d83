"""The settings of skill annotation (a section of symoe's config: ``skills:``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class SkillsConfig(BaseModel):
    """How the annotator LLM names a query's skills, and how keywords map onto the vocabulary."""

    model_config = ConfigDict(extra="forbid")

    annotator: str | None = None  # the expert that names skills; default: default_expert
    samples: int = Field(default=5, ge=1, le=32, description="annotation samples per query (self-consistency)")
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    min_votes: int = Field(default=2, ge=1, le=32, description="votes a skill needs (at most samples are counted)")
    max_keyword_chars: int = Field(default=30, ge=1, le=1000)
    match_threshold: float = Field(default=0.5, ge=-1.0, le=1.0)
