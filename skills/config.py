"""The settings of skill annotation (a section of symoe's config: ``skills:``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SkillSource = Literal["llm", "neighbours", "hybrid"]


class SkillsConfig(BaseModel):
    """Where a query's skills come from (``source``), how the annotator LLM names them, and how
    keywords map onto the vocabulary.

    ``source``: ``llm`` (the annotator's ``samples``, as Symbolic-MoE), ``neighbours`` (the
    nearest labelled validation questions of the profile vote, no LLM call), ``hybrid``
    (neighbours, and the LLM only where they are far or disagree)."""

    model_config = ConfigDict(extra="forbid")

    source: SkillSource = "llm"
    neighbours: int = Field(default=8, ge=1, le=64, description="labelled questions that vote")
    neighbour_share: float = Field(default=0.4, gt=0.0, le=1.0, description="weight share a skill needs")
    hybrid_min_similarity: float = Field(default=0.35, ge=-1.0, le=1.0,
                                         description="hybrid: the LLM annotates when the nearest is farther")
    hybrid_min_agreement: float = Field(default=0.6, ge=0.0, le=1.0,
                                        description="hybrid: the LLM annotates when the top skill holds less")

    annotator: str | None = None  # the expert that names skills; default: default_expert
    samples: int = Field(default=5, ge=1, le=32, description="annotation samples per query (self-consistency)")
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    min_votes: int = Field(default=2, ge=1, le=32, description="votes a skill needs (at most samples are counted)")
    max_keyword_chars: int = Field(default=30, ge=1, le=1000)
    match_threshold: float = Field(default=0.5, ge=-1.0, le=1.0)
