"""Building a profile: annotate validation questions, have every expert answer them, grade,
count right/wrong per skill, then run the synthetic aggregator test.

Each model is loaded once and freed before the next. Every generation goes through the
on-disk generation cache, so a build that dies resumes where it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from pydantic import BaseModel

from agents.cache import GenerationCache, generate_cached
from agents.runtime import LoadedPool
from orchestrator.aggregate import build_aggregation_test, synthesis_request
from orchestrator.answers import AnswerFormat, extract, is_correct
from orchestrator.config import SymoeConfig
from orchestrator.graph import expert_request
from orchestrator.profiles import Outcome, Profile, profile_from_outcomes
from orchestrator.provenance import pool_digest, provenance
from skills.annotate import annotate_many
from skills.vocabulary import SkillMatcher

Progress = Callable[[str, int, int], None]  # (stage, done increment, stage total)


class BuildSpec(BaseModel):
    tasks: list[str]
    per_subject: int | None = None
    limit: int | None = None
    seed: int = 0
    aggregator_items: int = 24


def task_and_limit(entry: str, default: int | None) -> tuple[str, int | None]:
    """'mmlu:171' -> ('mmlu', 171); 'mmlu' -> ('mmlu', default)."""
    name, sep, count = entry.rpartition(":")
    if sep and count.isdigit():
        return name, int(count)
    return entry, default


def question_format(choices: list[str], answer: str) -> AnswerFormat:
    if choices:
        return "choice"
    try:
        float(answer.replace(",", ""))
        return "number"
    except ValueError:
        return "text"


def build_profile(config: SymoeConfig, spec: BuildSpec, progress: Progress | None = None) -> Profile:
    from eval.datasets import load_split

    started = time.perf_counter()
    questions = [q for entry in spec.tasks
                 for task, limit in [task_and_limit(entry, spec.limit)]
                 for q in load_split(task, "validation", config.home, limit=limit,
                                     per_subject=spec.per_subject, seed=spec.seed)]
    cache = GenerationCache(config.home / "cache" / "generations.sqlite")
    pool = LoadedPool(config.experts, config.home)
    annotator = config.skills.annotator or config.default_expert
    matcher = SkillMatcher(config.embedding, config.skills.match_threshold)

    def tick(stage: str, total: int) -> Callable[[int], None]:
        return lambda n: progress(stage, n, total) if progress else None

    n_ann = len(questions) * config.skills.samples
    annotations = annotate_many([q.question for q in questions], pool.get(annotator), matcher, config.skills,
                                seed=spec.seed, cache=cache, on_done=tick("annotate", n_ann))
    formats = [question_format(q.choices, q.answer) for q in questions]
    order = [annotator] + [n for n in config.experts if n != annotator]
    outcomes: list[Outcome] = []
    responses: dict[str, dict[str, list[str]]] = {q.id: {"right": [], "wrong": []} for q in questions}
    for name in order:
        requests = [expert_request(q.question, q.choices, fmt, None, 0.0, spec.seed)
                    for q, fmt in zip(questions, formats, strict=True)]
        gens = generate_cached(pool.get(name), requests, cache, on_done=tick(f"answer: {name}", len(requests)))
        pool.unload(name)
        for q, fmt, ann, gen in zip(questions, formats, annotations, gens, strict=True):
            correct = is_correct(extract(gen.text, fmt, len(q.choices), q.choices), q.answer, fmt, q.aliases)
            outcomes.append(Outcome(expert=name, question_id=q.id, task=q.task, skills=ann.skills, correct=correct))
            responses[q.id]["right" if correct else "wrong"].append(gen.text)
    items = build_aggregation_test(
        [{"id": q.id, "question": q.question, "choices": q.choices, "fmt": fmt, "answer": q.answer,
          "task": q.task, "skills": ann.skills, **responses[q.id]}
         for q, fmt, ann in zip(questions, formats, annotations, strict=True)],
        seed=spec.seed, limit=spec.aggregator_items)
    agg_outcomes: list[Outcome] = []
    for name in reversed(order):
        requests = [synthesis_request(it.question, it.choices, it.fmt, it.responses, seed=spec.seed) for it in items]
        gens = generate_cached(pool.get(name), requests, cache, on_done=tick(f"aggregate: {name}", len(requests)))
        pool.unload(name)
        for it, gen in zip(items, gens, strict=True):
            correct = is_correct(extract(gen.text, it.fmt, len(it.choices), it.choices), it.answer, it.fmt)
            agg_outcomes.append(Outcome(expert=name, question_id=it.question_id, task=it.task,
                                        skills=it.skills, correct=correct))
    cache.close()
    skills_seen = sorted({s for a in annotations for s in a.skills})
    return Profile(
        pool=pool_digest(config), annotator=annotator,
        data={"tasks": spec.tasks, "split": "validation", "per_subject": spec.per_subject, "limit": spec.limit,
              "questions": len(questions), "seed": spec.seed, "aggregator_items": len(items),
              "skills_seen": skills_seen,
              "questions_without_skill": sum(1 for a in annotations if not a.skills),
              "build_seconds": round(time.perf_counter() - started, 1),
              "created": datetime.now(UTC).isoformat(timespec="seconds")},
        experts=profile_from_outcomes(outcomes, list(config.experts)),
        aggregators=profile_from_outcomes(agg_outcomes, list(config.experts)),
        provenance=provenance(config, annotation_samples=config.skills.samples),
    )
