"""What ``symoe serve`` does with a request, independent of HTTP.

A model name is a router: ``symoe`` (the default routed configuration), its variants
(``symoe:k2``, ``symoe@never``, ...), ``clusters``, ``cascade``, the cost/quality knob
``budget:Q`` (any Q from 0 to 1), ``moa``, ``majority``, ``random_k``, ``best_single``,
and every expert by its own name (one expert, no routing). A request becomes a ``Query``
(the last user message is annotated and routed; the turns before it go to the experts and
the aggregator), is answered by the one session object (``Symoe.ask_query``) on a worker
thread under the request's deadline, and comes back as its ``AskResult``, which the
responses turn into OpenAI objects with the record's ``symoe`` object: recruited experts and
weights, skills, aggregator, retrieval decision, per-step usage and time.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from openai.types import Completion, CompletionChoice, CompletionUsage, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessage
from openai.types.chat.chat_completion import Choice
from openai.types.chat.chat_completion_chunk import Choice as ChunkChoice
from openai.types.chat.chat_completion_chunk import ChoiceDelta

from agents.backends import ChatMessage
from agents.errors import SymoeError
from orchestrator.aggregate import majority
from orchestrator.config import SymoeConfig
from orchestrator.executor import Executor
from orchestrator.methods import MethodError, MethodSpec
from orchestrator.pipeline import Plan, expert_answers
from orchestrator.queries import check_fits, conversation_query, cut_at_stop
from orchestrator.records import AskResult, Query
from orchestrator.server.batching import BatchingExecutor
from orchestrator.server.health import Health
from orchestrator.server.schema import ApiError, ChatRequest, CompletionRequest
from orchestrator.session import Symoe

ROUTERS = ("symoe", "symoe:k2", "symoe:k3", "symoe:distinct", "symoe@never", "symoe@always", "symoe@auto",
           "clusters", "cascade", "budget", "budget:0.25", "budget:0.5", "budget:0.75",
           "moa", "majority", "random_k", "best_single")


class Outcome:
    """An answered request: the session's answer record, and whether the deadline cut it short."""

    def __init__(self, result: AskResult, deadline_exceeded: bool, seconds: float) -> None:
        self.result, self.deadline_exceeded, self.seconds = result, deadline_exceeded, seconds

    @property
    def text(self) -> str:
        return self.result.text


class Service:
    """The session (models, batcher, cache, pipeline), the health tracker and the request bound a
    server shares."""

    def __init__(self, config: SymoeConfig, api_key: str | None = None) -> None:
        self.config = config
        self.api_key = api_key or None
        limits = config.server
        self.health = Health(limits.cooldown_failures, limits.cooldown_s)
        made: list[BatchingExecutor] = []

        def batching(executor: Executor) -> Executor:  # requests' jobs for one model run as one batch
            made.append(BatchingExecutor(executor, limits.batch_window_ms, health=self.health))
            return made[0]

        self.symoe = Symoe(config, wrap_executor=batching,
                           available=self.health.available({e: s.load_as for e, s in config.experts.items()}))
        self.batcher = made[0]
        self.pool = self.symoe.pool
        self.workers = ThreadPoolExecutor(max_workers=limits.max_in_flight, thread_name_prefix="symoe-request")
        self.in_flight = threading.BoundedSemaphore(limits.max_in_flight)
        self.requests = 0
        self._count = threading.Lock()
        self.created = int(time.time())
        # load now what every routed request needs, so no request waits for it
        self.profile_problem: str | None = None
        _ = self.symoe.pipeline.matcher
        try:
            _ = self.symoe.pipeline.profile
        except SymoeError as exc:  # single experts still serve; routed requests get this line
            self.profile_problem = str(exc)

    def close(self) -> None:
        self.workers.shutdown(wait=False, cancel_futures=True)
        self.symoe.close()

    # -- models ---------------------------------------------------------------------------
    def models(self) -> list[Model]:
        names = [*ROUTERS, *self.config.experts]
        return [Model(id=n, created=self.created, object="model", owned_by="symoe") for n in names]

    def method_for(self, name: str) -> MethodSpec:
        if name in self.config.experts:
            return MethodSpec.parse(f"single:{name}", self.config)
        try:
            return MethodSpec.parse(name, self.config)
        except SymoeError:
            raise ApiError(404, f"unknown model {name!r}; GET /v1/models lists them", param="model",
                           code="model_not_found") from None

    # -- requests -------------------------------------------------------------------------
    def chat_query(self, request: ChatRequest) -> Query:
        limits = self.config.server
        if len(request.messages) > limits.max_messages:
            raise ApiError(400, f"{len(request.messages)} messages; at most {limits.max_messages}", param="messages")
        turns = [ChatMessage(role="system" if m.role in ("system", "developer") else
                             "assistant" if m.role == "assistant" else "user", content=m.text())
                 for m in request.messages if m.role != "tool"]
        self._check_tokens(request.token_cap)
        try:
            query = conversation_query(turns, request.token_cap)
            check_fits(query, self.config)
        except SymoeError as exc:
            raise ApiError(400, f"messages: {exc}", param="messages") from None
        return query

    def completion_query(self, request: CompletionRequest) -> Query:
        prompt = request.text()
        if not prompt.strip():
            raise ApiError(400, "the prompt is empty", param="prompt")
        self._check_tokens(request.token_cap)
        query = Query(question=prompt.strip(), max_tokens=request.token_cap)
        try:
            check_fits(query, self.config)
        except SymoeError as exc:
            raise ApiError(400, f"prompt: {exc}", param="prompt") from None
        return query

    def _check_tokens(self, max_tokens: int | None) -> None:
        limit = self.config.server.max_tokens
        if max_tokens is not None and max_tokens > limit:
            raise ApiError(400, f"max_tokens {max_tokens} is over this server's limit of {limit}",
                           param="max_tokens")

    def answer(self, query: Query, method: MethodSpec, seed: int | None = None,
               on_text: Callable[[str], None] | None = None) -> Outcome:
        """Run the pipeline for one request; past the deadline, the best answer so far."""
        if not self.in_flight.acquire(blocking=False):
            raise ApiError(429, f"{self.config.server.max_in_flight} requests are being answered; retry shortly",
                           type_="rate_limit_error", code="too_many_requests")
        start = time.perf_counter()
        with self._count:
            self.requests += 1
        held: list[Plan] = []

        def work() -> AskResult:
            return self.symoe.ask_query(query, method, seed=seed, on_text=on_text, watch=held.append)

        try:
            future = self.workers.submit(work)
            try:
                done = future.result(timeout=self.config.server.deadline_s)
            except FutureTimeout:
                return self._best_so_far(held, start)
            if done.error:
                raise ApiError(503, done.error, type_="server_error", code="experts_failed")
            return Outcome(done, False, time.perf_counter() - start)
        except SymoeError as exc:
            raise ApiError(400 if isinstance(exc, MethodError) else 503, str(exc),
                           type_="invalid_request_error" if isinstance(exc, MethodError) else "server_error") from None
        finally:
            self.in_flight.release()

    def _best_so_far(self, held: list[Plan], start: float) -> Outcome:
        if not held or not any(a.ok for a in held[0].answers) and not any(j.ok for j in held[0].answer_jobs):
            raise ApiError(504, f"no expert answered within the deadline of {self.config.server.deadline_s:g} s",
                           type_="server_error", code="deadline_exceeded")
        p = held[0]
        if not p.answers:  # the slots answered, combine had not run yet
            p.answers = expert_answers(self.symoe.pipeline, [(p, s.expert, s.sample, s.temperature, job) for s, job
                                                             in zip(p.assignment.slots, p.answer_jobs, strict=False)
                                                             if job.ok])
        best = majority(p.answers, p.assignment.weights)
        p.text = best.text if best else ""
        p.answer = best.answer if best else None
        seconds = time.perf_counter() - start
        return Outcome(self.symoe.result(p, seconds), True, seconds)

    # -- responses ------------------------------------------------------------------------
    def record(self, outcome: Outcome) -> dict[str, Any]:
        """The ``symoe`` object of a response: the answer record's, with the server's own state."""
        return {**outcome.result.record(), "cooled_down": self.health.cooling(),
                "deadline_exceeded": outcome.deadline_exceeded, "seconds": round(outcome.seconds, 3)}

    def usage(self, outcome: Outcome) -> CompletionUsage:
        u = outcome.result.usage
        return CompletionUsage(prompt_tokens=u.prompt_tokens, completion_tokens=u.completion_tokens,
                               total_tokens=u.total_tokens)

    def chat_completion(self, model: str, outcome: Outcome, stop: str | list[str] | None = None) -> ChatCompletion:
        return ChatCompletion(
            id=f"chatcmpl-{uuid.uuid4().hex[:24]}", object="chat.completion", created=int(time.time()), model=model,
            choices=[Choice(index=0, finish_reason="stop", message=ChatCompletionMessage(
                role="assistant", content=cut_at_stop(outcome.text, stop)))],
            usage=self.usage(outcome), symoe=self.record(outcome))  # type: ignore[call-arg]

    def completion(self, model: str, outcome: Outcome, stop: str | list[str] | None = None) -> Completion:
        text = cut_at_stop(outcome.text, stop)
        return Completion(id=f"cmpl-{uuid.uuid4().hex[:24]}", object="text_completion", created=int(time.time()),
                          model=model, choices=[CompletionChoice(index=0, text=text, finish_reason="stop")],
                          usage=self.usage(outcome), symoe=self.record(outcome))  # type: ignore[call-arg]

    def chunk(self, cid: str, model: str, piece: str | None, outcome: Outcome | None = None,
              first: bool = False) -> ChatCompletionChunk:
        """A stream chunk; the first names the role; the last (``outcome`` given) has the finish
        reason, usage and the ``symoe`` record."""
        delta = ChoiceDelta(role="assistant", content="") if first else \
            ChoiceDelta(content=piece) if piece is not None else ChoiceDelta()
        extra: dict[str, Any] = {}
        if outcome is not None:
            extra = {"usage": self.usage(outcome), "symoe": self.record(outcome)}
        return ChatCompletionChunk(id=cid, object="chat.completion.chunk", created=int(time.time()), model=model,
                                   choices=[ChunkChoice(index=0, delta=delta,
                                                        finish_reason="stop" if outcome is not None else None)],
                                   **extra)
