"""The one session object: ``Symoe``. Every face of symoe calls it: the CLI, the Python API,
the OpenAI-compatible server, the lm-eval model, the LangChain chat model, evaluation,
profiling and the benches.

``Symoe(config)`` builds, once, what answering needs: the pool of models within one memory
budget, the configured executor (this process, or one Ray actor per model), the generation
cache and the pipeline over them. Then:

    route(query, router)          the decision without the experts answering: who answers,
                                  by which method, with what weight, retrieval or not, why
    ask(question, router=...)     one answer, the ``AskResult`` record
    ask_many(queries, routers)    a batch under one or more routers; each model loads once
    stream(query, on_text)        one answer, its final text handed over as it is produced
    ask_query(query, router)      one prepared query (the server's and the stream's call)

A *router* decides who answers a query (``symoe``, ``clusters``, ``cascade``, ``budget:Q``,
``best_single``, ``single:EXPERT``, ``moa``, ``majority``, ``random_k``); an expert's
*method* is how that expert answers (direct, standard, cot, program).
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from agents.backends.base import Cancel, cancel_scope, current_cancel
from agents.cache import GenerationCache
from agents.errors import SymoeError
from agents.progress import StageReport
from agents.prompts import strip_reasoning
from agents.runtime import LoadedPool, available_memory
from orchestrator.config import SymoeConfig, load_config
from orchestrator.executor import Executor, LocalExecutor
from orchestrator.graph import answer_plans, run
from orchestrator.methods import MethodSpec
from orchestrator.pipeline import Pipeline, Plan, decision_steps, gate, plan
from orchestrator.profiles import Profile
from orchestrator.provenance import provenance
from orchestrator.queries import check_fits, make_query
from orchestrator.records import (
    AnswerFormat,
    AskResult,
    Job,
    Query,
    RetrievalMode,
    RouteDecision,
    RoutedExpert,
    Slot,
)

try:  # the optional extra: without it `--executor ray` says what to install
    from orchestrator import ray_executor
except ImportError:  # pragma: no cover - depends on the install
    ray_executor = None  # type: ignore[assignment]

#: the share of free memory resident models may take (one rule for every face)
MEMORY_SHARE = 0.6
#: how long ``ask``'s work may take to stop once its deadline cancelled it
STOP_GRACE_S = 5.0


def default_cache_path(config: SymoeConfig) -> Path:
    """The generation cache every face shares unless told otherwise."""
    return config.home / "cache" / "generations.sqlite"


def make_executor(config: SymoeConfig, pool: LoadedPool) -> Executor:
    """The configured executor (``executor.kind``): this process's pool, or one Ray actor per model."""
    if config.executor.kind == "local":
        return LocalExecutor(pool)
    if ray_executor is None:
        raise SymoeError("--executor ray needs Ray: pip install 'symoe[ray]' (ray==2.60.0)")
    ex = config.executor
    return ray_executor.RayExecutor(config, ex.address, ex.max_restarts, ex.batch_size)


def deprecated(old: str, new: str) -> None:
    """The one line an old name gets, for one release."""
    warnings.warn(f"{old} is deprecated and goes in the next release; use {new}", FutureWarning, stacklevel=3)


def renamed(router: str | None, method: str | None, call: str) -> str | None:
    """``router``, or the deprecated ``method=`` of ``call`` with its deprecation line."""
    if method is None:
        return router
    warnings.warn(f"{call}(method=...) is deprecated and goes in the next release; use {call}(router=...)",
                  FutureWarning, stacklevel=3)
    return router or method


class Symoe:
    """A team of expert LLMs behind one session: built once, asked many times, closed once."""

    def __init__(self, config: SymoeConfig | None = None, config_path: Path | str | None = None, *,
                 profile: Path | Profile | None = None, cache_path: Path | None = None, use_cache: bool = True,
                 memory_budget: int | None = None, progress: StageReport | None = None,
                 wrap_executor: Callable[[Executor], Executor] | None = None,
                 available: Callable[[], set[str]] | None = None) -> None:
        """``profile``: a profile file, or a ``Profile`` already built (default: the configured
        or shipped one); ``cache_path`` (default ``<home>/cache/generations.sqlite``; ``use_cache=False``:
        none), ``memory_budget`` in bytes for resident models (default ``MEMORY_SHARE`` of free
        memory), ``progress`` receives each stage's progress, ``wrap_executor`` wraps the
        configured executor once (the server's request batcher), ``available`` names the
        experts that may be recruited now (the server's health)."""
        self.config = config or load_config(config_path)
        budget = memory_budget if memory_budget is not None else int(available_memory() * MEMORY_SHARE)
        self.pool = LoadedPool(self.config.experts, self.config.home, budget_bytes=budget)
        self.executor = make_executor(self.config, self.pool)
        if wrap_executor is not None:
            self.executor = wrap_executor(self.executor)
        self.cache = GenerationCache(cache_path or default_cache_path(self.config)) if use_cache else None
        loaded = profile if isinstance(profile, Profile) else None
        path = None if isinstance(profile, Profile) else profile
        self.pipeline = Pipeline(self.config, pool=self.pool, executor=self.executor, cache=self.cache,
                                 profile=loaded, profile_path=path, progress=progress,
                                 available=available)
        self._loads: list[str] | None = None

    def close(self) -> None:
        self._loads = self.loads()
        self.executor.close()
        self.pipeline.close()
        if self.cache is not None:
            self.cache.close()

    def __enter__(self) -> Symoe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def loads(self) -> list[str]:
        """Every model load so far, in order (an executor of actors counts its own)."""
        if self._loads is not None:
            return list(self._loads)
        return list(getattr(self.executor, "loads", self.pool.loads))

    # -- naming the router ------------------------------------------------------------------
    def router(self, router: str | None = None, model: str | None = None, k: int | None = None,
               retrieval: RetrievalMode | None = None, quality: float | None = None) -> MethodSpec:
        """The router a call names: ``model`` (one expert, ``single:MODEL``), ``k`` (``symoe:kN``),
        ``quality`` (the cost/quality knob, ``budget:Q``), else ``router`` (default: the
        profile's ``router``, the winner of its matrix's replay, else ``symoe``)."""
        if sum(x is not None for x in (router, model, k, quality)) > 1:
            raise SymoeError("give one of router, model, k and quality")
        if model is not None:
            self.config.expert(model)
            text = f"single:{model}"
        elif k is not None:
            text = f"symoe:k{k}"
        elif quality is not None:
            text = f"budget:{quality:g}"
        else:
            text = router or self.default_router()
        return MethodSpec.parse(text, self.config, retrieval=retrieval)

    def default_router(self) -> str:
        """The profile's router (chosen by replay when it was built from a matrix), else ``symoe``."""
        try:
            chosen = self.pipeline.profile.router
        except SymoeError:  # no usable profile: the symoe router says so when it routes
            return "symoe"
        return chosen or "symoe"

    def method(self, method: str | None = None, model: str | None = None, k: int | None = None,
               retrieval: RetrievalMode | None = None, quality: float | None = None) -> MethodSpec:
        """Deprecated: ``router``."""
        deprecated("Symoe.method", "Symoe.router")
        return self.router(method, model, k, retrieval, quality)

    def _seed(self, seed: int | None) -> int:
        return self.config.seed if seed is None else seed

    # -- deciding -----------------------------------------------------------------------------
    def route(self, query: Query | str, router: str | None = None, *, seed: int | None = None,
              retrieval: RetrievalMode | None = None) -> RouteDecision:
        """What ``router`` decides for ``query`` before any expert answers: the experts, the
        method each answers by, their weights, the retrieval decision and the reason. It runs
        the stages before the experts (skills, plan, retrieval gate): the only generations it
        may make are the annotator's keywords (``skills.source`` llm or hybrid) and the gate's
        short draft (retrieval ``auto``), both cached, so an ``ask`` that follows reuses them."""
        q = make_query(query) if isinstance(query, str) else query
        check_fits(q, self.config)
        spec = self.router(router, retrieval=retrieval)
        start = time.perf_counter()
        p = plan(self.pipeline, [q], [spec], self._seed(seed))[0]
        gate(self.pipeline, [p])
        return route_decision(p, time.perf_counter() - start, self.config)

    # -- answering ----------------------------------------------------------------------------
    def ask(self, question: str, *, router: str | None = None, model: str | None = None,
            choices: list[str] | None = None, format: AnswerFormat | None = None, seed: int | None = None,
            k: int | None = None, profile: Path | None = None, retrieval: RetrievalMode | None = None,
            task: str | None = None, max_tokens: int | None = None, deadline_s: float | None = None,
            quality: float | None = None, method: str | None = None) -> AskResult:
        """Answer one question: routed to the best-suited experts (``symoe``), or by ``router``;
        ``model`` forces one expert; ``quality`` (0 cheapest .. 1 most accurate) turns the
        cost/quality knob (the ``budget`` router). Raises ``SymoeError`` when no expert could
        answer, or when ``deadline_s`` passes first (saying which stage it was waiting for).
        ``method`` is the deprecated name of ``router``."""
        router = renamed(router, method, "ask")
        query = make_query(question, choices, format, task, max_tokens)
        check_fits(query, self.config)
        spec = self.router(router, model, k, retrieval, quality)
        if profile is not None:
            self.pipeline.use_profile(profile)

        def answer() -> AskResult:
            return self.ask_query(query, spec, seed=seed)

        result = answer() if deadline_s is None else self._within(deadline_s, answer)
        if result.error:
            raise SymoeError(result.error)
        return result

    def ask_query(self, query: Query, router: MethodSpec | str | None = None, *, seed: int | None = None,
                  on_text: Callable[[str], None] | None = None,
                  watch: Callable[[Plan], None] | None = None) -> AskResult:
        """Answer one prepared query; ``on_text`` receives the final answer's text as it is
        produced, ``watch`` the plan as soon as it exists (a server cut by its deadline reads
        what it holds). A failure is in the record's ``error``; nothing is raised for it."""
        spec = router if isinstance(router, MethodSpec) else self.router(router)
        start = time.perf_counter()
        made = plan(self.pipeline, [query], [spec], self._seed(seed))
        made[0].on_text = on_text
        if watch is not None:
            watch(made[0])
        done = answer_plans(self.pipeline, made)[0]
        return self.result(done, time.perf_counter() - start)

    def stream(self, query: Query, on_text: Callable[[str], None], *, router: str | None = None,
               seed: int | None = None, method: str | None = None) -> AskResult:
        """Answer one query, handing the final answer's text to ``on_text`` as it is produced
        (the single recruited expert's, or the aggregator's; an agreed answer comes whole)."""
        router = renamed(router, method, "stream")
        result = self.ask_query(query, router, seed=seed, on_text=on_text)
        if result.error:
            raise SymoeError(result.error)
        return result

    def ask_many(self, queries: list[Query], *, routers: Sequence[str] | None = None, router: str | None = None,
                 model: str | None = None, seed: int | None = None, k: int | None = None,
                 profile: Path | None = None, retrieval: RetrievalMode | None = None,
                 quality: float | None = None, method: str | None = None) -> list[AskResult]:
        """Answer a batch together (each model loads once for all of it): under one router, or
        under each of ``routers`` (results router by router, queries in order within each; the
        queries' skills are annotated once for all of them)."""
        router = renamed(router, method, "ask_many")
        if routers is not None:
            if any(x is not None for x in (router, model, k, quality)):
                raise SymoeError("give routers, or one of router, model, k and quality")
            specs = [MethodSpec.parse(r, self.config, retrieval=retrieval) for r in routers]
        else:
            specs = [self.router(router, model, k, retrieval, quality)]
        if profile is not None:
            self.pipeline.use_profile(profile)
        start = time.perf_counter()
        plans = run(self.pipeline, queries, specs, seed=self._seed(seed))
        seconds = time.perf_counter() - start
        return [self.result(p, seconds) for p in plans]

    def result(self, p: Plan, seconds: float) -> AskResult:
        """The one answer record of an answered plan."""
        return ask_result(p, seconds, self.pipeline)

    def _within(self, deadline_s: float, answer: Callable[[], AskResult]) -> AskResult:
        """``answer()`` on a thread under a cancel flag of its own; past the deadline the flag is
        set (queued generations never start, running ones stop at their next token), the
        thread is given ``STOP_GRACE_S`` to stop, and one error names the stage it was in."""
        box: list[AskResult | BaseException] = []
        stage = ["starting"]
        previous = self.pipeline.progress
        flag = Cancel(parent=current_cancel())

        def note(name: str, done: int, total: int) -> None:
            stage[0] = name
            previous(name, done, total)

        def work() -> None:
            try:
                with cancel_scope(flag):
                    box.append(answer())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                box.append(exc)

        self.pipeline.progress = note
        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        try:
            worker.join(deadline_s)
            if worker.is_alive():
                flag.cancel(f"the deadline of {deadline_s:g} s passed")
                worker.join(STOP_GRACE_S)
        finally:
            self.pipeline.progress = previous
        if worker.is_alive() or not box or isinstance(box[0], AskResult) and flag.cancelled:
            raise SymoeError(f"no answer within the deadline of {deadline_s:g} s (last stage: {stage[0]}); "
                             "a slow or hung expert? raise --deadline or check the experts with `symoe models list`")
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]


def _jobs(p: Plan) -> list[Job]:
    """The generations that made the answer: the experts', every fallback's, the aggregator's."""
    return [*p.answer_jobs, *p.fallback_jobs, *([p.synthesis_job] if p.synthesis_job else [])]


def ask_result(p: Plan, seconds: float, ctx: Pipeline) -> AskResult:
    """The public record of an answered plan (built here and nowhere else, from the plan's
    typed parts: constructed without validating them again, as a replay makes hundreds of
    thousands; tests/test_pipeline_flow.py checks that the record validates)."""
    routed = p.method.impl.routed
    profile = str(ctx.profile_path) if routed and ctx.profile_path else None
    answer = p.answer if p.answer is not None else strip_reasoning(p.text)
    jobs = _jobs(p)
    return AskResult.model_construct(
        question=p.query.question, query_id=p.query.id, answer=answer, extracted=p.answer is not None,
        text=strip_reasoning(p.text), method=str(p.method),
        routed=routed, format=p.format, skills=p.skills, experts=p.experts,
        unknown_skills=p.annotation.unknown if p.annotation else [],
        recruitment=p.assignment.recruitment, routing=p.assignment.note, escalated=p.escalated,
        first_answers=p.first_answers, expert_answers=p.answers,
        aggregator=p.aggregator,
        aggregated=p.aggregated, fallback=p.fallback, retrieval=p.retrieval, profile=profile,
        steps=p.steps, usage=p.usage, seconds=round(seconds, 3), error=p.error,
        failed=sum(1 for j in jobs if not j.ok), succeeded=sum(1 for j in jobs if j.ok),
        provenance=provenance(ctx.config, method=str(p.method), profile=profile,
                              annotator=ctx.annotator if p.annotation else None, seed=p.seed),
    )


def route_decision(p: Plan, seconds: float, config: SymoeConfig) -> RouteDecision:
    """A planned and gated plan as the router's decision."""
    a = p.assignment

    def chosen(slots: list[Slot], weights: dict[str, float]) -> list[RoutedExpert]:
        names = [s.expert for s in slots]
        return [RoutedExpert(expert=e, method=config.experts[e].method, weight=weights.get(e), slots=names.count(e))
                for e in dict.fromkeys(names)]

    weights = a.recruitment.weights if a.recruitment else a.weights
    experts = chosen(a.slots, weights)
    experts.sort(key=lambda r: -(r.weight or 0.0))
    escalation = a.escalation
    return RouteDecision(
        question=p.query.question, router=str(p.method), routed=p.method.impl.routed, format=p.format,
        skills=p.skills, experts=experts, combine=a.combine, aggregator=a.aggregator,
        escalation=chosen(escalation.slots, escalation.weights) if escalation else [],
        retrieval=p.retrieval, reason=a.recruitment.reason if a.recruitment else a.note, steps=decision_steps(p),
        seconds=round(seconds, 3))
