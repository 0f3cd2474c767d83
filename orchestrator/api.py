"""The typed Python API: ``Symoe(config).ask(question) -> AskResult``.

``ask`` is the query pipeline on a batch of one; ``ask_many`` on a batch. The same object
serves the CLI. Models stay loaded between calls until ``close()``; generations are cached
in ``<home>/cache/ask.sqlite``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from agents.backends import ChatMessage
from agents.cache import GenerationCache
from agents.errors import SymoeError
from agents.prompts import strip_reasoning
from orchestrator.answers import split_inline_choices
from orchestrator.config import SymoeConfig, load_config
from orchestrator.graph import answer_plans, run
from orchestrator.methods import MethodSpec
from orchestrator.pipeline import Pipeline, Plan, plan
from orchestrator.provenance import provenance
from orchestrator.records import AnswerFormat, AskResult, Query, RetrievalMode

MAX_CHOICES = 26


class Symoe:
    """A team of expert LLMs behind one ``ask``."""

    def __init__(self, config: SymoeConfig | None = None, config_path: Path | str | None = None,
                 profile: Path | None = None, cache_path: Path | None = None) -> None:
        self.config = config or load_config(config_path)
        cache = GenerationCache(cache_path or self.config.home / "cache" / "ask.sqlite")
        self.pipeline = Pipeline(self.config, cache=cache, profile_path=profile)

    def close(self) -> None:
        self.pipeline.close()
        if self.pipeline.cache is not None:
            self.pipeline.cache.close()

    def __enter__(self) -> Symoe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def method(self, method: str | None = None, model: str | None = None, k: int | None = None,
               retrieval: RetrievalMode | None = None, quality: float | None = None) -> MethodSpec:
        """The method a call names: ``model`` (one expert), ``k`` (symoe:kN), ``quality`` (the
        cost/quality knob, budget:Q), else ``method`` (default: skill routing, ``symoe``)."""
        if sum(x is not None for x in (method, model, k, quality)) > 1:
            raise SymoeError("give one of method, model, k and quality")
        if model is not None:
            self.config.expert(model)
            text = f"single:{model}"
        elif k is not None:
            text = f"symoe:k{k}"
        elif quality is not None:
            text = f"budget:{quality:g}"
        else:
            text = method or "symoe"
        return MethodSpec.parse(text, self.config, retrieval=retrieval)

    def ask(self, question: str, *, method: str | None = None, model: str | None = None,
            choices: list[str] | None = None, format: AnswerFormat | None = None, seed: int | None = None,
            k: int | None = None, profile: Path | None = None, retrieval: RetrievalMode | None = None,
            task: str | None = None, max_tokens: int | None = None, deadline_s: float | None = None,
            quality: float | None = None) -> AskResult:
        """Answer one question: routed to the best-suited experts (``symoe``), or by ``method``;
        ``model`` forces one expert; ``quality`` (0 cheapest .. 1 most accurate) turns the
        cost/quality knob (the ``budget`` method). Raises ``SymoeError`` when no expert could answer, or
        when ``deadline_s`` passes first (saying which stage it was waiting for)."""
        query = make_query(question, choices, format, task, max_tokens)
        check_fits(query, self.config)

        def answer() -> AskResult:
            return self.ask_many([query], method=method, model=model, seed=seed, k=k, profile=profile,
                                 retrieval=retrieval, quality=quality)[0]

        result = answer() if deadline_s is None else self._within(deadline_s, answer)
        if result.error:
            raise SymoeError(result.error)
        return result

    def _within(self, deadline_s: float, answer: Callable[[], AskResult]) -> AskResult:
        """``answer()`` on a daemon thread; past the deadline, one error naming the stage it was in."""
        box: list[AskResult | BaseException] = []
        stage = ["starting"]
        previous = self.pipeline.progress

        def note(name: str, done: int, total: int) -> None:
            stage[0] = name
            previous(name, done, total)

        def work() -> None:
            try:
                box.append(answer())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                box.append(exc)

        self.pipeline.progress = note
        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        worker.join(deadline_s)
        self.pipeline.progress = previous
        if not box:
            raise SymoeError(f"no answer within the deadline of {deadline_s:g} s (last stage: {stage[0]}); "
                             "a slow or hung expert? raise --deadline or check the experts with `symoe models list`")
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]

    def stream(self, query: Query, on_text: Callable[[str], None], *, method: str | None = None,
               seed: int | None = None) -> AskResult:
        """Answer one query, handing the final answer's text to ``on_text`` as it is produced
        (the single recruited expert's, or the aggregator's; an agreed answer comes whole)."""
        spec = self.method(method)
        start = time.perf_counter()
        made = plan(self.pipeline, [query], [spec], self.config.seed if seed is None else seed)
        made[0].on_text = on_text
        done = answer_plans(self.pipeline, made)[0]
        result = ask_result(done, time.perf_counter() - start, self.pipeline)
        if result.error:
            raise SymoeError(result.error)
        return result

    def ask_many(self, queries: list[Query], *, method: str | None = None, model: str | None = None,
                 seed: int | None = None, k: int | None = None, profile: Path | None = None,
                 retrieval: RetrievalMode | None = None, quality: float | None = None) -> list[AskResult]:
        """Answer a batch together (each model loads once for all of it)."""
        spec = self.method(method, model, k, retrieval, quality)
        if profile is not None and profile != self.pipeline.profile_path:
            self.pipeline.profile_path, self.pipeline._profile = profile, None
        start = time.perf_counter()
        plans = run(self.pipeline, queries, [spec], seed=seed)
        seconds = time.perf_counter() - start
        return [ask_result(p, seconds, self.pipeline) for p in plans]


def cut_at_stop(text: str, stop: str | Sequence[str] | None) -> str:
    """The text before the first stop sequence: OpenAI's ``stop`` or lm-eval's ``until``, each
    one string or a list of them (empty strings and None stop nothing)."""
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    ends = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return text[:min(ends)] if ends else text


def make_query(question: str, choices: list[str] | None = None, format: AnswerFormat | None = None,
               task: str | None = None, max_tokens: int | None = None) -> Query:
    """A checked ``Query``: inline 'A) ...' options become choices."""
    question = (question or "").strip()
    if not question:
        raise SymoeError("the question is empty; pass a question, or '-' to read it from stdin")
    if not choices:
        question, choices = split_inline_choices(question)
    if len(choices) > MAX_CHOICES:
        raise SymoeError(f"{len(choices)} answer choices; at most {MAX_CHOICES} (A-Z) are supported")
    if max_tokens is not None and not 1 <= max_tokens <= 8192:
        raise SymoeError(f"max_tokens must be from 1 to 8192, not {max_tokens}")
    return Query(question=question, choices=choices, format=format, task=task, max_tokens=max_tokens)


#: characters per token when estimating a prompt's length before any tokenizer is loaded
CHARS_PER_TOKEN = 4


def check_fits(query: Query, config: SymoeConfig) -> None:
    """Refuse, before any model runs, a query far longer than every expert's context."""
    text = query.question + "".join(query.choices) + "".join(m.content for m in query.history)
    tokens = len(text) // CHARS_PER_TOKEN
    longest = max((spec.n_ctx for spec in config.experts.values()), default=0)
    if longest and tokens > longest:
        name = max(config.experts, key=lambda n: config.experts[n].n_ctx)
        raise SymoeError(f"the question is about {tokens} tokens, longer than any expert's context (the longest: "
                         f"{longest} tokens, {name}'s n_ctx): shorten it, or add an expert with a longer context")


def conversation_query(turns: list[ChatMessage], max_tokens: int | None = None) -> Query:
    """A conversation as a query: the last user message is what is annotated and routed; the
    turns before it go to the experts and the aggregator as history."""
    last = max((i for i, t in enumerate(turns) if t.role == "user"), default=None)
    if last is None or not turns[last].content.strip():
        raise SymoeError("the conversation holds no user message with text to answer")
    return Query(question=turns[last].content.strip(), max_tokens=max_tokens, history=turns[:last])


def ask_result(p: Plan, seconds: float, ctx: Pipeline) -> AskResult:
    """The public record of an answered plan."""
    routed = p.method.impl.routed
    profile = str(ctx.profile_path) if routed and ctx.profile_path else None
    answer = p.answer if p.answer is not None else strip_reasoning(p.text)
    return AskResult(
        question=p.query.question, answer=answer, text=strip_reasoning(p.text), method=str(p.method),
        routed=routed, format=p.format, skills=p.skills, experts=p.experts,
        unknown_skills=p.annotation.unknown if p.annotation else [],
        recruitment=p.assignment.recruitment, routing=p.assignment.note, escalated=p.escalated,
        first_answers=p.first_answers, expert_answers=p.answers,
        aggregator=p.aggregator,
        aggregated=p.aggregated, fallback=p.fallback, retrieval=p.retrieval, profile=profile,
        steps=p.steps, usage=p.usage, seconds=round(seconds, 3), error=p.error,
        provenance=provenance(ctx.config, method=str(p.method), profile=profile,
                              annotator=ctx.annotator if p.annotation else None, seed=p.seed),
    )


def ask(question: str, **kwargs: object) -> AskResult:
    """One-shot helper: build ``Symoe`` from the default config, answer, free the models."""
    with Symoe() as symoe:
        return symoe.ask(question, **kwargs)  # type: ignore[arg-type]
