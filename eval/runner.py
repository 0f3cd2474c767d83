"""Batch evaluation: every method's plans executed together, grouped by expert.

    annotate all -> plan all -> group generations by expert -> per expert: load, batch
    generate, (unload when over the memory budget) -> group syntheses by aggregator ->
    aggregate -> score

Every generation goes through the SQLite generation cache as it completes: a run killed at
any point and started again with the same arguments redoes nothing that finished. Methods
that ask the same prompt (single experts, majority, MoA, symoe's greedy slots) share it.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from agents.backends import Generation, GenerationRequest
from agents.cache import GenerationCache, generate_cached, request_key
from agents.errors import SymoeError
from agents.runtime import LoadedPool, available_memory
from eval.methods import EvalQuestion, MethodContext, QuestionPlan, get_method, retrieval_mode
from orchestrator.aggregate import agreed_answer, synthesis_request
from orchestrator.answers import AnswerFormat, extract, is_correct
from orchestrator.config import SymoeConfig
from orchestrator.graph import expert_request, majority
from orchestrator.profiles import load_profile
from orchestrator.profiling import question_format, task_and_limit
from orchestrator.records import ExpertAnswer

Progress = Callable[[str, int, int], None]


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
    gate: Path | None = None


class SampleResult(BaseModel):
    method: str
    question_id: str
    task: str
    subject: str
    answer: str | None
    gold: str
    correct: bool
    experts: list[str]
    aggregator: str | None = None
    aggregated: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    skills: list[str] = Field(default_factory=list)
    responses: list[ExpertAnswer] = Field(default_factory=list)
    final_text: str | None = None
    retrieved: bool = False
    gate_score: float | None = None
    gate_features: dict[str, float] | None = None


class RunStats(BaseModel):
    questions: int
    generations_needed: int
    generated: int
    from_cache: int
    loads: list[str]
    wall_seconds: float
    phase_seconds: dict[str, float]


def evaluate(config: SymoeConfig, args: EvalArgs, progress: Progress | None = None
             ) -> tuple[list[SampleResult], RunStats]:
    from eval.datasets import load_split

    started = time.perf_counter()
    phases: dict[str, float] = {}
    questions = [q for entry in args.tasks
                 for task, limit in [task_and_limit(entry, args.limit)]
                 for q in load_split(task, args.split, config.home, limit=limit, seed=args.seed)]
    formats: dict[str, AnswerFormat] = {q.id: question_format(q.choices, q.answer) for q in questions}
    by_id = {q.id: q for q in questions}
    profile, _ = load_profile(config)
    cache = GenerationCache(args.cache_path or args.output / "generations.sqlite")
    budget = args.memory_budget if args.memory_budget is not None else int(available_memory() * 0.6)
    pool = LoadedPool(config.experts, config.home, budget_bytes=budget)

    def tick(stage: str, total: int) -> Callable[[int], None]:
        return lambda n: progress(stage, n, total) if progress else None

    # 1. annotate (only symoe needs skills)
    skills: dict[str, list[str]] = {q.id: [] for q in questions}
    annotation_tokens: dict[str, tuple[int, int, float]] = {}
    t0 = time.perf_counter()
    if any(m.startswith("symoe") for m in args.methods):
        from skills.annotate import annotate_many, annotation_requests
        from skills.vocabulary import SkillMatcher

        annotator = config.skills.annotator or config.default_expert
        matcher = SkillMatcher(config.embedding, config.skills.match_threshold)
        backend = pool.get(annotator)
        anns = annotate_many([q.question for q in questions], backend, matcher, config.skills, seed=args.seed,
                             cache=cache, on_done=tick("annotate", len(questions) * config.skills.samples))
        for q, ann in zip(questions, anns, strict=True):
            skills[q.id] = ann.skills
            gens = [cache.get(request_key(backend.spec, r)) for r in annotation_requests(q.question, config.skills,
                                                                                         args.seed)]
            ok = [g for g in gens if g is not None]
            annotation_tokens[q.id] = (sum(g.prompt_tokens for g in ok), sum(g.completion_tokens for g in ok),
                                       sum(g.seconds for g in ok))
    phases["annotate"] = time.perf_counter() - t0

    # 2. plans
    ctx = MethodContext(config=config, profile=profile, seed=args.seed)
    plans: dict[str, dict[str, QuestionPlan]] = {}
    for method in args.methods:
        plan = get_method(method)
        plans[method] = {q.id: plan(ctx, EvalQuestion(id=q.id, task=q.task, skills=skills[q.id])) for q in questions}

    # 2b. retrieval: passages for @always, the gate's decision for @auto (drafts grouped by expert)
    t0 = time.perf_counter()
    gate_scores: dict[str, float] = {}
    features: dict[str, Any] = {}
    search_seconds: dict[str, float] = {}  # retrieval's own cost, charged to @always and @auto
    draft_cost: dict[str, tuple[int, int, float]] = {}  # the gate's draft, charged to @auto
    modes = {m: retrieval_mode(m) for m in args.methods}
    if any(mode in ("always", "auto") for mode in modes.values()):
        from orchestrator.api import open_retriever
        from orchestrator.gate import format_passages, load_gate

        retriever, problem = open_retriever(config)
        if retriever is None:
            raise SymoeError(f"the retrieval axis needs an index: {problem}")
        hits = {}
        for q in questions:
            t_search = time.perf_counter()
            hits[q.id] = retriever.search(q.question, config.retrieval.top_k)  # type: ignore[attr-defined]
            search_seconds[q.id] = time.perf_counter() - t_search
        gate = load_gate(args.gate or config.retrieval.gate, config.home)
        if "auto" in modes.values():
            auto_method = next(m for m, mode in modes.items() if mode == "auto")
            features, draft_cost = gate_features_batch(config, pool, cache, profile, questions, formats, skills,
                                                       plans[auto_method], hits, gate.draft_tokens, args.seed, tick)
        for method, mode in modes.items():
            for qid, qplan in plans[method].items():
                go = mode == "always" or (mode == "auto" and gate.decide(features[qid])[0])
                if mode == "auto":
                    gate_scores[qid] = gate.score(features[qid])
                if go:
                    qplan.context, qplan.retrieved = format_passages(hits[qid]), True
    phases["retrieval"] = time.perf_counter() - t0

    # 3. expert generations, grouped by expert
    t0 = time.perf_counter()
    jobs: dict[str, dict[str, GenerationRequest]] = defaultdict(dict)  # expert -> key -> request
    slot_keys: dict[tuple[str, str, int], tuple[str, str]] = {}  # (method, qid, slot) -> (expert, key)
    for method, per_q in plans.items():
        for qid, qplan in per_q.items():
            q = by_id[qid]
            for i, slot in enumerate(qplan.slots):
                request = expert_request(q.question, q.choices, formats[qid], qplan.context, slot.temperature,
                                         slot.seed)
                key = request_key(config.experts[slot.expert], request)
                jobs[slot.expert][key] = request
                slot_keys[(method, qid, i)] = (slot.expert, key)
    needed = sum(len(v) for v in jobs.values())
    results = run_grouped(jobs, pool, cache, tick, "expert")
    phases["experts"] = time.perf_counter() - t0

    # 4. answers per slot; synthesis where the plan asks for it, grouped by aggregator
    t0 = time.perf_counter()
    answers: dict[tuple[str, str], list[ExpertAnswer]] = {}
    for method, per_q in plans.items():
        for qid, qplan in per_q.items():
            q = by_id[qid]
            row = []
            for i, slot in enumerate(qplan.slots):
                expert, key = slot_keys[(method, qid, i)]
                gen = results[key]
                row.append(ExpertAnswer(expert=expert, sample=slot.sample, temperature=slot.temperature,
                                        text=gen.text, error=gen.error,
                                        answer=extract(gen.text, formats[qid], len(q.choices), q.choices),
                                        prompt_tokens=gen.prompt_tokens, completion_tokens=gen.completion_tokens,
                                        seconds=gen.seconds))
            answers[(method, qid)] = row
    synth: dict[str, dict[str, GenerationRequest]] = defaultdict(dict)
    synth_keys: dict[tuple[str, str], tuple[str, str]] = {}
    for method, per_q in plans.items():
        for qid, qplan in per_q.items():
            ok = [a for a in answers[(method, qid)] if a.error is None]
            if qplan.combine not in ("synthesis", "symoe") or len(ok) < 2 or qplan.aggregator is None:
                continue
            if qplan.combine == "symoe" and agreed_answer(ok) is not None:
                continue
            q = by_id[qid]
            request = synthesis_request(q.question, q.choices, formats[qid], [a.text for a in ok], seed=args.seed)
            key = request_key(config.experts[qplan.aggregator], request)
            synth[qplan.aggregator][key] = request
            synth_keys[(method, qid)] = (qplan.aggregator, key)
    needed += sum(len(v) for v in synth.values())
    results.update(run_grouped(synth, pool, cache, tick, "aggregate"))
    phases["aggregate"] = time.perf_counter() - t0
    pool.close()

    # 5. score
    samples: list[SampleResult] = []
    for method, per_q in plans.items():
        for qid, qplan in per_q.items():
            q = by_id[qid]
            row = answers[(method, qid)]
            final_text, aggregator, aggregated = None, None, False
            answer = None
            if (method, qid) in synth_keys:
                aggregator, key = synth_keys[(method, qid)]
                gen = results[key]
                if gen.ok:
                    final_text, aggregated = gen.text, True
                    answer = extract(gen.text, formats[qid], len(q.choices), q.choices)
            if answer is None:
                best = majority(row, qplan.weights)
                answer = best.answer if best else None
                final_text = final_text or (best.text if best else None)
            p_tok = sum(a.prompt_tokens for a in row)
            c_tok = sum(a.completion_tokens for a in row)
            secs = sum(a.seconds for a in row)
            if aggregated and aggregator:
                gen = results[synth_keys[(method, qid)][1]]
                p_tok, c_tok, secs = p_tok + gen.prompt_tokens, c_tok + gen.completion_tokens, secs + gen.seconds
            if method.startswith("symoe") and qid in annotation_tokens:
                a_p, a_c, a_s = annotation_tokens[qid]
                p_tok, c_tok, secs = p_tok + a_p, c_tok + a_c, secs + a_s
            if retrieval_mode(method) in ("always", "auto"):
                secs += search_seconds.get(qid, 0.0)
            if retrieval_mode(method) == "auto" and qid in draft_cost:
                d_p, d_c, d_s = draft_cost[qid]
                p_tok, c_tok, secs = p_tok + d_p, c_tok + d_c, secs + d_s
            samples.append(SampleResult(
                method=method, question_id=qid, task=q.task, subject=q.subject or q.task, answer=answer,
                gold=q.answer, correct=is_correct(answer, q.answer, formats[qid], q.aliases),
                experts=list(dict.fromkeys(s.expert for s in qplan.slots)), aggregator=aggregator,
                aggregated=aggregated, prompt_tokens=p_tok, completion_tokens=c_tok, seconds=round(secs, 3),
                skills=skills[qid], responses=row if args.log_samples else [],
                final_text=final_text if args.log_samples else None, retrieved=qplan.retrieved,
                gate_score=gate_scores.get(qid) if retrieval_mode(method) == "auto" else None,
                gate_features=features[qid].model_dump() if retrieval_mode(method) == "auto" else None))
    stats = RunStats(questions=len(questions), generations_needed=needed, generated=cache.stored,
                     from_cache=cache.hits, loads=pool.loads, wall_seconds=round(time.perf_counter() - started, 2),
                     phase_seconds={k: round(v, 2) for k, v in phases.items()})
    cache.close()
    return samples, stats


def gate_features_batch(config: SymoeConfig, pool: LoadedPool, cache: GenerationCache, profile: Any,
                        questions: list[Any], formats: dict[str, AnswerFormat], skills: dict[str, list[str]],
                        plans: dict[str, QuestionPlan], hits: dict[str, list[Any]], draft_tokens: int, seed: int,
                        tick: Callable[[str, int], Callable[[int], None]],
                        ) -> tuple[dict[str, Any], dict[str, tuple[int, int, float]]]:
    """Gate features for every question (drafts by the strongest recruited expert, grouped),
    and each draft's cost (prompt tokens, completion tokens, seconds)."""
    from orchestrator.gate import GateFeatures, draft_confidence, profile_strength

    drafts: dict[str, dict[str, GenerationRequest]] = defaultdict(dict)
    owner: dict[str, tuple[str, str]] = {}
    for q in questions:
        experts = list(dict.fromkeys(s.expert for s in plans[q.id].slots))
        strongest = max(experts, key=lambda e: profile.experts[e].global_competence if e in profile.experts else -1e9)
        request = expert_request(q.question, q.choices, formats[q.id], None, 0.0, seed,
                                 max_tokens=draft_tokens).model_copy(update={"logprobs": 2})
        key = request_key(config.experts[strongest], request)
        drafts[strongest][key] = request
        owner[q.id] = (strongest, key)
    done = run_grouped(drafts, pool, cache, tick, "gate drafts")
    out, cost = {}, {}
    for q in questions:
        experts = list(dict.fromkeys(s.expert for s in plans[q.id].slots))
        draft = done[owner[q.id][1]]
        out[q.id] = GateFeatures(profile_strength=profile_strength(profile, experts, skills[q.id]),
                                 draft_confidence=draft_confidence(draft),
                                 retrieval_score=max((float(h.score) for h in hits[q.id]), default=0.0))
        cost[q.id] = (draft.prompt_tokens, draft.completion_tokens, draft.seconds)
    return out, cost


def run_grouped(jobs: dict[str, dict[str, GenerationRequest]], pool: LoadedPool, cache: GenerationCache,
                tick: Callable[[str, int], Callable[[int], None]], label: str) -> dict[str, Generation]:
    """Run every expert's requests as its own batch, resident experts first (no reload)."""
    resident = pool.loaded()
    done: dict[str, Generation] = {}
    for expert in sorted(jobs, key=lambda e: (e not in resident, e)):
        keys = list(jobs[expert])
        gens = generate_cached(pool.get(expert), [jobs[expert][k] for k in keys], cache,
                               on_done=tick(f"{label} {expert}", len(keys)))
        done.update(zip(keys, gens, strict=True))
    return done


def summarise(samples: list[SampleResult]) -> dict[str, Any]:
    """Accuracy per method x task and per method x subject, tokens and time per method."""
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
    recruited = Counter(e for s in samples if s.method.partition("@")[0] == "symoe" for e in s.experts)
    return {"accuracy": table, "per_subject": subjects, "symoe_recruited": dict(recruited)}


def _stats(rows: list[SampleResult]) -> dict[str, float]:
    n = len(rows)
    return {"n": n, "accuracy": round(100 * sum(r.correct for r in rows) / n, 2) if n else 0.0,
            "retrieval_rate": round(100 * sum(r.retrieved for r in rows) / n, 2) if n else 0.0,
            "prompt_tokens": sum(r.prompt_tokens for r in rows),
            "completion_tokens": sum(r.completion_tokens for r in rows),
            "seconds": round(sum(r.seconds for r in rows), 2),
            "aggregated": sum(r.aggregated for r in rows)}
