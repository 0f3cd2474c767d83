"""Building a pool's outcome matrix by generating, in resumable pieces under a time budget.

    tasks' questions (validation and test, tasks and splits interleaved) -> chunks of a few questions
    -> each question's skills (the annotator, as profile build labels them; optional)
    -> ``Symoe.ask_many`` under ``single:EXPERT`` for every routed expert (the session's cache)
    -> each answer scored as ``symoe eval`` scores it -> one matrix row per question
    -> start no chunk after the budget is spent (the first always runs); write what is done

Every generation lands in the generation cache as its batch finishes, so a run stopped by its
budget (or killed) loses at most a batch: the next run reads what was done from the cache and
goes on. ``symoe cache export`` then writes the new generations as shards to commit, and a
fresh clone imports them (``make install``), so the matrix grows across machines.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

from agents.progress import StageReport, across
from eval.datasets import Question, load_tasks, split_of
from eval.matrix import Matrix, MatrixRow, RecordedOutcome
from eval.matrix_importers import sample_outcome
from eval.runner import SampleResult, score
from orchestrator.config import SymoeConfig
from orchestrator.pipeline import annotate
from orchestrator.session import Symoe


class BuildReport(BaseModel):
    """What a build did: questions asked for and done, seconds, whether the budget stopped it."""

    questions: int
    done: int
    seconds: float
    stopped_by_budget: bool


def interleaved(questions: list[Question]) -> list[Question]:
    """Questions round-robin over their tasks and splits, so a partial build covers every task
    in both splits (validation to fit routers on, test to evaluate them)."""
    by_task: dict[tuple[str, str], list[Question]] = {}
    for q in questions:
        by_task.setdefault((q.task, split_of(q)), []).append(q)
    out: list[Question] = []
    queues = list(by_task.values())
    while any(queues):
        for queue in queues:
            if queue:
                out.append(queue.pop(0))
    return out


def chunks(items: list[Question], size: int) -> Iterator[list[Question]]:
    for lo in range(0, len(items), size):
        yield items[lo:lo + size]


def matrix_rows(samples: list[SampleResult], questions: list[Question],
                skills: dict[str, list[str]] | None = None) -> list[MatrixRow]:
    """The questions every ``single:EXPERT`` sample answered, one row each with those experts'
    outcomes (a question some expert's sample lacks is left out: every row holds every expert)
    and its ``skills`` where given."""
    outcomes: dict[str, dict[str, RecordedOutcome]] = {}
    for s in samples:
        if s.method.startswith("single:"):
            outcomes.setdefault(s.question_id, {})[s.method.removeprefix("single:")] = sample_outcome(s.model_dump())
    experts = {e for o in outcomes.values() for e in o}
    return [MatrixRow(id=q.id, task=q.task, split=split_of(q), question=q.question,  # type: ignore[arg-type]
                      choices=q.choices or None, answer=q.answer, outcomes=outcomes[q.id],
                      skills=skills.get(q.id) if skills is not None else None)
            for q in questions if q.id in outcomes and set(outcomes[q.id]) == experts]


def build_matrix(config: SymoeConfig, tasks: list[str], splits: list[str], *, limit: int | None = None,
                 seed: int = 0, budget_s: float | None = None, chunk: int = 10, cache_path: Path | None = None,
                 progress: StageReport | None = None, skills: bool = True) -> tuple[Matrix, BuildReport]:
    """Every routed expert's answer to the tasks' questions of ``splits``, until ``budget_s``;
    with ``skills``, each question's skills as the annotator names them (the pipeline's
    annotate stage, as ``symoe profile build`` labels its questions; cached like the answers)."""
    started = time.monotonic()
    questions = interleaved([q for split in splits
                             for q in load_tasks(tasks, split, config.home, limit=limit, seed=seed)])
    experts = list(config.routing_pool)
    rows: list[MatrixRow] = []
    stopped = False
    per_chunk = across(progress, -(-len(questions) // chunk)) if progress is not None else None
    with Symoe(config, cache_path=cache_path, progress=per_chunk) as symoe:
        for number, part in enumerate(chunks(questions, chunk)):
            if number and budget_s is not None and time.monotonic() - started > budget_s:
                stopped = True  # a run always does its first chunk: every run makes progress
                break
            queries = [q.query() for q in part]
            labels = {qid: a.skills for qid, (a, _) in annotate(symoe.pipeline, queries, seed).items()} \
                if skills else None
            results = symoe.ask_many(queries, routers=[f"single:{e}" for e in experts], seed=seed)
            by_id = {q.id: q for q in part}
            rows += matrix_rows([score(r, by_id[r.query_id], log_samples=True) for r in results], part, labels)
    report = BuildReport(questions=len(questions), done=len(rows), seconds=round(time.monotonic() - started, 1),
                         stopped_by_budget=stopped)
    return Matrix(rows, experts, source="symoe matrix build"), report
