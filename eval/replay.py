"""Replay: every router judged on an outcome matrix through the live pipeline, in seconds.

    matrix -> (fit, scored) splits: validation -> test, or k seeded folds (cross-fitting)
    fit split    -> a profile (``eval.matrix_profile``: skills labelled without an LLM)
    scored split -> Query records -> ``Symoe.ask_many(routers)`` under that profile, with a
                    ``ReplayExecutor`` in place of the models: plan, recruitment, combine and
                    extract are the live code; each expert's "generation" is its recorded answer
    each AskResult -> scored by the recorded outcomes of the experts whose answer it gave

What replay cannot do, it says: an aggregator's synthesis needs a live model (the job fails,
so the plan keeps its experts' weighted vote, and the report counts it under ``failed``);
skills come from the profile's labelled neighbours, never from the LLM annotator; retrieval
is off (the matrix recorded answers without it). A question counts as right when the outcome
of the expert whose answer stood has ``correct`` >= 0.5; without recorded answers a vote
scores its experts' mean. The ``oracle`` row (some expert right) is the upper bound.
"""

from __future__ import annotations

import atexit
import gc
import logging
import os
import pickle
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager, nullcontext, suppress
from multiprocessing import get_context
from typing import Any, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict
from threadpoolctl import threadpool_limits

from agents.backends import Generation, TokenLogprob, Usage
from agents.errors import SymoeError
from agents.pool import ExpertSpec
from agents.progress import StageReport, across
from eval.learned_routers import embed_texts, fold_of
from eval.matrix import Matrix, MatrixRow
from eval.matrix_profile import Embed, Labelling, SkillLabeller, profile_from_matrix
from eval.runner import RunStats, SampleResult
from eval.stats import paired_interval
from orchestrator.answers import is_correct
from orchestrator.config import SymoeConfig
from orchestrator.executor import BatchDone, Executor, ExecutorConfig
from orchestrator.expert_methods import UNRECORDED, formats_of, recorded_failure
from orchestrator.methods import MethodSpec, expand_methods
from orchestrator.profiles import Profile
from orchestrator.records import AskResult, Job, Query
from orchestrator.session import Symoe

#: routers a replay runs when none are named: every single expert, the baselines, the routers
DEFAULT_REPLAY_ROUTERS = ("single,best_single,task_best,format_best,random_k[recruit.k=1],majority,clusters,"
                          "clusters:k3,symoe:k1,cascade,budget,learned:knn,learned:knn-task,learned:logreg,learned:mlp,learned:mf")
NO_RECORD = "replay: nothing recorded for this request (a synthesis or an annotation needs a live model)"


def margin_logprobs(answer: str, margin: float | None) -> list[TokenLogprob] | None:
    """A recorded letter margin as the log-probs the live rule (``answer_margin``) reads back."""
    if margin is None or len(answer) != 1:
        return None
    other = "B" if answer == "A" else "A"
    return [TokenLogprob(token=answer, logprob=0.0, top={answer: 0.0, other: -float(margin)})]


class ReplayExecutor:
    """An executor of recorded outcomes: an expert's job on a query gets the answer the matrix
    recorded for it (with its tokens, seconds and letter margin); any other job fails."""

    parallel = False

    def __init__(self, matrix: Matrix) -> None:
        self.rows = {r.id: r for r in matrix.rows}
        #: each (expert, question)'s recorded generation, made once: the routers that ask it share
        #: it, as identical jobs share one (a generation is never changed in place)
        self.made: dict[tuple[str, str], Generation] = {}

    def resident(self) -> list[str]:
        return []

    def close(self) -> None:
        pass

    def generation(self, expert: str, job: Job) -> Generation:
        row = self.rows.get(job.query_id)
        if row is None or expert not in row.outcomes:
            return Generation.failure(expert, NO_RECORD)
        o = row.outcomes[expert]
        text = recorded_failure(o.error) if o.error else o.answer or UNRECORDED
        return Generation(text=text, model=expert, finish_reason="stop",
                          usage=Usage(prompt_tokens=o.prompt_tokens or 0, completion_tokens=o.completion_tokens or 0,
                                      seconds=o.seconds or 0.0),
                          token_logprobs=margin_logprobs(text, o.margin))

    def run(self, model: str, jobs: list[Job], done: BatchDone) -> None:
        for job in jobs:
            made = self.made.get((model, job.query_id))
            if made is None:
                made = self.made[model, job.query_id] = self.generation(model, job)
            job.generation = made
        done(jobs)


def recorded_expert(name: str, live: ExpertSpec | None = None) -> ExpertSpec:
    """An expert known only from a matrix (``backend: recorded``): replayable, not askable. One
    the config also runs live (``live``) keeps the answer formats its method can produce, so
    routers choose among the same experts as live."""
    formats = sorted(formats_of(live)) if live is not None else None
    return ExpertSpec.model_validate({"name": name, "backend": "recorded", "method": "recorded",
                                      "description": "recorded in the matrix", "formats": formats})


def replay_config(config: SymoeConfig, matrix: Matrix, default: str) -> SymoeConfig:
    """``config`` over the matrix's experts, each a recorded one; skills from the profile's
    labelled neighbours, no retrieval, everything in this process."""
    return config.model_copy(update={
        "experts": {e: recorded_expert(e, config.experts.get(e)) for e in matrix.experts}, "default_expert": default,
        "executor": ExecutorConfig(),
        "skills": config.skills.model_copy(update={"source": "neighbours", "annotator": None}),
        "retrieval": config.retrieval.model_copy(update={"mode": "never"})})


def as_replayed(router: str, config: SymoeConfig) -> str:
    """``router`` spelt as replay ran it (``replay_config``), so that a live run of the name
    decides as its replay did: a router that routes on skills takes them from the labelled
    neighbours (``[skills.source=neighbours]``), one that retrieves by default does not
    (``@never``), unless the name already says."""
    spec = MethodSpec.parse(router, config)
    settings = dict(spec.settings)
    if spec.needs_skills:
        settings.setdefault("skills.source", "neighbours")
    named = spec.retrieval_named or spec.impl.retrieves_by_default
    return str(spec.model_copy(update={"retrieval": spec.retrieval if spec.retrieval_named else "never",
                                       "retrieval_named": named, "settings": tuple(settings.items())}))


def row_query(row: MatrixRow, recorded_skills: bool = False, task_known: bool = True) -> Query:
    """The query of a matrix row, in its answer format (``MatrixRow.answer_format``: the one a
    benchmark declares by its gold answer, as ``symoe eval`` does, else the pipeline's); with
    ``recorded_skills``, carrying the row's recorded skills (the LLM annotator's, where the
    matrix has them) so that routing uses them instead of the neighbours' vote; without
    ``task_known``, with no task (as a ``symoe ask`` without ``--task``)."""
    return Query(question=row.question, choices=list(row.choices or []), id=row.id,
                 task=row.task if task_known else None,
                 format=row.answer_format,
                 skills=list(row.skills) if recorded_skills and row.skills else None, max_tokens=None)


def replay_score(result: AskResult, row: MatrixRow) -> float:
    """The recorded ``correct`` of the answer that stood: the best among the experts whose
    recorded answer it is; without recorded answers, the mean of the experts that answered;
    a synthesised answer none of them gave, against the gold answer where the row has one."""
    answered = [a for a in result.expert_answers if a.ok and a.expert in row.outcomes]
    if not answered:
        return 0.0
    if all(a.answer is None for a in answered):
        return float(np.mean([row.outcomes[a.expert].correct for a in answered]))
    final = result.answer if result.extracted else None
    if final is None:
        return 0.0
    same = [row.outcomes[a.expert].correct for a in answered
            if a.answer is not None and is_correct(a.answer, final, result.format)]
    if same:
        return max(same)
    return float(row.answer is not None and is_correct(final, str(row.answer), result.format))


def sample_of(result: AskResult, row: MatrixRow) -> SampleResult:
    usd = [c for a in result.expert_answers if a.expert in row.outcomes
           if (c := row.outcomes[a.expert].cost) is not None]
    score = replay_score(result, row)
    return SampleResult(
        method=result.method, routed=result.routed, question_id=row.id, task=row.task, subject=row.task,
        answer=result.answer if result.extracted else None,
        gold=str(row.answer) if row.answer is not None else "", correct=score >= 0.5,
        experts=result.experts, aggregator=result.aggregator, aggregated=result.aggregated, fallback=result.fallback,
        escalated=result.escalated, failed=result.failed, succeeded=result.succeeded, usage=result.usage,
        skills=result.skills, cost_usd=sum(usd) if usd else None)


def oracle_samples(rows: Sequence[MatrixRow]) -> list[SampleResult]:
    """The upper bound: right when any expert was, at the cost of the cheapest right one."""
    out = []
    for r in rows:
        right = [e for e, o in r.outcomes.items() if o.correct >= 0.5]
        chosen = min(right or list(r.outcomes), key=lambda e: r.outcomes[e].tokens or 0)
        o = r.outcomes[chosen]
        out.append(SampleResult(method="oracle", question_id=r.id, task=r.task, subject=r.task, answer=o.answer,
                                gold=str(r.answer) if r.answer is not None else "", correct=bool(right),
                                experts=[chosen], succeeded=1, failed=0, escalated=None, cost_usd=o.cost,
                                usage=Usage(prompt_tokens=o.prompt_tokens or 0,
                                            completion_tokens=o.completion_tokens or 0, seconds=o.seconds or 0.0)))
    return out


def split_indices(matrix: Matrix, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fit, scored) row positions: validation then test when the matrix has both, else k seeded folds."""
    if "test" in matrix.splits and "validation" in matrix.splits:
        split = np.array([r.split for r in matrix.rows])
        return [(np.flatnonzero(split == "validation"), np.flatnonzero(split == "test"))]
    fold = fold_of(matrix.ids, folds, seed)
    return [(np.flatnonzero(fold != k), np.flatnonzero(fold == k)) for k in range(folds) if (fold == k).any()]


def splits(matrix: Matrix, folds: int, seed: int) -> list[tuple[Matrix, Matrix]]:
    """(fit, scored) pairs: validation then test when the matrix has both, else k seeded folds."""
    return [(matrix.take(fit), matrix.take(scored)) for fit, scored in split_indices(matrix, folds, seed)]


class VectorLookup:
    """Known texts' vectors by lookup, any other text embedded as it comes; picklable, so a
    replay worker process gets the vectors without embedding again."""

    def __init__(self, texts: list[str], vectors: np.ndarray, config: SymoeConfig) -> None:
        self.row = {t: i for i, t in enumerate(texts)}
        self.vectors, self.embedding, self.home = vectors, config.embedding, config.home

    def __call__(self, batch: list[str]) -> np.ndarray:
        if all(t in self.row for t in batch):
            return self.vectors[[self.row[t] for t in batch]]
        return embed_texts(batch, self.embedding, self.home)


def cached_embed(matrix: Matrix, config: SymoeConfig) -> VectorLookup:
    """The pipeline's embedder over the matrix's questions, embedded once (cached by text
    hash in ``<home>/embeddings``); any other text is embedded as it comes."""
    texts = list(dict.fromkeys(r.question for r in matrix.rows))
    return VectorLookup(texts, embed_texts(texts, config.embedding, config.home), config)


class ReplayTask(BaseModel):
    """One process's share of a replay: some routers over every (fit, scored) split."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    config: SymoeConfig
    matrix: Matrix
    pairs: list[tuple[np.ndarray, np.ndarray]]
    labels: list[dict[str, list[str]]]  # each fit split's skills, labelled once by the caller
    routers: list[str]
    seed: int
    embed: Embed
    profile: Profile | None = None
    sweeps: list[tuple[str, list[str]]] | None = None
    one_thread: bool = False  # one worker among others on the same cores: no BLAS or OpenMP threads of its own
    recorded_skills: bool = False  # scored rows route on their recorded skills, not the neighbours' vote
    task_known: bool = True  # scored rows carry their task (False: routers see text and format only)


@contextmanager
def collector_paused() -> Iterator[None]:
    """CPython's cyclic garbage collector off while a replay runs (as it was, after). A replay
    keeps every plan, answer record and sample it makes (hundreds of thousands of pydantic
    records, about a million containers at 2,000 questions), almost none of them in cycles, so
    each full collection walked all of them again to free nothing: a third of the replay's CPU
    time. Reference counting still frees everything that is not a cycle."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class SplitTime(NamedTuple):
    """When one process replayed one split: ``process`` (from ``replay``) 0 is the caller's,
    1.. the spawned workers' in the order they started (``replay_routers`` gives the process
    id); ``split`` counts from 1 in replay order; ``started`` is wall-clock
    (``time.time``, comparable across the processes), ``seconds`` wall and ``cpu`` that
    process's CPU seconds on the split."""

    process: int
    split: int
    started: float
    seconds: float
    cpu: float


def replay_routers(task: ReplayTask, progress: StageReport | None = None,
                   on_split: Callable[[int, int], None] | None = None,
                   ) -> tuple[list[SampleResult], list[int], list[SplitTime]]:
    """The task's routers on each scored split under a profile of its fit split (or the given
    profile); the samples, the generations needed, replayed and failed, and when each split
    ran (numbered from 1 within the task; ``process`` the process id)."""
    samples: list[SampleResult] = []
    counts = [0, 0, 0]
    times: list[SplitTime] = []
    with threadpool_limits(1) if task.one_thread else nullcontext(), collector_paused():
        for number, ((fit_at, scored_at), skills) in enumerate(zip(task.pairs, task.labels, strict=True), 1):
            started, cpu = time.time(), time.process_time()
            fit, scored = task.matrix.take(fit_at), task.matrix.take(scored_at)
            base = replay_config(task.config, task.matrix, fit.best_single() or task.matrix.experts[0])
            if task.profile is not None and task.config.default_expert in task.matrix.experts:
                base = base.model_copy(update={"default_expert": task.config.default_expert})
            used = task.profile or profile_from_matrix(fit, base, skills, source=task.matrix.source)
            executor = ReplayExecutor(scored)

            def recorded(_: Executor, ex: Executor = executor) -> Executor:  # the models' place
                return ex
            names = [str(spec) for spec in expand_methods(",".join(task.routers), base, None, task.sweeps)]
            with Symoe(base, profile=used, use_cache=False, memory_budget=0, progress=progress,
                       wrap_executor=recorded) as symoe:
                symoe.pipeline.embed = task.embed
                rows = {r.id: r for r in scored.rows}
                queries = [row_query(r, task.recorded_skills, task.task_known) for r in scored.rows]
                results = symoe.ask_many(queries, routers=names, seed=task.seed)
                samples += [sample_of(r, rows[r.query_id]) for r in results]
                stats = symoe.pipeline.stats
                counts = [counts[0] + stats.needed, counts[1] + stats.generated, counts[2] + stats.failed]
            times.append(SplitTime(os.getpid(), number, started, time.time() - started, time.process_time() - cpu))
            if on_split is not None:
                on_split(number, len(task.pairs))
    return samples, counts, times


def worker_start() -> None:
    """A replay worker's start. The collector is off for good (the worker lives for one
    replay), as it is in the caller until the replay returns: a worker's samples pickled there
    and read here would otherwise walk each whole heap again (full collections triggered by the
    pickling: seconds at the end of a large replay). And the worker ends without the
    interpreter's teardown: once its answers are sent and the pool is shut down, it flushes its
    output and exits at once, instead of freeing its whole heap object by object (over a second
    at the end of a 10,000-question replay, which the caller would wait for)."""
    gc.disable()
    atexit.register(_exit_now)


def _exit_now() -> None:
    """The worker's end (at exit): its logs and output flushed, then out without the teardown."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with suppress(Exception):
            stream.flush()
    os._exit(0)


#: a worker's copy of the task its replay shares, by the caller's token (read once per worker)
_SHARED: dict[str, ReplayTask] = {}


def replay_piece(token: str, shared: bytes, own: dict[str, Any]) -> tuple[list[SampleResult], list[int],
                                                                          list[SplitTime]]:
    """A worker's ``replay_routers`` on one piece of a replay (a split, or a group of routers):
    the task every piece shares, pickled once by the caller and read once by each worker (the
    matrix and its vectors are most of it), with the piece's own splits and routers."""
    task = _SHARED.get(token)
    if task is None:
        _SHARED.clear()
        task = _SHARED[token] = pickle.loads(shared)
    return replay_routers(task.model_copy(update=own))


#: how much of a replay each router costs, roughly (fits, cluster builds), to share them out
ROUTER_WEIGHT = {"single": 2, "learned:mf": 4, "clusters": 3, "clusters:k3": 3, "budget": 4, "cascade": 3}
#: question x router pairs below which a second process costs more than it saves
PARALLEL_FROM = 20_000


def router_groups(routers: list[str], count: int) -> list[list[str]]:
    """``routers`` shared out over ``count`` groups of about equal weight, each in the given order."""
    groups: list[list[str]] = [[] for _ in range(count)]
    load = [0] * count
    for r in sorted(routers, key=lambda r: -ROUTER_WEIGHT.get(r.partition("[")[0], 2)):
        i = load.index(min(load))
        groups[i].append(r)
        load[i] += ROUTER_WEIGHT.get(r.partition("[")[0], 2)
    order = {r: n for n, r in enumerate(routers)}
    return [sorted(g, key=order.__getitem__) for g in groups if g]


def split_shares(splits: int, count: int) -> list[tuple[int, int]]:
    """``splits`` consecutive splits cut into ``count`` runs, [start, end), the larger ones
    first (this process takes the first: the others start later, paying their imports)."""
    sizes = [splits // count + (i < splits % count) for i in range(count)]
    ends = np.cumsum(sizes).tolist()
    return [(int(end - size), int(end)) for size, end in zip(sizes, ends, strict=True)]


def split_processes(splits: int, cores: int) -> int:
    """How many processes share ``splits`` whole splits on ``cores`` cores: the fewest whose
    largest share is at most a core's part of the work (rounded down to whole splits, at least
    one), so that no core runs a last split alone while the others wait: 5 folds on 2 cores go
    to 3 processes (2, 2 and 1 folds, 2.5 folds' time on each core) rather than 2 (3 and 2)."""
    if cores <= 1 or splits <= 1:
        return 1
    most = max(1, splits // cores)
    return min(splits, -(-splits // most))


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@collector_paused()
def replay(config: SymoeConfig, matrix: Matrix, routers: list[str], *, folds: int = 5, seed: int = 0,
           labelling: Labelling = "vocabulary", profile: Profile | None = None, progress: StageReport | None = None,
           labeller: SkillLabeller | None = None, on_split: Callable[[int, int], None] | None = None,
           sweeps: list[tuple[str, list[str]]] | None = None,
           workers: int | None = None, recorded_skills: bool = False, task_known: bool = True,
           timeline: list[SplitTime] | None = None) -> tuple[list[SampleResult], RunStats]:
    """Every router on the scored questions of each split, fitted on the rest; with the oracle.
    A given ``profile`` routes every question of the matrix instead (nothing is fitted): replay
    then decides as a live run under that profile does. A given ``labeller`` (over this
    matrix's questions) is used instead of building one for ``labelling``. ``sweeps`` run each
    router that reads a key once per value (``--sweep``). ``workers`` cores share the work
    (default: every core for a large replay, else one): whole splits per process where there
    are several (cross-fitting), in as many processes as keep every core busy to the end
    (``split_processes``), else the routers, one process per core; the answers, and their
    order, are the same however many there are. ``recorded_skills`` routes each scored question on the skills its
    row records (the LLM's keywords: what a live ``skills.source: llm`` run sees) instead of
    its labelled neighbours' vote (no LLM: ``skills.source: neighbours``); without
    ``task_known`` the scored questions carry no task (``row_query``). A given ``timeline``
    receives when each process replayed each split (``SplitTime``; splits numbered in replay
    order where processes hold whole splits). The garbage collector is paused while it runs
    (``collector_paused``), and for good in its worker processes."""
    if not len(matrix):
        raise SymoeError(f"{matrix.source}: the matrix holds no questions")
    started = time.perf_counter()
    pairs = ([(np.arange(len(matrix)), np.arange(len(matrix)))] if profile is not None
             else split_indices(matrix, folds, seed))
    if workers is None:
        workers = cores() if len(matrix) * len(routers) >= PARALLEL_FROM else 1
    by_split = workers > 1 and len(pairs) > 1
    processes = split_processes(len(pairs), workers) if by_split else max(1, min(workers, len(routers)))
    # labelled before any worker starts: the vocabulary's embedding (torch) and the labels'
    # products (BLAS) run on threads that wait on each other, ten times slower on a busy core
    embed = labeller.embed if labeller is not None else cached_embed(matrix, config)
    if labeller is None and profile is None:
        labeller = SkillLabeller(config, embed, labelling)
    labels: list[dict[str, list[str]]] = [{} for _ in pairs]
    if labeller is not None and profile is None:  # each question once: its skills do not depend on the others'
        every, ids = labeller(matrix), matrix.ids
        labels = [{ids[i]: every[ids[i]] for i in fit.tolist()} for fit, _ in pairs]
    if by_split:  # whole splits per process: no profile, cluster build or fit made twice
        tasks = [ReplayTask(config=config, matrix=matrix, pairs=pairs[a:b], labels=labels[a:b], routers=routers,
                            seed=seed, embed=embed, profile=profile, sweeps=sweeps, one_thread=True,
                            recorded_skills=recorded_skills, task_known=task_known)
                 for a, b in split_shares(len(pairs), processes)]
    else:  # one split (validation -> test): its routers shared out
        tasks = [ReplayTask(config=config, matrix=matrix, pairs=pairs, labels=labels, routers=group, seed=seed,
                            embed=embed, profile=profile, sweeps=sweeps, one_thread=processes > 1,
                            recorded_skills=recorded_skills, task_known=task_known)
                 for group in router_groups(routers, processes)]
    report = across(progress, len(tasks[0].pairs)) if progress is not None else None
    if len(tasks) == 1:
        done = [replay_routers(tasks[0], report, on_split)]
    else:  # the first task here, the others' in fresh processes (spawned: no forked model threads)
        # one piece at a time (a split, or a group of routers), so that each piece's answers come
        # back while the rest run, not all of them at the end
        pieces = [{"pairs": [pair], "labels": [label], "routers": t.routers}
                  for t in tasks[1:] for pair, label in zip(t.pairs, t.labels, strict=True)]
        offsets = [0, *(len(tasks[0].pairs) + n for n in range(len(pieces)))] if by_split else [0] * (len(pieces) + 1)
        shared, token = pickle.dumps(tasks[1], protocol=pickle.HIGHEST_PROTOCOL), uuid.uuid4().hex
        with ProcessPoolExecutor(len(tasks) - 1, mp_context=get_context("spawn"), initializer=worker_start) as pool:
            others = [pool.submit(replay_piece, token, shared, piece) for piece in pieces]
            done = [replay_routers(tasks[0], report, on_split), *(f.result() for f in others)]
    if by_split or len(done) == 1:  # the splits in order, as one process gives them
        samples = [s for part, _, _ in done for s in part]
    else:
        names = expand_methods(",".join(routers), replay_config(config, matrix, matrix.experts[0]), None, sweeps)
        order = {str(m): n for n, m in enumerate(names)}
        samples = sorted((s for part, _, _ in done for s in part), key=lambda s: order.get(s.method, len(order)))
    counts = [sum(c[i] for _, c, _ in done) for i in range(3)]
    if timeline is not None:  # processes numbered: this one 0, the workers in the order they started
        times = [t._replace(split=offset + t.split) for offset, (_, _, ts) in zip(offsets, done, strict=True)
                 for t in ts] if len(done) > 1 else done[0][2]
        pids = [os.getpid(), *sorted({t.process for t in times} - {os.getpid()},
                                     key=lambda p: min(t.started for t in times if t.process == p))]
        timeline += sorted((t._replace(process=pids.index(t.process)) for t in times),
                           key=lambda t: (t.process, t.started))
    samples += oracle_samples([matrix.rows[int(i)] for _, scored in pairs for i in scored])
    stats_ = RunStats(questions=sum(len(s) for _, s in pairs), generations_needed=counts[0], generated=counts[1],
                      from_cache=0, failed=counts[2], loads=[], wall_seconds=round(time.perf_counter() - started, 2))
    return samples, stats_


#: the most tokens per question a profile's default router may spend, as a multiple of best_single's
MAX_COST_RATIO = 1.5


def matrix_default_router(samples: list[SampleResult], candidates: Sequence[str],
                          max_cost_ratio: float | None = MAX_COST_RATIO) -> str | None:
    """The router among ``candidates`` (the routers a profile may default to) of best replayed
    accuracy; ties go to the cheaper in tokens per question. With ``max_cost_ratio`` (and a
    matrix that records tokens) only routers spending at most that many times best_single's
    tokens per question may win: a default is asked at every question, so it must stay near
    its best expert's cost (the issue's 1.5x); best_single itself always qualifies. When the
    most accurate does not beat best_single beyond noise (its paired 95% interval reaches
    0), the default is the cheapest router that ties best_single (its interval reaches 0 from
    either side, and it answered at most one question fewer right: a one-question difference
    is a tie): nothing pays for the extra tokens, and a router behind best_single on these
    very questions is not chosen only because its interval is wide."""
    by: dict[str, list[SampleResult]] = {}
    for s in samples:
        if s.method in candidates:
            by.setdefault(s.method, []).append(s)
    if not by:
        return None

    def tokens(m: str) -> float:
        rows = by[m]
        return sum(r.usage.prompt_tokens + r.usage.completion_tokens for r in rows) / len(rows)

    def key(m: str) -> tuple[float, float]:
        rows = by[m]
        return sum(r.correct for r in rows) / len(rows), -tokens(m)

    allowed = sorted(by)
    if max_cost_ratio and "best_single" in by and tokens("best_single") > 0:
        cap = max_cost_ratio * tokens("best_single")
        allowed = [m for m in allowed if tokens(m) <= cap]
    best = max(allowed, key=key)
    if "best_single" not in by or best == "best_single":
        return best
    reference = {(s.question_id): s.correct for s in by["best_single"]}

    def versus_best_single(m: str) -> tuple[float, float]:
        rows = [s for s in by[m] if s.question_id in reference]
        return paired_interval([s.correct for s in rows], [reference[s.question_id] for s in rows])

    if versus_best_single(best)[0] > 0:
        return best
    def right(m: str) -> float:
        return sum(s.correct for s in by[m])

    tying = [m for m in allowed if versus_best_single(m)[1] >= 0 and right(m) >= right("best_single") - 1]
    return min(tying, key=lambda m: (tokens(m), -key(m)[0]))


#: routers a profile may default to (``Profile.router``): the deciding ones, not single experts
PROFILE_ROUTERS = ("best_single,task_best,format_best,clusters,clusters:k3,majority,symoe:k1,cascade,budget,"
                   "learned:knn,learned:knn-task,learned:logreg,learned:mlp,learned:mf")


def pool_with_recorded(config: SymoeConfig, matrix: Matrix) -> SymoeConfig:
    """``config`` with the matrix's experts it lacks added as recorded ones (a profile from the
    matrix is made for this pool: the config's own experts keep their identity)."""
    extra = {e: recorded_expert(e) for e in matrix.experts if e not in config.experts}
    return config.model_copy(update={"experts": {**config.experts, **extra}}) if extra else config


def profile_by_replay(config: SymoeConfig, matrix: Matrix, *, folds: int = 5, seed: int = 0,
                      labelling: Labelling = "vocabulary", candidates: str = PROFILE_ROUTERS,
                      progress: StageReport | None = None, max_cost_ratio: float | None = MAX_COST_RATIO,
                      task_known: bool = False) -> tuple[Profile, list[SampleResult], RunStats]:
    """The profile of the matrix's validation split, its default router the winner of
    cross-fitted replay of ``candidates`` on that split (ties: the cheaper in tokens) among
    those within ``max_cost_ratio`` x best_single's tokens per question. The replay sees
    questions as the profile's router will (``task_known=False``: as ``symoe ask``, the
    server and the chat model, which route by the profile's router, see them: text and
    format, no task; a router that needs the task then answers as best_single)."""
    fit = matrix.select(split="validation")
    if not len(fit):
        raise SymoeError(f"{matrix.source} has no validation questions to build a profile from")
    routers = [r.strip() for r in (candidates if has_answers(matrix) else without_votes(candidates)).split(",")
               if r.strip()]
    labeller = SkillLabeller(config, cached_embed(fit, config), labelling)
    samples, stats = replay(config, fit, routers, folds=folds, seed=seed, labeller=labeller, progress=progress,
                            task_known=task_known)
    names = [s.method for s in samples if s.method != "oracle"]
    profile = profile_from_matrix(fit, pool_with_recorded(config, matrix), labeller(fit), source=matrix.source)
    winner = matrix_default_router(samples, names, max_cost_ratio)
    summary = {m: round(100 * sum(s.correct for s in samples if s.method == m)
                        / max(1, sum(s.method == m for s in samples)), 2) for m in dict.fromkeys(names)}
    profile.router = as_replayed(winner, pool_with_recorded(config, matrix)) if winner else winner
    profile.data.update({"labelling": labelling, "replay": {"folds": folds, "seed": seed, "accuracy": summary,
                                                            "winner": winner, "max_cost_ratio": max_cost_ratio,
                                                            "task_known": task_known}})
    return profile, samples, stats


def has_answers(matrix: Matrix) -> bool:
    """Whether the matrix records the experts' answers (votes need them)."""
    return any(o.answer is not None for r in matrix.rows[:50] for o in r.outcomes.values())


def without_votes(routers: str) -> str:
    return ",".join(r for r in routers.split(",") if r not in ("majority", "clusters:k3"))


def default_routers(matrix: Matrix) -> str:
    """The default router list, less the votes a matrix without recorded answers cannot replay."""
    return DEFAULT_REPLAY_ROUTERS if has_answers(matrix) else without_votes(DEFAULT_REPLAY_ROUTERS)

