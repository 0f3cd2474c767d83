"""The settings of skill annotation (a section of symoe's config: ``skills:``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class SkillsConfig(BaseModel):
    """How the annotator LLM names a query's skills, and how keywords map onto the vocabulary."""

    model_config = ConfigDict(extra="forbid")

    annotator: str | None = None  # the expert that names skills; default: default_expert
    samples: int = Field(5, ge=1, le=32, description="annotation samples per query (self-consistency)")
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    min_votes: int = Field(2, ge=1)
    max_keyword_chars: int = Field(30, ge=1)
    match_threshold: float = Field(0.5, ge=-1.0, le=1.0)
