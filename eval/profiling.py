"""Building a profile from labelled validation questions, through the one pipeline.

    annotate the questions (the pipeline's annotate stage) -> ``Symoe.ask_many`` under one
    ``single:EXPERT`` router per expert (each model loads once) -> grade each expert's own
    answer -> right/wrong per skill and task -> the synthetic aggregator test (Symbolic-MoE:
    each candidate synthesises 1 right and 2 wrong responses, shuffled) -> ``Profile``

Every generation goes through the on-disk generation cache, so a build that dies resumes
where it stopped.
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel

from agents.progress import StageReport
from eval.datasets import Question, load_tasks
from eval.matrix import Matrix, write_matrix
from eval.matrix_build import matrix_rows
from eval.runner import score
from orchestrator.aggregate import synthesis_request
from orchestrator.answers import extract, is_correct
from orchestrator.config import SymoeConfig
from orchestrator.pipeline import annotate, execute
from orchestrator.profiles import Outcome, Profile, profile_from_outcomes, profiled_examples
from orchestrator.provenance import pool_digest, provenance
from orchestrator.records import AnswerFormat, Job
from orchestrator.session import Symoe
from skills.neighbours import LabelledQuestion


class BuildSpec(BaseModel):
    tasks: list[str]
    per_subject: int | None = None
    limit: int | None = None
    seed: int = 0
    aggregator_items: int = 24
    #: where to write every expert's answers as an outcome matrix too (None: not written)
    matrix: Path | None = None


class AggregationItem(BaseModel):
    """One synthetic aggregation question: responses shuffled, one of them correct."""

    question_id: str
    question: str
    choices: list[str]
    fmt: AnswerFormat
    answer: str
    task: str
    skills: list[str]
    responses: list[str]


def build_aggregation_test(questions: list[Question], skills: dict[str, list[str]],
                           responses: dict[str, dict[str, list[str]]], seed: int, limit: int) -> list[AggregationItem]:
    """From graded validation outputs, questions with >=1 right and >=2 wrong responses."""
    rng = random.Random(seed)
    out: list[AggregationItem] = []
    for q in questions:
        right, wrong = responses[q.id]["right"], responses[q.id]["wrong"]
        if not right or len(wrong) < 2:
            continue
        shown = [rng.choice(right), *rng.sample(wrong, 2)]
        rng.shuffle(shown)
        out.append(AggregationItem(question_id=q.id, question=q.question, choices=q.choices, fmt=q.answer_format,
                                   answer=q.answer, task=q.task, skills=skills[q.id], responses=shown))
    rng.shuffle(out)
    return out[:limit]


def build_profile(config: SymoeConfig, spec: BuildSpec, progress: StageReport | None = None) -> Profile:
    started = time.perf_counter()
    questions = load_tasks(spec.tasks, "validation", config.home, limit=spec.limit, per_subject=spec.per_subject,
                           seed=spec.seed)
    with Symoe(config, progress=progress) as symoe:
        queries = [q.query() for q in questions]
        annotations = annotate(symoe.pipeline, queries, spec.seed)
        skills = {qid: ann.skills for qid, (ann, _) in annotations.items()}
        experts = list(config.routing_pool)
        results = symoe.ask_many(queries, routers=[f"single:{e}" for e in experts], seed=spec.seed)
        by_id = {q.id: q for q in questions}
        if spec.matrix is not None:
            rows = matrix_rows([score(r, by_id[r.query_id], log_samples=True) for r in results], questions)
            write_matrix(Matrix(rows, source="symoe profile build"), spec.matrix)
        outcomes: list[Outcome] = []
        responses: dict[str, dict[str, list[str]]] = {q.id: {"right": [], "wrong": []} for q in questions}
        for r in results:
            q, own = by_id[r.query_id], r.expert_answers[0]  # the expert's own answer, never a fallback
            correct = own.ok and is_correct(own.answer, q.answer, q.answer_format, q.aliases)
            outcomes.append(Outcome(expert=own.expert, question_id=q.id, task=q.task, skills=skills[q.id],
                                    correct=correct, tokens=own.usage.completion_tokens,
                                    prompt_tokens=own.usage.prompt_tokens, answer=own.answer if own.ok else None,
                                    seconds=own.usage.seconds, margin=own.margin if own.ok else None))
            responses[q.id]["right" if correct else "wrong"].append(own.text)
        items = build_aggregation_test(questions, skills, responses, seed=spec.seed, limit=spec.aggregator_items)
        syntheses = {(name, it.question_id): Job(model=name, request=synthesis_request(
            it.question, it.choices, it.fmt, it.responses, seed=spec.seed)) for name in experts for it in items}
        execute(symoe.pipeline, list(syntheses.values()), "aggregator test")
    agg_outcomes = []
    for name in experts:
        for it in items:
            job = syntheses[(name, it.question_id)]
            text = job.generation.text if job.ok and job.generation else ""
            correct = is_correct(extract(text, it.fmt, len(it.choices), it.choices), it.answer, it.fmt)
            agg_outcomes.append(Outcome(expert=name, question_id=it.question_id, task=it.task, skills=it.skills,
                                        correct=correct))
    all_skills = [s for q in questions for s in skills[q.id]]
    return Profile(
        pool=pool_digest(config), annotator=symoe.pipeline.annotator,
        data={"tasks": spec.tasks, "split": "validation", "per_subject": spec.per_subject, "limit": spec.limit,
              "questions": len(questions), "seed": spec.seed, "aggregator_items": len(items),
              "skills_seen": sorted(set(all_skills)),
              "questions_without_skill": sum(1 for q in questions if not skills[q.id]),
              "build_seconds": round(time.perf_counter() - started, 1),
              "created": datetime.now(UTC).isoformat(timespec="seconds")},
        experts=profile_from_outcomes(outcomes, experts),
        aggregators=profile_from_outcomes(agg_outcomes, experts),
        examples=profiled_examples([LabelledQuestion(question=q.question, skills=skills[q.id], task=q.task)
                                    for q in questions], [q.id for q in questions], outcomes,
                                   [q.answer_format for q in questions]),
        provenance=provenance(config, annotation_samples=config.skills.samples),
    )
