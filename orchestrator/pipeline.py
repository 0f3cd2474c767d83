"""The one query pipeline, batch-first: every face of symoe (``symoe ask``, the Python API,
evaluation, profiling, benchmarks) runs these stages over lists of typed records.

    annotate(queries)          skills of the queries whose methods need them (LLM jobs)
    plan(queries, methods)     one Plan per (query, method): slots, combine rule, aggregator
    gate(plans)                retrieve or not (index search; the gate's draft jobs)
    answer(plans)              the experts' jobs, run by ``execute``; a reply that ran out
                               before its answer gets its method's short second turn
    combine(plans)             agree / fall back to the next candidate or the default expert /
                               synthesise / majority
    extract(plans)             the final answer in the query's format, steps and usage

``plan`` hands each method a profile of the experts whose method can produce the query's
answer format (``expert_methods.answers_in``), so no router sends a question to an expert
that cannot answer it. A plan whose every expert failed falls back (``_fall_back``, for
methods that ``falls_back``) to its method's next candidate, then to the default expert;
the record says so (``ExpertAnswer.fallback``, ``Plan.fallback``).

A query's few texts are embedded (and the retrieval index searched, and an annotation's
keywords matched to skills) on a thread of their own
that runs torch on one core (``embed_few``): a dozen tokens gain nothing from a second core,
and while another process or a generation holds it, torch's threads waiting on each other
made one question's embedding 400 ms instead of 10.

``execute(jobs)`` is the one place that calls backends: it runs identical requests once,
groups the rest by model (resident models first, so each model loads once per stage) and
hands each group to the executor, which the generation cache wraps (``CachingExecutor``,
``orchestrator.caching``: cache reads and writes, claims shared with other processes,
stats). ``orchestrator.graph``
chains the stages as a langgraph graph; ``run`` invokes it.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from agents.backends import Generation, GenerationRequest, Usage
from agents.cache import GenerationCache, request_key
from agents.embedder import embed_texts, encode
from agents.errors import SymoeError
from agents.pool import ExpertSpec
from agents.progress import StageReport, ignore
from agents.runtime import LoadedPool
from orchestrator.aggregate import majority, synthesis_request
from orchestrator.answers import answer_margin, detect_format, expert_request, extract
from orchestrator.caching import CachingExecutor, ExecutionStats
from orchestrator.caching import checked as checked  # noqa: F401  (importable from here, as before)
from orchestrator.clusters import ClusterRouter
from orchestrator.config import SymoeConfig
from orchestrator.executor import BatchDone, Executor, LocalExecutor
from orchestrator.expert_methods import ExpertMethod, Reading, answers_in, expert_method, finished
from orchestrator.gate import GateModel, RetrieverLike, draft_confidence, load_gate, profile_strength
from orchestrator.learned import ExampleTable, LearnedRouter
from orchestrator.learned import routers as learned_routers
from orchestrator.methods import Assignment, CascadeRound, MethodContext, MethodSpec, slot_key
from orchestrator.profiles import Profile, ProfiledExample, load_profile
from orchestrator.records import (
    AnswerFormat,
    ExpertAnswer,
    GateFeatures,
    Job,
    Query,
    RetrievalDecision,
    Slot,
    StepUsage,
)
from retrieval.index import default_index_dir, open_index
from retrieval.records import Hit, best_score, format_passages
from skills.annotate import SkillAnnotation, annotation_from, annotation_requests
from skills.config import SkillSource
from skills.neighbours import NeighbourSkills, confident
from skills.vocabulary import SkillMatcher


class GateRound(BaseModel):
    """The retrieval gate's work on one plan: its decision (with the passages it retrieved),
    the index search's time, and the strongest expert's short draft (``auto``)."""

    decision: RetrievalDecision
    search_seconds: float = 0.0
    draft_job: Job | None = None


class Plan(BaseModel):
    """One query under one method, from assignment to final answer. Jobs carry their results.
    What every method needs is a field; the gate's work is one record (``gate_round``), and a
    cascade's own state is the cascade's (``cascade``)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    query: Query
    method: MethodSpec
    seed: int
    format: AnswerFormat
    assignment: Assignment
    annotation: SkillAnnotation | None = None
    annotation_jobs: list[Job] = Field(default_factory=list)
    gate_round: GateRound | None = None
    cascade: CascadeRound | None = Field(default=None, description="a cascade's first round (None: no cascade)")
    answer_jobs: list[Job] = Field(default_factory=list)
    #: the experts asked, in turn, after every slot failed (the last one answered, or failed too)
    fallback_jobs: list[Job] = Field(default_factory=list)
    synthesis_job: Job | None = None
    answers: list[ExpertAnswer] = Field(default_factory=list)
    text: str = ""
    answer: str | None = None
    aggregator: str | None = None
    aggregated: bool = False
    error: str | None = Field(default=None, description="every recruited expert failed, and the default expert too")
    steps: list[StepUsage] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    on_text: Callable[[str], None] | None = Field(default=None, exclude=True, repr=False,
                                                 description="receives the final answer's text as it is produced")

    @property
    def skills(self) -> list[str]:
        return self.annotation.skills if self.annotation else []

    @property
    def experts(self) -> list[str]:
        """The distinct experts of the slots, heaviest first when recruited by weight."""
        rec = self.assignment.recruitment
        if rec is not None:
            return [r.expert for r in rec.recruits]
        return list(dict.fromkeys(s.expert for s in self.assignment.slots))

    @property
    def fallback_job(self) -> Job | None:
        """The last fallback asked (the one that answered, when one did)."""
        return self.fallback_jobs[-1] if self.fallback_jobs else None

    @property
    def fallback(self) -> str | None:
        return self.fallback_job.model if self.fallback_job else None

    # -- the gate's record, read as before ---------------------------------------------------
    @property
    def retrieval(self) -> RetrievalDecision | None:
        return self.gate_round.decision if self.gate_round else None

    @property
    def context(self) -> str | None:
        """The retrieved passages the experts read (None: nothing retrieved)."""
        decision = self.retrieval
        return format_passages(decision.passages) if decision is not None and decision.retrieved else None

    # -- the cascade's record, read as before ------------------------------------------------
    @property
    def escalated(self) -> bool | None:
        """A cascade: False when its first experts' answer stood, True when it escalated (None: no cascade)."""
        return self.cascade.escalated if self.cascade else None

    @property
    def first_answers(self) -> list[ExpertAnswer]:
        return self.cascade.first_answers if self.cascade else []


class Pipeline:
    """What the stages share: config, pool and executor, cache, profile, retriever, gate.

    Heavy parts load on first use: the skill matcher (embeddings) when a method needs skills,
    the profile when a method routes by it, the index when a plan retrieves.
    """

    def __init__(self, config: SymoeConfig, *, pool: LoadedPool | None = None, executor: Executor | None = None,
                 cache: GenerationCache | None = None, profile: Profile | None = None,
                 profile_path: Path | None = None, retriever: RetrieverLike | None = None,
                 gate: GateModel | None = None, progress: StageReport | None = None, grouped: bool = True,
                 available: Callable[[], set[str]] | None = None) -> None:
        self.config = config
        self.available = available  # experts that may be recruited now (a server's health); None: all
        self.pool = pool or LoadedPool(config.experts, config.home)
        self.executor = CachingExecutor(executor or LocalExecutor(self.pool), cache, self.job_key)
        self.progress = progress or ignore
        self.grouped = grouped
        self._profile = profile
        self.profile_path = profile_path
        self._retriever = retriever
        self._retriever_problem: str | None = None
        self._retriever_opened = retriever is not None
        self._gate = gate
        self._matcher: SkillMatcher | None = None
        self._neighbours: NeighbourSkills | None = None
        self._clusters: dict[tuple[str, int, bool], ClusterRouter] = {}
        #: (id of a profile, format) -> (that profile, its experts that can answer in the format)
        self._by_format: dict[tuple[int, str], tuple[Profile, Profile]] = {}
        self._learned: dict[str, LearnedRouter] = {}
        self._example_vectors: np.ndarray | None = None
        #: how question texts become vectors (clusters, learned routers); replay swaps in a cached lookup
        self.embed: Callable[[list[str]], np.ndarray] = lambda texts: embed_few(
            lambda: self._encode(texts), len(texts))
        self._lock = threading.RLock()  # the server runs several requests' stages at once

    def _encode(self, texts: list[str]) -> np.ndarray:
        """A query's few texts encoded now; many (the profile's questions, for neighbours,
        clusters and learned routers) from the on-disk cache by text hash, so a new process
        does not embed the profile again (a cold ``symoe ask``); encoded now where the home
        is not writable."""
        if len(texts) <= FEW_TEXTS:
            return encode(texts, self.config.embedding)
        try:
            return embed_texts(texts, self.config.embedding, self.config.home)
        except (SymoeError, OSError):
            return encode(texts, self.config.embedding)

    @property
    def cache(self) -> GenerationCache | None:
        """The generation cache the executor reads and stores (None: none)."""
        return self.executor.cache

    @cache.setter
    def cache(self, cache: GenerationCache | None) -> None:
        self.executor.cache = cache

    @property
    def stats(self) -> ExecutionStats:
        """What was needed, generated, read from the cache and failed over the pipeline's life."""
        return self.executor.stats

    def job_key(self, job: Job) -> str:
        """The cache key of a job's request: identical requests share it (and run once)."""
        return request_key(self.spec(job.model), job.request)

    def engine(self, job: Job) -> str:
        """The model entry that runs a job: an expert's methods share their model's batch."""
        return self.spec(job.model).load_as

    # -- lazily loaded parts ------------------------------------------------------------
    @property
    def annotator(self) -> str:
        return self.config.skills.annotator or self.config.default_expert

    @property
    def matcher(self) -> SkillMatcher:
        with self._lock:
            if self._matcher is None:
                self._matcher = SkillMatcher(self.config.embedding, self.config.skills.match_threshold)
            return self._matcher

    @property
    def neighbours(self) -> NeighbourSkills:
        """The profile's labelled validation questions, embedded once (``skills.source``)."""
        with self._lock:
            if self._neighbours is None:
                examples = self.profile.examples
                if not examples:
                    raise SymoeError(f"skills.source {self.config.skills.source} needs a profile with its labelled "
                                     "questions; this one has none: rebuild it with `symoe profile build`")
                self._neighbours = NeighbourSkills(examples, self.config.embedding, self.config.skills.neighbours,
                                                   self.config.skills.neighbour_share, embed=self.embed)
            return self._neighbours

    def cluster_router(self, config: SymoeConfig | None = None) -> ClusterRouter:
        """The profile's graded questions, embedded once and clustered once per setting
        (``clusters:``, ``budget.team``) of ``config`` (default: the pipeline's)."""
        config = config or self.config
        with self._lock:
            examples = self.graded_examples()
            if not examples:
                raise SymoeError("the clusters and budget methods need a profile whose questions record each "
                                 "expert's outcome; this one has none: rebuild it with `symoe profile build`")
            vectors = self.example_vectors()
            # k picks, not clusters
            key = (config.clusters.model_dump_json(exclude={"k"}), config.budget.team, config.budget.sure_first)
            if key not in self._clusters:
                self._clusters[key] = ClusterRouter(examples, vectors, config.clusters,
                                                    seed=self.config.seed, teams=config.budget.team,
                                                    sure_first=config.budget.sure_first)
            return self._clusters[key]

    def graded_examples(self) -> list[ProfiledExample]:
        """The profile's questions that record each expert's outcome (clusters and learned routers fit on them)."""
        return [e for e in self.profile.examples if e.correct]

    def example_vectors(self) -> np.ndarray:
        """The profile's graded questions, embedded once."""
        with self._lock:
            if self._example_vectors is None:
                self._example_vectors = self.embed([e.question for e in self.graded_examples()])
            return self._example_vectors

    def learned_router(self, name: str) -> LearnedRouter:
        """The learned router ``name`` (``orchestrator.learned``), fitted once on the profile's
        graded questions."""
        with self._lock:
            if name not in self._learned:
                examples = self.graded_examples()
                if not examples:
                    raise SymoeError(f"router learned:{name} needs a profile whose questions record each expert's "
                                     "outcome; this one has none: rebuild it with `symoe profile build`")
                table = ExampleTable(examples, sorted(self.profile.experts))
                router = learned_routers.get(name)(seed=self.config.seed)
                self._learned[name] = router.fit(table, self.example_vectors())
            return self._learned[name]

    @property
    def profile(self) -> Profile:
        with self._lock:
            if self._profile is None:
                self._profile, self.profile_path = load_profile(self.config, self.profile_path)
            return self._profile

    def use_profile(self, path: Path | None) -> None:
        """Route by the profile at ``path`` from now on (None: the configured or shipped one),
        loaded on first use; what was built from the previous profile (its neighbours, its
        clusters) is dropped with it. The same path again changes nothing."""
        with self._lock:
            if path == self.profile_path:
                return
            self.profile_path, self._profile = path, None
            self._neighbours, self._example_vectors = None, None
            self._clusters.clear()
            self._by_format.clear()
            self._learned.clear()

    @property
    def loaded_profile(self) -> Profile | None:
        """The profile if one is loaded already (methods that need one load it)."""
        return self._profile

    @property
    def gate_model(self) -> GateModel:
        with self._lock:
            if self._gate is None:
                self._gate = load_gate(self.config.retrieval.gate, self.config.home)
            return self._gate

    def retriever(self) -> tuple[RetrieverLike | None, str | None]:
        """The index (``retrieval.index``, else the built-in corpus index), or the reason there is none."""
        with self._lock:
            return self._open_retriever()

    def _open_retriever(self) -> tuple[RetrieverLike | None, str | None]:
        if not self._retriever_opened:
            self._retriever_opened = True
            path = self.config.retrieval.index or default_index_dir(self.config.home)
            if not path.exists():
                self._retriever_problem = (f"no index at {path}; build one with `symoe index corpus` "
                                           "or `symoe index build PATH`")
            else:
                try:
                    self._retriever = open_index(path, self.config.embedding)
                except SymoeError as exc:
                    self._retriever_problem = str(exc)
        return self._retriever, self._retriever_problem

    def spec(self, model: str) -> ExpertSpec:
        return self.config.expert(model)

    def answers(self, expert: str, fmt: AnswerFormat) -> bool:
        """Whether this expert's method can produce an answer in ``fmt`` (``answers_in``)."""
        return answers_in(self.spec(expert), fmt)

    def for_format(self, profile: Profile | None, fmt: AnswerFormat) -> Profile | None:
        """The profile's experts whose method can produce ``fmt`` (its aggregators and graded
        questions unchanged; all of them when none can), built once per profile and format so
        what a router counts on it is counted once."""
        if profile is None:
            return None
        with self._lock:
            key = (id(profile), fmt)
            known = self._by_format.get(key)
            if known is not None and known[0] is profile:
                return known[1]
            able = {e: p for e, p in profile.experts.items() if e in self.config.experts and self.answers(e, fmt)}
            restricted = profile if len(able) in (0, len(profile.experts)) else profile.model_copy(
                update={"experts": able})
            if len(self._by_format) >= 64:  # a server restricts the profile per call: keep the cache small
                self._by_format.clear()
            self._by_format[key] = (profile, restricted)
            return restricted

    def method(self, expert: str) -> ExpertMethod:
        """How the expert answers (its ``method``: standard, direct, cot, program...)."""
        return expert_method(self.spec(expert).method)

    def close(self) -> None:
        self.pool.close()


# -- a query's embedding, on one core ------------------------------------------------------
#: at most this many texts are embedded on the one-core thread; more go on torch's own threads
FEW_TEXTS = 16
_one_core: ThreadPoolExecutor | None = None
_one_core_lock = threading.Lock()
T = TypeVar("T")


def _torch_on_one_thread() -> None:
    """The embedding thread's torch runs on one thread; threads started later keep the count
    they had (``torch.set_num_threads`` also sets it for them: it is put back from a thread of
    its own)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    restore = threading.Thread(target=torch.set_num_threads, args=(before,))
    restore.start()
    restore.join()


def embed_few(work: Callable[[], T], texts: int) -> T:
    """``work`` (an embedding of ``texts`` texts, or an index search) on the one-core embedding
    thread when the texts are few, else here."""
    global _one_core
    if texts > FEW_TEXTS:
        return work()
    with _one_core_lock:
        if _one_core is None:
            _one_core = ThreadPoolExecutor(1, thread_name_prefix="symoe-embed", initializer=_torch_on_one_thread)
    return _one_core.submit(work).result()


# -- execute: the one place that calls backends -----------------------------------------
def execute(ctx: Pipeline, jobs: list[Job], stage: str) -> None:
    """Fill every job's generation: identical requests run once; the rest go to the executor
    grouped by model, resident models first. The executor is a ``CachingExecutor``: it reads
    the cache, stores each finished batch at once, and leaves the jobs another live process
    has claimed, handed again here after the other models until they are read."""
    groups: dict[str, list[Job]] = {}
    keys: dict[tuple[str, int], str] = {}  # jobs sharing one request object (``answer``) hash it once
    for job in jobs:
        if job.generation is None:
            at = (job.model, id(job.request))
            key = keys.get(at)
            if key is None:
                key = keys[at] = ctx.job_key(job)
            same = groups.setdefault(key, [])
            # a job someone reads as it is produced runs for its group: it goes first
            same.insert(0 if job.on_text is not None else len(same), job)
    todo = [same[0] for same in groups.values()]
    done = _sharing(ctx, groups, stage)
    while todo:
        _dispatch(ctx, todo, done)
        todo = [job for job in todo if job.generation is None]


def _sharing(ctx: Pipeline, groups: dict[str, list[Job]], stage: str) -> BatchDone:
    """What a finished batch does: its generations go to the identical jobs, its count to progress."""
    same = {id(jobs[0]): jobs[1:] for jobs in groups.values()}
    per_model = Counter(ctx.engine(jobs[0]) for jobs in groups.values())

    def done(batch: list[Job]) -> None:
        for job in batch:
            for other in same[id(job)]:
                other.generation, other.cached = job.generation, job.cached
                if job.cached and other.on_text is not None and job.generation and job.generation.text:
                    other.on_text(job.generation.text)
        if batch:
            model = ctx.engine(batch[0])
            ctx.progress(f"{stage}: {model}", len(batch), per_model[model])
    return done


def _dispatch(ctx: Pipeline, jobs: list[Job], done: BatchDone) -> None:
    """Hand each model its jobs: resident models first; side by side where the executor allows;
    one call per job, in order, when grouping is off (the naive baseline)."""
    todo: dict[str, list[Job]] = {}
    for job in jobs:
        todo.setdefault(ctx.engine(job), []).append(job)  # an expert's methods share their model's batch
    resident = ctx.executor.resident()
    order = sorted(todo, key=lambda m: (m not in resident, list(todo).index(m)))
    if ctx.grouped and ctx.executor.parallel and len(order) > 1:
        with ThreadPoolExecutor(len(order)) as models:  # e.g. one Ray actor per model, side by side
            for running in [models.submit(ctx.executor.run, m, todo[m], done) for m in order]:
                running.result()
    elif ctx.grouped:
        for model in order:
            ctx.executor.run(model, todo[model], done)
    else:
        for model, group in todo.items():
            for job in group:
                ctx.executor.run(model, [job], done)


# -- the stages ---------------------------------------------------------------------------
def annotate(ctx: Pipeline, queries: list[Query], seed: int,
             source: SkillSource | None = None) -> dict[str, tuple[SkillAnnotation, list[Job]]]:
    """Skills of each query: the caller's where the query carries them (``Query.skills``), else
    by ``skills.source``: voted by its labelled neighbours in the profile (``neighbours``;
    ``hybrid`` where they are close and agree), else from the annotator's samples (jobs),
    voted onto the vocabulary. ``source`` overrides the config's (a router's own setting)."""
    out: dict[str, tuple[SkillAnnotation, list[Job]]] = {
        q.id: (SkillAnnotation(question=q.question, skills=list(q.skills), source="given"), [])
        for q in queries if q.skills is not None}
    queries = [q for q in queries if q.skills is None]
    settings = ctx.config.skills if source is None else ctx.config.skills.model_copy(update={"source": source})
    if settings.source != "llm" and queries:
        by_llm = []
        for q, vote in zip(queries, ctx.neighbours.vote([q.question for q in queries]), strict=True):
            if settings.source == "neighbours" or confident(vote, settings.hybrid_min_similarity,
                                                            settings.hybrid_min_agreement):
                out[q.id] = (SkillAnnotation(question=q.question, skills=vote.skills, source="neighbours",
                                             nearest=vote.nearest), [])
            else:
                by_llm.append(q)
        queries = by_llm
    jobs = {q.id: [Job(model=ctx.annotator, request=r) for r in annotation_requests(q.question, settings, seed)]
            for q in queries}
    execute(ctx, [j for js in jobs.values() for j in js], "annotate")
    for q in queries:
        replies = [j.generation.text if j.ok and j.generation else None for j in jobs[q.id]]
        to_skills = partial(annotation_from, q.question, replies, ctx.matcher, settings, ctx.annotator)
        out[q.id] = (embed_few(to_skills, 1), jobs[q.id])  # its keywords embedded on one core
    return out


def plan(ctx: Pipeline, queries: list[Query], methods: list[MethodSpec], seed: int) -> list[Plan]:
    """One plan per (method, query); annotation runs once per query and skill source (the
    config's, or a router's own ``skills.source``), for methods that need it."""
    profile = ctx.profile if any(m.impl.needs_profile for m in methods) else ctx.loaded_profile  # fails fast
    if profile is not None and ctx.available is not None:  # experts cooled down by a server are not recruited
        healthy = ctx.available()
        profile = profile.restricted([e for e in profile.experts if e in healthy] or list(profile.experts))
    distinct = list({q.id: q for q in queries}.values())
    sources = {m.configured(ctx.config).skills.source for m in methods if m.needs_skills}
    annotations = {source: annotate(ctx, distinct, seed, source) for source in sorted(sources)}
    embedded = [m for m in methods if m.impl.needs_clusters or m.impl.needs_scores]
    vectors = ctx.embed([q.question for q in distinct]) if embedded else None
    ids = [q.id for q in distinct]
    formats = {q.id: q.format or detect_format(q.question, q.choices) for q in distinct}
    plans = []
    for method in methods:
        config = method.configured(ctx.config)  # the name's own settings, if any
        mctx = MethodContext(config=config, profile=profile, seed=seed)
        if method.impl.needs_clusters and vectors is not None:
            mctx.clusters = dict(zip(ids, ctx.cluster_router(config).nearest(vectors), strict=True))
        if method.impl.needs_scores and vectors is not None and method.variant:
            router = ctx.learned_router(method.variant)
            predicted = router.score(vectors, [q.task or "" for q in distinct], [formats[q.id] for q in distinct])
            mctx.scores = {qid: dict(zip(router.experts, map(float, row), strict=True))
                           for qid, row in zip(ids, predicted, strict=True)}
        by_format: dict[str, MethodContext] = {}
        for q in queries:
            annotation, jobs = annotations[config.skills.source].get(q.id, (None, [])) if method.needs_skills \
                else (None, [])
            skills = annotation.skills if annotation else []
            fmt = formats[q.id]
            if fmt not in by_format:  # the method chooses among the experts that can answer in this format
                by_format[fmt] = mctx.model_copy(update={"format": fmt, "profile": ctx.for_format(profile, fmt)})
            assignment = method.impl.assign(by_format[fmt], q, skills, method.variant)
            plans.append(Plan(query=q, method=method, seed=seed, format=fmt, assignment=assignment,
                              annotation=annotation, annotation_jobs=jobs))
    return plans


def gate(ctx: Pipeline, plans: list[Plan]) -> None:
    """Decide retrieval for plans whose method retrieves; their experts read the passages."""
    for p in plans:
        if not p.method.retrieves:
            p.gate_round = GateRound(decision=RetrievalDecision(mode="never", retrieved=False,
                                                                reason="retrieval off (never)"))
    wanted = [p for p in plans if p.method.retrieves]
    if not wanted:
        return
    always = any(p.method.retrieval == "always" for p in wanted)
    retriever, problem = ctx.retriever()
    if retriever is None:
        if always:
            raise SymoeError(f"retrieval was asked for (always) but there is no usable index: {problem}")
        _not_retrieved(wanted, problem or "no index", {})
        return
    searched: dict[str, tuple[list[Hit], float]] = {}
    try:
        for p in wanted:
            if p.query.question not in searched:
                start = time.perf_counter()
                found = embed_few(partial(retriever.search, p.query.question, ctx.config.retrieval.top_k), 1)
                searched[p.query.question] = (found, time.perf_counter() - start)
    except SymoeError as exc:  # damage a search found: asked for explicitly, an error; else no retrieval
        if always:
            raise
        _not_retrieved(wanted, str(exc), searched)
        return
    drafts = _drafts(ctx, [p for p in wanted if p.method.retrieval == "auto"])
    for p in wanted:
        found, seconds = searched[p.query.question]
        p.gate_round = GateRound(decision=_decide(ctx, p, found, drafts.get(id(p))), search_seconds=seconds,
                                 draft_job=drafts.get(id(p)))


def _not_retrieved(plans: list[Plan], reason: str, searched: dict[str, tuple[list[Hit], float]]) -> None:
    """No retrieval for these plans, for ``reason`` (``searched``: the searches that ran, and their time)."""
    for p in plans:
        seconds = searched.get(p.query.question, ([], 0.0))[1]
        p.gate_round = GateRound(decision=RetrievalDecision(mode=p.method.retrieval, retrieved=False, reason=reason),
                                 search_seconds=seconds)


def _drafts(ctx: Pipeline, plans: list[Plan]) -> dict[int, Job]:
    """The gate's draft of each plan (by ``id``): a few tokens of its strongest expert, with log-probs."""
    profile = ctx.loaded_profile
    drafts = {}
    for p in plans:
        strongest = max(p.experts, key=lambda e: profile.experts[e].global_competence
                        if profile and e in profile.experts else -1e9)
        draft = expert_request(p.query.question, p.query.choices, p.format, None, 0.0, p.seed,
                               max_tokens=ctx.gate_model.draft_tokens).model_copy(update={"logprobs": 2})
        drafts[id(p)] = Job(model=strongest, request=draft)
    execute(ctx, list(drafts.values()), "gate drafts")
    return drafts


def _decide(ctx: Pipeline, p: Plan, found: list[Hit], draft: Job | None) -> RetrievalDecision:
    """Retrieve or not: always when asked; else the gate's model on the plan's features."""
    if p.method.retrieval == "always":
        return RetrievalDecision(mode=p.method.retrieval, retrieved=True, reason="retrieval forced (always)",
                                 passages=found)
    assert draft is not None and draft.generation is not None
    profile = ctx.loaded_profile
    features = GateFeatures(profile_strength=profile_strength(profile, p.experts, p.skills) if profile else 0.0,
                            draft_confidence=draft_confidence(draft.generation), retrieval_score=best_score(found))
    go, why = ctx.gate_model.decide(features)
    return RetrievalDecision(mode=p.method.retrieval, retrieved=go, reason=why, score=ctx.gate_model.score(features),
                             features=features, passages=found if go else [])


def answer(ctx: Pipeline, plans: list[Plan], stage: str = "experts") -> None:
    """Every slot's job, executed together (grouped by model); an escalated cascade's slot
    that its first round already asked reuses that job (asked and counted once)."""
    requests: dict[tuple[object, ...], GenerationRequest] = {}

    def request(p: Plan, s: Slot) -> GenerationRequest:
        """The slot's request; the same one (expert method, query, format, passages, sampling) that
        other plans ask, e.g. under other routers, is built once and shared (requests are never
        changed in place)."""
        context = p.context
        key = (ctx.spec(s.expert).method, id(p.query), p.format, context, s.temperature, s.seed)
        made = requests.get(key)
        if made is None:
            made = requests[key] = _with_history(
                ctx.method(s.expert).request(p.query, p.format, context, s.temperature, s.seed), p.query)
        return made

    for p in plans:
        asked = p.cascade.asked() if p.cascade else {}
        p.answer_jobs = [asked.get(slot_key(s)) or Job(model=s.expert, request=request(p, s), query_id=p.query.id)
                         for s in p.assignment.slots]
        if p.on_text is not None and len(p.answer_jobs) == 1 and not asked:  # the sole slot's text is the answer
            p.answer_jobs[0].on_text = p.on_text
    execute(ctx, [j for p in plans for j in p.answer_jobs if j.generation is None], stage)
    finish(ctx, [(p, expert, job) for p, expert, _, _, job in _slot_items(plans)], stage)


def finish(ctx: Pipeline, items: list[tuple[Plan, str, Job]], stage: str) -> None:
    """Each expert's reply that ran out before stating its answer gets its method's short
    second turn (``ExpertMethod.finish``), all of them executed together (grouped by model,
    cached like any request); the turn is joined into the job's generation, so what reads,
    costs and caches the reply sees one generation."""
    turns: list[tuple[Job, Job]] = []
    for p, expert, job in items:
        if job.finished or job.generation is None:
            continue
        job.finished = True
        request = ctx.method(expert).finish(job.request, job.generation, p.query, p.format)
        if request is not None:
            turns.append((job, Job(model=expert, request=request, query_id=job.query_id,
                                  on_text=_after_newline(job.on_text))))
    if not turns:
        return
    execute(ctx, [turn for _, turn in turns], f"{stage} (answer turn)")
    for job, turn in turns:
        assert job.generation is not None and turn.generation is not None
        job.generation, job.cached = finished(job.generation, turn.generation), job.cached and turn.cached


def _after_newline(on_text: Callable[[str], None] | None) -> Callable[[str], None] | None:
    """A streamed reply's second turn streams on, on a line of its own."""
    if on_text is None:
        return None
    started = False

    def emit(piece: str) -> None:
        nonlocal started
        if not started:
            on_text("\n")
            started = True
        on_text(piece)
    return emit


def _slot_items(plans: list[Plan]) -> list[AnswerItem]:
    """Each plan's slots with their jobs, in order."""
    return [(p, s.expert, s.sample, s.temperature, job) for p in plans
            for s, job in zip(p.assignment.slots, p.answer_jobs, strict=True)]


def escalate(ctx: Pipeline, plans: list[Plan]) -> None:
    """Cascades: a plan whose first answers are ``accepted`` (they all answered and agree and,
    where it sets ``accept_margin``, were that sure) keeps them; the others are answered
    again, together, by their escalation (the routed team). The cascade's record is its own."""
    first = [p for p in plans if p.assignment.escalation is not None]
    if not first:
        return
    read = iter(expert_answers(ctx, _slot_items(first)))
    up = []
    for p in first:
        answers = [next(read) for _ in p.answer_jobs]
        p.cascade = CascadeRound.judge(p.assignment, p.answer_jobs, answers)
        if p.cascade.escalated and p.assignment.escalation is not None:
            p.assignment = p.assignment.escalation
            up.append(p)
        else:
            p.answers = answers
    answer(ctx, up, "escalated experts")


def combine(ctx: Pipeline, plans: list[Plan]) -> None:
    """One rule for every method: the slots' answers; when all failed, the default expert
    answers (for methods that fall back: routed ones); when the plan synthesises
    (``Assignment.synthesises``), the aggregator does; otherwise (or when the synthesis
    fails) the majority answer stands."""
    _read_answers(ctx, [p for p in plans if not p.answers])  # a cascade whose first answers stood has them
    for p in plans:
        if not p.method.impl.falls_back and not any(a.ok for a in p.answers):
            p.error = _failure(p.answers)
    _fall_back(ctx, [p for p in plans if p.method.impl.falls_back and not any(a.ok for a in p.answers)])
    _synthesise(ctx, plans)
    for p in plans:
        synth = p.synthesis_job
        if synth is not None and synth.ok and synth.generation is not None:
            p.text, p.aggregator, p.aggregated = synth.generation.text, synth.model, True
        else:
            best = majority(p.answers, p.assignment.weights)
            p.text = best.text if best else ""


def _synthesise(ctx: Pipeline, plans: list[Plan]) -> None:
    """The aggregator's synthesis of the successful answers, for the plans that synthesise."""
    for p in plans:
        ok, q, aggregator = [a for a in p.answers if a.ok], p.query, p.assignment.aggregator
        if aggregator is not None and p.assignment.synthesises(ok):
            p.synthesis_job = Job(model=aggregator, request=_with_history(
                synthesis_request(q.question, q.choices, p.format, [x.text for x in ok], seed=p.seed), q),
                on_text=p.on_text)
    execute(ctx, [p.synthesis_job for p in plans if p.synthesis_job], "aggregate")


def _read_answers(ctx: Pipeline, plans: list[Plan]) -> None:
    """Each slot's job read as its expert's answer; a job an escalated cascade reuses from its
    first round keeps that reading (a program runs once)."""
    known = {k: a for p in plans if p.cascade for k, a in p.cascade.readings().items()}
    read = iter(expert_answers(ctx, [i for i in _slot_items(plans) if id(i[4]) not in known]))
    for p in plans:
        p.answers = [known[id(j)] if id(j) in known else next(read) for j in p.answer_jobs]


def one_line(text: str | None, limit: int = 300) -> str:
    """An error as one line: whitespace collapsed, cut at ``limit`` characters."""
    line = " ".join((text or "").split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _failure(answers: list[ExpertAnswer]) -> str:
    first = next((a for a in answers if a.error), None)
    if len(answers) == 1 and first:
        return f"expert {first.expert!r} failed: {one_line(first.error)}"
    return f"every expert failed ({first.expert if first else '?'}: {one_line(first.error) if first else '?'})"


#: how many experts a lost plan asks in turn: its method's next candidate, then the default expert
FALLBACK_TRIES = 2


def fallback_candidates(ctx: Pipeline, p: Plan) -> list[str]:
    """Whom a plan whose every expert failed asks, in turn: its method's next candidate, then
    the default expert, leaving out the experts that failed it and those whose method cannot
    produce its format."""
    failed = {a.expert for a in p.answers}
    chain = [*p.assignment.backups[:1], ctx.config.default_expert]
    able = [e for e in dict.fromkeys(chain) if e not in failed and e in ctx.config.experts and ctx.answers(e, p.format)]
    return able[:FALLBACK_TRIES]


def _fall_back(ctx: Pipeline, lost: list[Plan]) -> None:
    """The plans whose every expert failed ask their ``fallback_candidates`` in turn (each
    turn's jobs together), until one answers; every one asked is in the plan's answers,
    marked ``fallback``, and in its steps."""
    turns = {id(p): fallback_candidates(ctx, p) for p in lost}
    for p in lost:
        if not turns[id(p)]:
            first = next((a for a in p.answers if a.error), None)
            p.error = (f"every recruited expert failed ({first.expert if first else '?'}: "
                       f"{one_line(first.error) if first else '?'}); no other expert that answers "
                       f"{p.format} questions is left to fall back to")
    for turn in range(FALLBACK_TRIES):
        asking = [(p, turns[id(p)][turn]) for p in lost
                  if len(turns[id(p)]) > turn and not any(a.ok for a in p.answers)]
        if not asking:
            return
        jobs = [Job(model=expert, request=_with_history(ctx.method(expert).request(
            p.query, p.format, p.context, 0.0, p.seed), p.query), query_id=p.query.id) for p, expert in asking]
        for (p, _), job in zip(asking, jobs, strict=True):
            p.fallback_jobs.append(job)
        execute(ctx, jobs, "fallback")
        finish(ctx, [(p, expert, job) for (p, expert), job in zip(asking, jobs, strict=True)], "fallback")
        read = expert_answers(ctx, [(p, expert, 0, 0.0, job) for (p, expert), job in zip(asking, jobs, strict=True)])
        for (p, _), fell_back in zip(asking, read, strict=True):
            p.answers.append(fell_back.model_copy(update={"fallback": True}))
            if fell_back.ok:
                p.error = None
            else:
                reason = one_line(next((a.error for a in p.answers if a.error), ""))
                asked = ", ".join(repr(a.expert) for a in p.answers if a.fallback)
                p.error = f"every recruited expert failed and so did {asked}: {reason}"


def extract_answers(ctx: Pipeline, plans: list[Plan]) -> None:
    """The final answer in each plan's format (the majority's when a synthesis states none),
    and what each step cost."""
    for p in plans:
        q = p.query
        p.answer = extract(p.text, p.format, len(q.choices), q.choices) if p.text else None
        if p.answer is None:
            best = majority(p.answers, p.assignment.weights)
            p.answer = best.answer if best else None
        p.steps = plan_steps(p)
        p.usage = Usage.total([s.usage for s in p.steps])


def decision_steps(p: Plan) -> list[StepUsage]:
    """What deciding cost, before any expert answered: the annotation and the gate."""
    steps = [StepUsage.of("annotate", p.annotation_jobs)] if p.annotation_jobs else []
    if p.gate_round is not None:
        drafts = [p.gate_round.draft_job] if p.gate_round.draft_job else []
        steps.append(StepUsage.of("gate", drafts, p.gate_round.search_seconds))
    return steps


def plan_steps(p: Plan) -> list[StepUsage]:
    steps = decision_steps(p)
    for s, job, read in p.cascade.unasked(p.answer_jobs) if p.cascade else []:  # first experts not asked again
        steps.append(StepUsage.of(f"first:{s.expert}#{s.sample}", [job], read.method_seconds))
    ran = {(a.expert, a.sample): a.method_seconds for a in p.answers if not a.fallback}  # a program's run
    steps += [StepUsage.of(f"expert:{s.expert}#{s.sample}", [job], ran.get((s.expert, s.sample), 0.0))
              for s, job in zip(p.assignment.slots, p.answer_jobs, strict=True)]
    steps += [StepUsage.of(f"fallback:{job.model}", [job]) for job in p.fallback_jobs]
    if p.synthesis_job:
        steps.append(StepUsage.of(f"aggregate:{p.synthesis_job.model}", [p.synthesis_job]))
    return steps


AnswerItem = tuple[Plan, str, int, float, Job]  # plan, expert, sample, temperature, its job


def expert_answers(ctx: Pipeline, items: list[AnswerItem]) -> list[ExpertAnswer]:
    """Each job's generation read by its expert's method (a program runs now, in the
    sandbox, two at a time) as that expert's answer in the plan's format."""

    #: a generation that several plans share (identical jobs, e.g. under several routers) read
    #: once per method, query and format, unless its method runs code (each reading runs it)
    known: dict[tuple[str, int, int, str], tuple[Reading, float | None]] = {}

    def read(item: AnswerItem) -> ExpertAnswer:
        p, expert, sample, temperature, job = item
        generation = job.generation or Generation.failure(expert, "not run")
        name, method = ctx.spec(expert).method, ctx.method(expert)
        key = (name, id(generation), id(p.query), p.format)
        found = None if method.runs_code else known.get(key)
        if found is None:
            reading = (method.read(generation.text, p.query, p.format, ctx.config.sandbox)
                       if generation.ok else Reading())
            found = reading, answer_margin(generation.token_logprobs, reading.answer)
            if not method.runs_code:
                known[key] = found
        reading, margin = found
        return ExpertAnswer(expert=expert, sample=sample, temperature=temperature, generation=generation,
                            method=name, answer=reading.answer, reply=reading.text,
                            failure=reading.error, method_seconds=reading.seconds, margin=margin)

    if sum(ctx.method(i[1]).runs_code and i[4].ok for i in items) < 2:
        return [read(i) for i in items]
    with ThreadPoolExecutor(2) as pool:  # each program is a process of its own, bounded in CPU time
        return list(pool.map(read, items))


def _with_history(request: GenerationRequest, query: Query) -> GenerationRequest:
    """The request with the conversation's earlier turns before its last user message."""
    if not query.history:
        return request
    system = [m for m in request.messages if m.role == "system"]
    rest = [m for m in request.messages if m.role != "system"]
    return request.model_copy(update={"messages": [*system, *query.history, *rest]})
