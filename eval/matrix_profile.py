"""A profile from an outcome matrix: per-skill, per-task and per-cluster accuracy and cost of
every expert, from recorded outcomes, without generating.

    matrix rows (one split) -> skills (the row's own, else labelled without an LLM)
                            -> one ``Outcome`` per (question, expert) -> ``Profile``

Skills for thousands of questions cannot each cost an LLM call, so a row without ``skills``
is labelled by one of ``LABELLINGS``:

* ``vocabulary``: the question's embedding against the skill vocabulary's phrases
  (``SkillMatcher.label``: its best two skills above a cosine floor);
* ``neighbours``: the skills of its nearest LLM-labelled questions in the shipped profile
  (``skills.neighbours``: a weighted vote, as ``skills.source: neighbours`` does live).

``labelling_agreement`` measures each against the LLM annotator's keywords where both exist
(the shipped profile's questions; the neighbours' vote leaves the question itself out).
A matrix records no aggregator test, so the profile's aggregators are its experts (what
``Profile.best_aggregator`` falls back to).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal

import numpy as np

from agents.errors import SymoeError
from eval.matrix import Matrix
from orchestrator.config import SymoeConfig
from orchestrator.profiles import Outcome, Profile, profile_from_outcomes, profiled_examples, read_profile
from orchestrator.profiles import default_profile_path as shipped_profile_path
from orchestrator.provenance import pool_digest, provenance
from skills.neighbours import LabelledQuestion, NeighbourSkills
from skills.vocabulary import SkillMatcher

Labelling = Literal["vocabulary", "neighbours"]
LABELLINGS: tuple[Labelling, ...] = ("vocabulary", "neighbours")

Embed = Callable[[list[str]], np.ndarray]


class SkillLabeller:
    """Labels questions' skills without an LLM, by one of ``LABELLINGS`` (its vocabulary or its
    labelled neighbours embedded once, then any number of questions)."""

    def __init__(self, config: SymoeConfig, embed: Embed, labelling: Labelling = "vocabulary") -> None:
        if labelling not in LABELLINGS:
            raise SymoeError(f"unknown skill labelling {labelling!r}; use: {', '.join(LABELLINGS)}")
        self.embed, self.labelling = embed, labelling
        self._matcher = SkillMatcher(config.embedding, config.skills.match_threshold) \
            if labelling == "vocabulary" else None
        self._neighbours = NeighbourSkills(read_profile(shipped_profile_path()).examples, config.embedding,
                                           config.skills.neighbours, config.skills.neighbour_share, embed=embed) \
            if labelling == "neighbours" else None

    def label(self, texts: list[str], exclude: list[int | None] | None = None) -> list[list[str]]:
        """Each text's skills; ``exclude[i]`` leaves one labelled neighbour out of text i's vote
        (a leave-one-out check on the labelled questions themselves; the vocabulary ignores it)."""
        if self._matcher is not None:
            return self._matcher.label(self.embed(texts))
        assert self._neighbours is not None
        return [v.skills for v in self._neighbours.vote(texts, exclude=exclude)]

    def __call__(self, matrix: Matrix) -> dict[str, list[str]]:
        """Question id -> skills: the row's own where it has them, else this labelling's."""
        out = {r.id: list(r.skills) for r in matrix.rows if r.skills}
        todo = [r for r in matrix.rows if not r.skills]
        if todo:
            labels = self.label([r.question for r in todo])
            out.update({r.id: skills for r, skills in zip(todo, labels, strict=True)})
        return out


def profile_from_matrix(matrix: Matrix, config: SymoeConfig, skills: dict[str, list[str]],
                        source: str = "") -> Profile:
    """The profile of ``config``'s pool from the matrix's questions (the caller picks the
    split): ``correct`` counts as right at 0.5 or more; tokens are completion tokens; US
    dollars where recorded."""
    outcomes = [Outcome(expert=e, question_id=r.id, task=r.task, skills=skills.get(r.id, []),
                        correct=o.correct >= 0.5, tokens=o.completion_tokens or 0,
                        prompt_tokens=o.prompt_tokens or 0, answer=o.answer, seconds=o.seconds or 0.0,
                        margin=o.margin, usd=o.cost or 0.0)
                for r in matrix.rows for e, o in r.outcomes.items()]
    experts = profile_from_outcomes(outcomes, matrix.experts)
    questions = [LabelledQuestion(question=r.question, skills=skills.get(r.id, []), task=r.task) for r in matrix.rows]
    seen = sorted({s for r in matrix.rows for s in skills.get(r.id, [])})
    return Profile(
        pool=pool_digest(config), annotator=config.skills.annotator or config.default_expert,
        data={"matrix": source, "split": sorted({r.split for r in matrix.rows}), "questions": len(matrix),
              "tasks": matrix.tasks, "skills_seen": seen,
              "questions_without_skill": sum(1 for r in matrix.rows if not skills.get(r.id)),
              "aggregator_items": 0, "created": datetime.now(UTC).isoformat(timespec="seconds")},
        experts=experts, aggregators={},
        examples=profiled_examples(questions, matrix.ids, outcomes, [r.answer_format for r in matrix.rows]),
        provenance=provenance(config, command="profile build --from-matrix"))


def labelling_agreement(config: SymoeConfig, embed: Embed) -> dict[str, dict[str, float]]:
    """How each labelling agrees with the LLM annotator's skills on the shipped profile's
    questions: the share of questions whose first LLM skill it names (``hit``), and the mean
    Jaccard overlap of the two skill sets (``jaccard``)."""
    examples = [e for e in read_profile(shipped_profile_path()).examples if e.skills]
    if not examples:
        return {}
    texts = [e.question for e in examples]
    # the labeller's neighbours are these very questions (the shipped profile's, with skills),
    # so text i leaves out neighbour i
    labelled = {name: SkillLabeller(config, embed, name).label(texts, exclude=list(range(len(examples))))
                for name in LABELLINGS}
    out = {}
    for name, labels in labelled.items():
        hits = [e.skills[0] in got for e, got in zip(examples, labels, strict=True)]
        jaccard = [len(set(e.skills) & set(got)) / len(set(e.skills) | set(got))
                   for e, got in zip(examples, labels, strict=True)]
        out[name] = {"questions": len(examples), "hit": round(100 * float(np.mean(hits)), 1),
                     "jaccard": round(float(np.mean(jaccard)), 3)}
    return out
