"""Building a pool's outcome matrix by generating, in resumable pieces under a time budget.

    tasks' questions (validation and test, tasks and splits interleaved) -> chunks of a few questions
    -> each question's skills (the annotator, as profile build labels them; optional)
    -> ``Symoe.ask_many`` under ``single:EXPERT`` for every routed expert (the session's cache)
    -> each answer scored as ``symoe eval`` scores it -> one matrix row per question
    -> start no chunk after the budget is spent (the first always runs), or after an interrupt
       (Ctrl-C, SIGTERM: the chunk under way is left); write what is done

Rows already in the output matrix (``done``) are kept and their questions not asked again; its
rows outside this run's selection (other tasks, splits, or beyond a smaller limit) stay in it.
A split entry may carry its own limit (``validation:100``, ``test:67``), as a task entry does.
Every generation lands in the generation cache as its batch finishes, so a run stopped by its
budget, interrupted or killed loses at most a batch: the next run reads what was done from the
matrix and the cache and goes on. ``symoe cache export`` then writes the new generations as shards to commit, and a
fresh clone imports them (``make install``), so the matrix grows across machines.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

from agents.progress import StageReport, across
from eval.datasets import Question, load_tasks, split_of, task_and_limit
from eval.matrix import Matrix, MatrixRow, RecordedOutcome
from eval.matrix_importers import sample_outcome
from eval.runner import SampleResult, score
from orchestrator.config import SymoeConfig
from orchestrator.pipeline import annotate
from orchestrator.session import Symoe


class BuildReport(BaseModel):
    """What a build did: questions asked for and done (kept from the output matrix among them),
    rows of the output matrix outside the selection (written back as they were), seconds,
    whether the budget or an interrupt stopped it."""

    questions: int
    done: int
    kept: int = 0
    outside: int = 0
    seconds: float
    stopped_by_budget: bool
    interrupted: bool = False


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
                 progress: StageReport | None = None, skills: bool = True,
                 done: Matrix | None = None) -> tuple[Matrix, BuildReport]:
    """Every routed expert's answer to the tasks' questions of ``splits`` (``split[:N]``: N
    questions a task of that split, else ``limit``), until ``budget_s``;
    with ``skills``, each question's skills as the annotator names them (the pipeline's
    annotate stage, as ``symoe profile build`` labels its questions; cached like the answers).
    A row of ``done`` (the matrix an earlier run wrote) that holds every expert, and its skills
    where asked for, is kept as it is."""
    started = time.monotonic()
    questions = interleaved([q for entry in splits for split, n in [task_and_limit(entry, limit)]
                             for q in load_tasks(tasks, split, config.home, limit=n, seed=seed)])
    experts = list(config.routing_pool)
    kept = {r.id: r.model_copy(update={"outcomes": {e: r.outcomes[e] for e in experts}})
            for r in (done.rows if done is not None else [])
            if set(experts) <= set(r.outcomes) and (r.skills is not None or not skills)}
    todo = [q for q in questions if q.id not in kept]
    made: dict[str, MatrixRow] = {}
    stopped = interrupted = False
    per_chunk = across(progress, -(-len(todo) // chunk)) if progress is not None and todo else None
    with Symoe(config, cache_path=cache_path, progress=per_chunk) as symoe:
        for number, part in enumerate(chunks(todo, chunk)):
            if number and budget_s is not None and time.monotonic() - started > budget_s:
                stopped = True  # a run always does its first chunk: every run makes progress
                break
            try:
                queries = [q.query() for q in part]
                labels = {qid: a.skills for qid, (a, _) in annotate(symoe.pipeline, queries, seed).items()} \
                    if skills else None
                results = symoe.ask_many(queries, routers=[f"single:{e}" for e in experts], seed=seed)
            except KeyboardInterrupt:  # Ctrl-C or SIGTERM: this chunk's finished generations are in the cache
                interrupted = True
                break
            by_id = {q.id: q for q in part}
            made.update((r.id, r) for r in matrix_rows([score(r, by_id[r.query_id], log_samples=True)
                                                         for r in results], part, labels))
    rows = [row for q in questions if (row := kept.get(q.id) or made.get(q.id)) is not None]
    asked = {q.id for q in questions}
    outside = [row for row in kept.values() if row.id not in asked]  # not in this selection: kept, not dropped
    report = BuildReport(questions=len(questions), done=len(rows), kept=len(kept.keys() & asked), outside=len(outside),
                         seconds=round(time.monotonic() - started, 1), stopped_by_budget=stopped,
                         interrupted=interrupted)
    return Matrix(rows + outside, experts, source="symoe matrix build"), report
