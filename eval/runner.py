"""Evaluation: the one query pipeline over every method's plans, then scoring.

    questions -> Query records (the gold answers stay here) -> Symoe.ask_many(routers=...)
              (annotate once, plan every router, gate, execute grouped by model, combine,
              extract) -> one AskResult per (router, question), scored as a SampleResult
              -> summaries

Evaluation calls the session ``symoe ask`` calls and scores the record it returns; nothing
of the pipeline is copied here.
Every generation goes through the SQLite generation cache as it completes: a run killed at
any point and started again with the same arguments redoes nothing that finished. Methods
that ask the same prompt (single experts, majority, MoA, symoe's greedy slots) share it.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from agents.backends import Usage
from agents.progress import StageReport
from eval.curves import curves
from eval.datasets import Question, load_tasks
from eval.stats import compare, standard_error
from orchestrator.answers import is_correct
from orchestrator.config import SymoeConfig
from orchestrator.records import AskResult, ExpertAnswer, GateFeatures
from orchestrator.session import Symoe


class EvalArgs(BaseModel):
    tasks: list[str]
    methods: list[str]
    limit: int | None = None
    split: str = "test"
    output: Path
    seed: int = 0
    cache_path: Path | None = None
    log_samples: bool = False
    memory_budget: int | None = None


class SampleResult(BaseModel):
    """One (method, question): the pipeline's answer, scored, with what it cost."""

    method: str
    routed: bool = False
    question_id: str
    task: str
    subject: str
    answer: str | None
    gold: str
    correct: bool
    experts: list[str]
    aggregator: str | None = None
    aggregated: bool = False
    fallback: str | None = None
    escalated: bool | None = Field(None, description="a cascade that escalated to the routed team (None: no cascade)")
    failed: int = Field(0, description="failed generations among this question's expert and aggregator jobs")
    succeeded: int = Field(0, description="successful generations among them")
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float | None = Field(default=None, description="US dollars, where recorded (a replayed matrix's costs)")
    skills: list[str] = Field(default_factory=list)
    responses: list[ExpertAnswer] = Field(default_factory=list)
    final_text: str | None = None
    retrieved: bool = False
    retrieval_reason: str | None = None
    gate_score: float | None = None
    gate_features: GateFeatures | None = None


class RunStats(BaseModel):
    questions: int
    generations_needed: int
    generated: int
    from_cache: int
    failed: int = 0
    bad_cache_rows: int = 0
    loads: list[str]
    wall_seconds: float


def questions_for(args: EvalArgs, home: Path) -> list[Question]:
    return load_tasks(args.tasks, args.split, home, limit=args.limit, seed=args.seed)


def evaluate(config: SymoeConfig, args: EvalArgs, progress: StageReport | None = None,
             questions: list[Question] | None = None) -> tuple[list[SampleResult], RunStats]:
    """Every router of ``args`` on every question, through the one session, scored."""
    started = time.perf_counter()
    questions = questions if questions is not None else questions_for(args, config.home)
    with Symoe(config, cache_path=args.cache_path or args.output / "generations.sqlite",
               memory_budget=args.memory_budget, progress=progress) as symoe:
        results = symoe.ask_many([q.query() for q in questions], routers=args.methods, seed=args.seed)
    by_id = {q.id: q for q in questions}
    samples = [score(r, by_id[r.query_id], args.log_samples) for r in results]
    stats = symoe.pipeline.stats
    stats_ = RunStats(questions=len(questions), generations_needed=stats.needed, generated=stats.generated,
                      from_cache=stats.from_cache, failed=stats.failed,
                      bad_cache_rows=symoe.cache.bad_rows if symoe.cache else 0, loads=symoe.loads(),
                      wall_seconds=round(time.perf_counter() - started, 2))
    return samples, stats_


def score(r: AskResult, q: Question, log_samples: bool = False) -> SampleResult:
    """The session's answer record, scored against the gold answer."""
    answer = r.answer if r.extracted else None
    ret = r.retrieval
    return SampleResult(
        method=r.method, routed=r.routed, question_id=q.id, task=q.task, subject=q.subject or q.task,
        answer=answer, gold=q.answer, correct=is_correct(answer, q.answer, r.format, q.aliases), experts=r.experts,
        aggregator=r.aggregator, aggregated=r.aggregated, fallback=r.fallback, escalated=r.escalated,
        failed=r.failed, succeeded=r.succeeded, usage=r.usage, skills=r.skills,
        responses=r.expert_answers if log_samples else [], final_text=r.text if log_samples else None,
        retrieved=bool(ret and ret.retrieved), retrieval_reason=ret.reason if ret else None,
        gate_score=ret.score if ret else None, gate_features=ret.features if ret else None)


def summarise(samples: list[SampleResult]) -> dict[str, Any]:
    """Accuracy per method x task and per method x subject, tokens and time per method, the
    experts each routed method recruited, and failed generations per method."""
    table: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    subjects: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    groups: dict[tuple[str, str], list[SampleResult]] = defaultdict(list)
    sgroups: dict[tuple[str, str, str], list[SampleResult]] = defaultdict(list)
    for s in samples:
        groups[(s.method, s.task)].append(s)
        groups[(s.method, "all")].append(s)
        sgroups[(s.method, s.task, s.subject)].append(s)
    for (method, task), rows in groups.items():
        table[method][task] = _stats(rows)
    for (method, task, subject), rows in sgroups.items():
        subjects[method][f"{task}/{subject}"] = _stats(rows)
    recruited: dict[str, Counter[str]] = defaultdict(Counter)
    cascades: dict[str, list[bool]] = defaultdict(list)
    for s in samples:
        if s.routed:
            recruited[s.method].update(s.experts)
        if s.escalated is not None:
            cascades[s.method].append(s.escalated)
    return {"accuracy": table, "per_subject": subjects,
            "recruited": {m: dict(c.most_common()) for m, c in recruited.items()},
            "escalation": {m: {"cascaded": len(e), "escalated": sum(e), "rate": round(100 * sum(e) / len(e), 1)}
                           for m, e in cascades.items()},
            "pareto": pareto(table),
            "curves": curves(samples),
            "compared": comparisons(samples),
            **({"compared_task_best": comparisons(samples, reference="task_best")}
               if any(s.method == "task_best" for s in samples) else {})}


def pareto(table: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, Any]]:
    """Each method's accuracy against its cost per question (prompt + generated tokens, and
    seconds), and whether it is on each front: no other method is at least as accurate for
    less, or more accurate for as little."""
    points: dict[str, dict[str, Any]] = {}
    for method, rows in table.items():
        total = rows["all"]
        n = total["n"] or 1
        points[method] = {"accuracy": total["accuracy"], "stderr": total["stderr"],
                          "tokens_per_question": round((total["prompt_tokens"] + total["completion_tokens"]) / n, 1),
                          "seconds_per_question": round(total["seconds"] / n, 3)}
    for key in ("tokens", "seconds"):
        cost = f"{key}_per_question"
        for method, p in points.items():
            p[f"front_{key}"] = not any(
                (o["accuracy"] >= p["accuracy"] and o[cost] < p[cost]) or
                (o["accuracy"] > p["accuracy"] and o[cost] <= p[cost])
                for m, o in points.items() if m != method)
    return points


def reference_method(samples: list[SampleResult]) -> str | None:
    """What every method is compared with: ``best_single`` when it ran, else the most
    accurate ``single:`` method, else None."""
    methods = list(dict.fromkeys(s.method for s in samples))
    if "best_single" in methods:
        return "best_single"
    singles = [m for m in methods if m.startswith("single:")]
    return max(singles, key=lambda m: sum(s.correct for s in samples if s.method == m)) if singles else None


def comparisons(samples: list[SampleResult], seed: int = 0, reference: str | None = None) -> dict[str, dict[str, Any]]:
    """Each method against ``reference`` (default: ``reference_method``), on the questions both
    answered: the difference in points and its 95% paired-bootstrap interval."""
    reference = reference or reference_method(samples)
    if reference is None:
        return {}
    by_method: dict[str, dict[str, bool]] = defaultdict(dict)
    for s in samples:
        by_method[s.method][s.question_id] = s.correct
    ref = by_method[reference]
    out = {}
    for method, rows in by_method.items():
        ids = sorted(set(rows) & set(ref))
        out[method] = compare([rows[i] for i in ids], [ref[i] for i in ids], reference, seed).model_dump()
    return out


def _stats(rows: list[SampleResult]) -> dict[str, float]:
    n = len(rows)
    usage = Usage.total([r.usage for r in rows])
    return {"n": n, "accuracy": round(100 * sum(r.correct for r in rows) / n, 2) if n else 0.0,
            "stderr": round(standard_error([r.correct for r in rows]), 2),
            "retrieval_rate": round(100 * sum(r.retrieved for r in rows) / n, 2) if n else 0.0,
            "prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "seconds": round(usage.seconds, 2), "aggregated": sum(r.aggregated for r in rows),
            "failed": sum(r.failed for r in rows), "fallbacks": sum(r.fallback is not None for r in rows)}


def methods_without_answers(samples: list[SampleResult]) -> list[str]:
    """Methods none of whose generations succeeded (a 0% that is no result at all)."""
    succeeded: Counter[str] = Counter()
    for s in samples:
        succeeded[s.method] += s.succeeded
    return [m for m, n in succeeded.items() if n == 0]
