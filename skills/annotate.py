"""Skill annotation: an annotator LLM names 2-5 keywords, sampled n times, kept by vote.

Each sample's keywords are normalised (lowercased, punctuation stripped, overlong dropped)
and mapped onto the canonical vocabulary; a canonical skill is kept when at least
``min_votes`` samples name it (self-consistency, as in Symbolic-MoE, but voted after mapping
so that "multiplication" and "arithmetic" count as the same skill). Unknown keywords are
voted the same way and reported.

This module builds the annotator's requests and reads its replies; it runs nothing. The
query pipeline executes the requests with every other job (grouped, cached, batched).
"""

from __future__ import annotations

import re
from collections import Counter

from pydantic import BaseModel, Field

from agents.backends import GenerationRequest
from skills.config import SkillsConfig
from skills.vocabulary import SkillMatcher

ANNOTATOR_SYSTEM = (
    "You label questions with the skills needed to answer them. Reply with one line only, "
    "in the form 'Keywords: <keyword1>, <keyword2>, ...' naming 2 to 5 short skill keywords "
    "(subjects or abilities, such as 'algebra', 'organic chemistry', 'us history'). "
    "Do not answer the question."
)


class SkillAnnotation(BaseModel):
    question: str
    skills: list[str] = Field(default_factory=list)
    unknown: list[str] = Field(default_factory=list)
    votes: dict[str, int] = Field(default_factory=dict)
    samples: list[list[str]] = Field(default_factory=list)
    annotator: str = ""
    source: str = Field(default="llm",
                        description="llm (the annotator's samples), neighbours, or given (by the caller)")
    nearest: float | None = Field(default=None, description="neighbours: similarity of the nearest labelled question")


def parse_keywords(text: str, max_chars: int = 30) -> list[str]:
    """Keywords from 'Keywords: a, b, c' (or a bare comma list), normalised."""
    match = re.search(r"keywords?\s*[:\-]\s*(.+)", text, flags=re.IGNORECASE)
    body = match.group(1) if match else text.strip().splitlines()[0] if text.strip() else ""
    body = body.splitlines()[0] if body else ""
    out: list[str] = []
    for raw in re.split(r"[,;|]", body):
        word = re.sub(r"[^\w\s\-+&]", "", raw).strip().lower()
        word = re.sub(r"\s+", " ", word)
        if word and len(word) <= max_chars and word not in out:
            out.append(word)
    return out[:5]


def annotation_requests(question: str, config: SkillsConfig, seed: int) -> list[GenerationRequest]:
    return [
        GenerationRequest.user(
            f"Question: {question.strip()}\n\nWhich skills does answering this question need?",
            system=ANNOTATOR_SYSTEM, max_tokens=40, temperature=config.temperature,
            seed=seed + i, stop=["\n"],
        )
        for i in range(config.samples)
    ]


def vote(samples: list[list[str]], matcher: SkillMatcher,
         min_votes: int) -> tuple[list[str], list[str], dict[str, int]]:
    """Canonical skills and unknown keywords named in at least ``min_votes`` samples."""
    skill_votes: Counter[str] = Counter()
    unknown_votes: Counter[str] = Counter()
    for keywords in samples:
        skills, unknown = matcher.canonical(keywords)
        skill_votes.update(list(dict.fromkeys(skills)))  # ordered: ties keep first-named order
        unknown_votes.update(list(dict.fromkeys(unknown)))
    need = min(min_votes, max(1, len(samples)))
    skills = [s for s, n in skill_votes.most_common() if n >= need]  # stable sort: deterministic
    unknown = [k for k, n in unknown_votes.most_common() if n >= need]
    return skills, unknown, dict(skill_votes)


def annotation_from(question: str, replies: list[str | None], matcher: SkillMatcher, config: SkillsConfig,
                    annotator: str) -> SkillAnnotation:
    """The voted annotation of one question from its annotator replies (None: a failed sample)."""
    samples = [parse_keywords(r, config.max_keyword_chars) for r in replies if r is not None]
    skills, unknown, votes = vote(samples, matcher, config.min_votes)
    return SkillAnnotation(question=question, skills=skills, unknown=unknown, votes=votes,
                           samples=samples, annotator=annotator)
