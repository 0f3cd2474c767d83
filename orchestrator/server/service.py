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

Bounded under overload (``Admission``): at most ``max_in_flight`` requests' work runs at once,
and a slot is freed only when its work has stopped; up to ``max_queued`` more wait (at most
``queue_wait_s``, within the deadline); past that a request gets 429 with ``Retry-After``.
Every request's work runs under its own cancel flag: at the deadline, or when its client
goes, the flag is set, queued jobs never start, running generations stop at their next
token, and the pipeline's own combine and extract stages finish the answer from what the
experts gave, with the usage actually spent (no expert answered: 504). When no expert can
serve (every one cooled down): 503.

The admission knows how long work takes (a work clock learns each router's seconds alone,
``Admission``): with work already admitted, a request forecast to finish past its deadline,
or to push an admitted one past its own, is degraded at once to ``degrade_to`` (a cheaper
router: ``cheapest``, ``default`` or a name) when that fits, and refused at once (429 with
``Retry-After``) when nothing does. ``degrade_to`` also answers a request that had to
queue, one whose experts all failed (an expert's server killed), and, started beside it in
time (the hedge), one whose router misses the deadline with nothing to combine; the record
says so (``degraded``, ``degraded_why``). ``counts`` are the admission's events for
``/metrics``. Design notes: docs/overload.md.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from openai.types import Completion, CompletionChoice, CompletionUsage, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessage
from openai.types.chat.chat_completion import Choice
from openai.types.chat.chat_completion_chunk import Choice as ChunkChoice
from openai.types.chat.chat_completion_chunk import ChoiceDelta

from agents.backends import ChatMessage
from agents.backends.base import Cancel, cancel_scope
from agents.errors import SymoeError
from orchestrator.config import SymoeConfig
from orchestrator.executor import Executor
from orchestrator.methods import MethodError, MethodSpec
from orchestrator.queries import check_fits, conversation_query, cut_at_stop
from orchestrator.records import AskResult, Query
from orchestrator.server.batching import BatchingExecutor
from orchestrator.server.health import Health
from orchestrator.server.schema import ApiError, ChatRequest, CompletionRequest
from orchestrator.session import Symoe

ROUTERS = ("symoe", "symoe:k2", "symoe:k3", "symoe:distinct", "symoe@never", "symoe@always", "symoe@auto",
           "clusters", "cascade", "budget", "budget:0.25", "budget:0.5", "budget:0.75",
           "moa", "majority", "random_k", "best_single")


#: how often a waiting request looks at its deadline and its client
POLL_S = 0.05


class Ticket:
    """One request's place: running (it holds a slot) or waiting in the queue. ``key`` is the
    router its work runs (what the admission learns service times by), ``due`` when its answer
    is due (monotonic: arrival + ``admit_within`` x ``deadline_s``), ``work`` the work-seconds
    it is expected to take (None: not known yet)."""

    def __init__(self, running: bool, depth: int, key: str = "", work: float | None = None,
                 due: float = math.inf) -> None:
        self.running = running
        self.depth = depth  # requests waiting as it arrived, itself included (0: it got a slot at once)
        self.released = False
        self.arrived = time.monotonic()
        self.started: float | None = self.arrived if running else None
        self.key, self.work, self.due = key, work, due
        self.begun = 0.0  # the admission's work clock when it got its slot
        self.method: MethodSpec | None = None  # the router it is answered by when admission chose (degraded)
        self.degraded: str | None = None  # why it was degraded at the door
        self.outcome: str | None = None  # "done" or "cut" (by the deadline) once its work stopped; None: not learnt


class Admission:
    """``slots`` for running work and a queue of at most ``queued`` requests waiting for one,
    first come first served. A slot is held until ``release``: when the request's work has
    stopped, not when its answer was sent.

    It also knows how long work takes. The machine is shared by the requests running on it
    (processor sharing: n requests each progress at 1/n of their speed alone), so it keeps a
    *work clock* that advances at 1/n per second while n requests run; a request's work is
    the clock's advance between its start and its stop: the seconds it would have taken
    alone. ``learned`` keeps an exponentially weighted mean of that per router (a request cut
    by its deadline only raises it: its work was at least that), seeded by ``priors`` (the
    profile's seconds per question for single experts). ``forecast`` says when a new request
    would finish under processor sharing, given what is running and waiting (each sharer
    delays it by the lesser of its remaining work and its own), and which admitted request
    it would push past its deadline."""

    def __init__(self, slots: int, queued: int, priors: dict[str, float] | None = None,
                 weight: float = 0.3) -> None:
        self.slots, self.queued = slots, queued
        self.running = 0
        self.waiting: deque[Ticket] = deque()
        self.active: list[Ticket] = []  # tickets holding a slot
        self._cond = threading.Condition()  # an RLock: the service decides and enters under it
        self.lock = self._cond
        self._seconds = 0.0  # a running mean of how long work held a slot (for Retry-After)
        self.most_running = 0
        self.weight = weight
        self.learned: dict[str, float] = {}
        self.priors = dict(priors or {})
        self._clock, self._at = 0.0, time.monotonic()

    # -- the work clock and what it learns ----------------------------------------------------
    def _tick(self) -> float:
        now = time.monotonic()
        self._clock += (now - self._at) / max(1, self.running)
        self._at = now
        return self._clock

    def expected(self, key: str) -> float | None:
        """Work-seconds a request to ``key`` takes alone: learned, else the prior, else None."""
        with self._cond:
            return self.learned.get(key, self.priors.get(key))

    def learn(self, key: str, work: float, cut: bool) -> None:
        with self._cond:
            old = self.learned.get(key)
            if old is None:
                self.learned[key] = work
            else:
                mean = (1 - self.weight) * old + self.weight * work
                self.learned[key] = max(old, mean) if cut else mean

    def eta(self, ticket: Ticket) -> float | None:
        """Seconds until ``ticket``'s running work is forecast to finish (None: its work is not known)."""
        with self._cond:
            if ticket.work is None or not ticket.running:
                return None
            clock = self._tick()
            rems = [max((t.work if t.work is not None else ticket.work) - (clock - t.begun),
                        0.1 * (t.work if t.work is not None else ticket.work)) for t in self.active]
            own = max(ticket.work - (clock - ticket.begun), 0.1 * ticket.work)
            return sum(min(r, own) for r in rems)

    def forecast(self, work: float) -> tuple[float, list[Ticket]]:
        """Seconds from now until a new request of ``work`` work-seconds would finish, and the
        admitted requests it would make late (each predicted on time now, past its ``due``
        with it)."""
        with self._cond:
            clock, now = self._tick(), time.monotonic()
            left: list[tuple[Ticket, float]] = []
            for t in self.active:
                own = t.work if t.work is not None else work
                left.append((t, max(own - (clock - t.begun), 0.1 * own)))
            left += [(t, t.work if t.work is not None else work) for t in self.waiting]
            finish = work + sum(min(rem, work) for _, rem in left)
            late = []
            for t, rem in left:
                alone = sum(min(r, rem) for _, r in left)  # its finish under sharing, as things are
                if now + alone <= t.due < now + alone + min(work, rem):
                    late.append(t)
            return finish, late

    # -- slots ----------------------------------------------------------------------------------
    def enter(self, key: str = "", work: float | None = None, due: float = math.inf) -> Ticket:
        """A slot now, a place in the queue, or 429 with ``Retry-After`` when that is full too."""
        with self._cond:
            if self.running < self.slots and not self.waiting:
                self._tick()
                self.running += 1
                self.most_running = max(self.most_running, self.running)
                ticket = Ticket(True, 0, key, work, due)
                ticket.begun = self._clock
                self.active.append(ticket)
                return ticket
            if len(self.waiting) >= self.queued:
                raise ApiError(429, f"{self.running} requests are being answered and {len(self.waiting)} are "
                                    "waiting; retry later", type_="rate_limit_error", code="too_many_requests",
                               headers={"Retry-After": str(self.retry_after())})
            ticket = Ticket(False, len(self.waiting) + 1, key, work, due)
            self.waiting.append(ticket)
            return ticket

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the queue ahead, at the mean time work holds a slot."""
        per = self._seconds or 1.0
        return max(1, math.ceil(per * (1 + len(self.waiting)) / self.slots))

    def wait(self, ticket: Ticket, until: float, cancel: Cancel) -> bool:
        """Wait for a slot until ``until`` (monotonic) or ``cancel``; False (and out of the queue) if none came."""
        with self._cond:
            while not ticket.running:
                left = until - time.monotonic()
                if left <= 0 or cancel.cancelled:
                    self._leave(ticket)
                    return False
                self._cond.wait(min(POLL_S, left))
            return True

    def release(self, ticket: Ticket) -> None:
        """The request's work stopped (or never started): its slot or place goes to the next;
        its work is learnt when ``ticket.outcome`` says how it ended."""
        with self._cond:
            self._leave(ticket)

    def _leave(self, ticket: Ticket) -> None:
        if ticket.released:
            return
        ticket.released = True
        clock = self._tick()
        if ticket.running:
            self.running -= 1
            if ticket in self.active:
                self.active.remove(ticket)
            if ticket.started is not None:
                held = time.monotonic() - ticket.started
                self._seconds = held if not self._seconds else 0.8 * self._seconds + 0.2 * held
            if ticket.outcome is not None and ticket.key:
                self.learn(ticket.key, clock - ticket.begun, ticket.outcome == "cut")
        elif ticket in self.waiting:
            self.waiting.remove(ticket)
        while self.running < self.slots and self.waiting:
            nxt = self.waiting.popleft()
            nxt.running, nxt.started, nxt.begun = True, time.monotonic(), clock
            self.running += 1
            self.active.append(nxt)
        self.most_running = max(self.most_running, self.running)
        self._cond.notify_all()


class Outcome:
    """An answered request: the session's answer record, whether the deadline cut it short,
    whether it was degraded to a cheaper router (and why), and the answers that failed
    before it (a failed router's record, whose usage was spent too)."""

    def __init__(self, result: AskResult, deadline_exceeded: bool, seconds: float, degraded: str | None = None,
                 queued_s: float = 0.0, failed: list[AskResult] | None = None) -> None:
        self.result, self.deadline_exceeded, self.seconds = result, deadline_exceeded, seconds
        self.degraded, self.queued_s = degraded, queued_s
        self.failed = failed or []

    @property
    def text(self) -> str:
        return self.result.text


class Service:
    """The session (models, batcher, cache, pipeline), the health tracker and the request bounds a
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

        self.available = self.health.available({e: s.load_as for e, s in config.experts.items()})
        self.symoe = Symoe(config, wrap_executor=batching, available=self.available)
        self.batcher = made[0]
        self.pool = self.symoe.pool
        self.admission = Admission(limits.max_in_flight, limits.max_queued)
        self.requests = 0
        #: admitted, rejected, cancelled (the client left), degraded, timed_out (cut by the deadline), unserved (503)
        self.counts: Counter[str] = Counter()
        self.working = 0  # requests whose work thread is running now
        self._count = threading.Lock()
        self.created = int(time.time())
        # load now what every routed request needs, so no request waits for it
        self.profile_problem: str | None = None
        _ = self.symoe.pipeline.matcher
        try:
            _ = self.symoe.pipeline.profile
        except SymoeError as exc:  # single experts still serve; routed requests get this line
            self.profile_problem = str(exc)
        self.degrade_to = self._degrade_target()
        self.admission.priors = self._priors()

    def _degrade_target(self) -> MethodSpec | None:
        """``server.degrade_to``: ``default`` (the default expert alone), ``cheapest`` (the routed
        expert with the fewest seconds per question in the profile), or any router."""
        target = self.config.server.degrade_to
        if not target:
            return None
        if target == "cheapest":
            if self.profile_problem is not None:
                raise SymoeError(f"server.degrade_to 'cheapest' reads the profile: {self.profile_problem}")
            measured = self.symoe.pipeline.profile.experts.items()
            costs = {n: e.seconds_per_question or e.tokens_per_question
                     for n, e in measured if n in self.config.experts and e.questions}
            if not costs:
                raise SymoeError("server.degrade_to 'cheapest': the profile measured no expert")
            target = "single:" + min(costs, key=lambda n: (costs[n], n))
        name = f"single:{self.config.default_expert}" if target == "default" else target
        try:
            return MethodSpec.parse(name, self.config)
        except SymoeError as exc:
            raise SymoeError(f"server.degrade_to {target!r}: {exc}") from None

    def _priors(self) -> dict[str, float]:
        """What a single expert takes alone before the server has seen it answer: the profile's
        seconds per question (none without a profile)."""
        if self.profile_problem is not None:
            return {}
        return {f"single:{n}": e.seconds_per_question for n, e in self.symoe.pipeline.profile.experts.items()
                if e.seconds_per_question > 0}

    def close(self) -> None:
        self.symoe.close()

    def note(self, event: str, n: int = 1) -> None:
        with self._count:
            self.counts[event] += n

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

    def degradable(self, method: MethodSpec) -> bool:
        """Whether a request to ``method`` may be answered by ``degrade_to`` under load: a
        router other than the target; a request naming one expert gets that expert or a 429."""
        return self.degrade_to is not None and str(method) != str(self.degrade_to) and \
            not str(method).startswith("single:")

    def can_serve(self, method: MethodSpec) -> bool:
        healthy = self.available()
        single = str(method).removeprefix("single:") if str(method).startswith("single:") else None
        return bool(healthy) and (single is None or single in healthy)

    def admit(self, method: MethodSpec) -> Ticket:
        """A slot or a place in the queue for a request to ``method``, decided at once, before
        any work:

        - no expert can serve it (cooled down after failing): ``degrade_to`` when that can, else 503;
        - with work already admitted (``server.admit_by_deadline``), the admission forecasts when
          it would finish (``Admission.forecast``): if after ``admit_within`` of its deadline, or if
          it would push an admitted request past its own, a routed request goes to ``degrade_to``
          when that one fits, and otherwise it gets 429 with ``Retry-After`` (its answer would
          come late: better now than a 504 after the deadline);
        - a full queue: 429 with ``Retry-After``.
        A router whose work is not known yet (no request to it has finished) is admitted: the
        first one teaches the admission its time."""
        limits = self.config.server
        why: str | None = None
        target = method
        if not self.can_serve(method):
            if self.degrade_to is not None and str(method) != str(self.degrade_to) and self.can_serve(self.degrade_to):
                target = self.degrade_to
                why = f"{method} cannot serve now (cooled down after failing: {self.health.cooling()})"
            else:
                self.note("unserved")
                single = str(method).removeprefix("single:") if str(method).startswith("single:") else None
                who = f"expert {single!r} is" if single else "every expert is"
                raise ApiError(503, f"no expert can serve this request: {who} cooled down after failing "
                                    f"({self.health.cooling()}); retry later", type_="server_error",
                               code="no_expert_available", headers={"Retry-After": str(math.ceil(max(
                                   [1.0, *self.health.cooling().values()])))})
        due = time.monotonic() + limits.deadline_s * limits.admit_within
        with self.admission.lock:
            if limits.admit_by_deadline and (self.admission.running or self.admission.waiting):
                target, why = self._fits(target, why, due)
            work = self.admission.expected(str(target))
            try:
                ticket = self.admission.enter(str(target), work, due)
            except ApiError:
                self.note("rejected")
                raise
        if target is not method:
            ticket.method, ticket.degraded = target, f"{why}: answered by {target} instead of {method}"
        return ticket

    def _fits(self, method: MethodSpec, why: str | None, due: float) -> tuple[MethodSpec, str | None]:
        """``method`` if its forecast fits, else ``degrade_to`` if that one's does, else a 429."""
        limits = self.config.server
        left = due - time.monotonic()
        ahead = self.admission.running + len(self.admission.waiting)
        work = self.admission.expected(str(method))
        if work is None:
            return method, why
        finish, late = self.admission.forecast(work)
        if finish <= left and not late:
            return method, why
        said = (f"{ahead} request(s) running or waiting; {method} forecast to finish in {finish:.1f} s" +
                (f", which would push {len(late)} admitted request(s) past their deadline" if late else
                 f", past {limits.admit_within:g} of its deadline of {limits.deadline_s:g} s"))
        if self.degradable(method) and self.degrade_to is not None:
            cheap = self.admission.expected(str(self.degrade_to))
            d_finish, d_late = self.admission.forecast(cheap) if cheap is not None else (0.0, [])
            if d_finish <= left and not d_late:
                return self.degrade_to, said
        self.note("rejected")
        retry = max(1, math.ceil(finish - left))
        raise ApiError(429, f"not admitted: {said}; retry in {retry} s", type_="rate_limit_error",
                       code="too_many_requests", headers={"Retry-After": str(retry)})

    def _hedge_now(self, ticket: Ticket, left: float) -> bool:
        """Whether to start ``degrade_to`` beside a request's router now: when its router is not
        forecast to finish in the ``left`` seconds, and the cheap answer (forecast with the work
        running now, plus 1 s) needs about that long."""
        assert self.degrade_to is not None
        cheap = self.admission.expected(str(self.degrade_to))
        needs = (self.admission.forecast(cheap)[0] if cheap is not None else 2.0) + 1.0
        if left > needs:
            return False
        eta = self.admission.eta(ticket)
        return eta is None or eta > left

    def answer(self, query: Query, method: MethodSpec, seed: int | None = None,
               on_text: Callable[[str], None] | None = None, *, cancel: Cancel | None = None,
               ticket: Ticket | None = None) -> Outcome:
        """Run the pipeline for one request under its deadline (counted from its arrival) and
        ``cancel`` (set when the client goes); past the deadline its work is cancelled and the
        answer is what the pipeline's stages make of the experts that finished. When no expert
        of its router answered (one failed, its server gone) and time is left, ``degrade_to``
        answers it instead, and the record says so."""
        limits = self.config.server
        ticket = ticket or self.admit(method)
        flag = Cancel(parent=cancel)
        deadline = ticket.arrived + limits.deadline_s
        with self._count:
            self.requests += 1
        try:
            if not self.admission.wait(ticket, min(deadline, ticket.arrived + limits.queue_wait_s), flag):
                if flag.cancelled:
                    self.note("cancelled")
                    raise ApiError(499, "the client closed the request while it waited for a slot",
                                   code="client_closed_request")
                self.note("rejected")
                waited = time.monotonic() - ticket.arrived
                raise ApiError(429, f"no slot came free within {waited:.1f} s (server.queue_wait_s "
                                    f"{limits.queue_wait_s:g}); retry later", type_="rate_limit_error",
                               code="too_many_requests",
                               headers={"Retry-After": str(self.admission.retry_after())})
        except BaseException:
            self.admission.release(ticket)
            raise
        self.note("admitted")
        queued_s = (ticket.started or ticket.arrived) - ticket.arrived
        degraded = ticket.degraded
        if ticket.method is not None:
            method = ticket.method
        elif self.degradable(method) and ticket.depth >= limits.degrade_when_queued:
            assert self.degrade_to is not None
            degraded = (f"{ticket.depth} request(s) were waiting for a slot as it arrived "
                        f"(server.degrade_when_queued {limits.degrade_when_queued}): answered by "
                        f"{self.degrade_to} instead of {method}")
            method = self.degrade_to
            with self.admission.lock:
                ticket.key, ticket.work = str(method), self.admission.expected(str(method))
        if degraded:
            self.note("degraded")
        box: list[tuple[AskResult, list[AskResult], str | None] | BaseException] = []
        stopped = threading.Event()
        cut = threading.Event()  # set just before the deadline cancels the work

        # the hedge: degrade_to started in the same slot when the router is forecast to miss the deadline
        hedge: list[AskResult | BaseException] = []
        hedge_flag = Cancel(parent=flag)
        hedged: list[float] = []  # seconds before the deadline it started
        holders = [1]  # the threads whose work holds the slot

        def let_go() -> None:
            with self._count:
                holders[0] -= 1
                last = holders[0] == 0
            if last:
                self.admission.release(ticket)  # the slot frees when all its work has stopped

        def hedge_work() -> None:
            try:
                with cancel_scope(hedge_flag):
                    assert self.degrade_to is not None
                    hedge.append(self.symoe.ask_query(query, self.degrade_to, seed=seed))
            except BaseException as exc:  # noqa: BLE001 - read by the request's thread
                hedge.append(exc)
            finally:
                let_go()

        def work() -> None:
            try:
                with cancel_scope(flag):
                    result = self.symoe.ask_query(query, method, seed=seed, on_text=on_text)
                    failed: list[AskResult] = []
                    why = None
                    fallback = self.degrade_to
                    if result.error and not flag.cancelled and fallback is not None and \
                            str(method) != str(fallback) and self.can_serve(fallback):
                        failed, why = [result], (f"{method} failed ({result.error.splitlines()[0][:200]}): "
                                                 f"answered by {fallback} instead")
                        ticket.outcome = None  # two routers' work: nothing to learn
                        result = self.symoe.ask_query(query, fallback, seed=seed, on_text=on_text)
                    else:  # learnt: a finished answer's work, or a cut one's (at least that); not a failure's
                        ticket.outcome = "cut" if cut.is_set() else None if flag.cancelled or result.error \
                            else "done"
                    box.append((result, failed, why))
            except BaseException as exc:  # noqa: BLE001 - handed to the request's thread
                box.append(exc)
            finally:
                with self._count:
                    self.working -= 1
                let_go()
                stopped.set()

        with self._count:
            self.working += 1
        threading.Thread(target=work, daemon=True, name="symoe-work").start()
        timed_out = False
        may_hedge = limits.hedge and self.degradable(method)
        while not stopped.wait(POLL_S):
            if flag.cancelled:
                break
            now = time.monotonic()
            if may_hedge and not hedged and self._hedge_now(ticket, deadline - now):
                hedged.append(deadline - now)
                with self._count:
                    joined = holders[0] > 0  # not when the router's work has just stopped and let go
                    holders[0] += joined
                if joined:
                    threading.Thread(target=hedge_work, daemon=True, name="symoe-hedge").start()
            if now >= deadline:
                timed_out = True
                cut.set()
                flag.cancel(f"the deadline of {limits.deadline_s:g} s passed")
                break
        if not timed_out:
            hedge_flag.cancel("the router answered")
        if flag.cancelled and not timed_out:  # the client left (its work may have stopped at once): nobody reads
            self.note("cancelled")
            stopped.wait(limits.stop_grace_s)
            raise ApiError(499, "the client closed the request", code="client_closed_request")
        if timed_out:
            self.note("timed_out")
            stopped.wait(limits.stop_grace_s)  # the stages combine what the experts gave, at once
        seconds = time.monotonic() - ticket.arrived
        if not box:
            raise ApiError(504, f"no answer within the deadline of {limits.deadline_s:g} s; its work is being "
                                "stopped", type_="server_error", code="deadline_exceeded")
        got = box[0]
        if isinstance(got, SymoeError):
            raise ApiError(400 if isinstance(got, MethodError) else 503, str(got),
                           type_="invalid_request_error" if isinstance(got, MethodError) else "server_error")
        if isinstance(got, BaseException):
            raise got
        done, failed, fell_back = got
        if fell_back:
            if not degraded:
                self.note("degraded")
            degraded = f"{degraded}; then {fell_back}" if degraded else fell_back
            self.note("fell_back")
        if timed_out and (done.error or not done.text.strip()):
            spare = hedge[0] if hedge else None
            if isinstance(spare, AskResult) and not spare.error and spare.text.strip():
                self.note("degraded")
                self.note("hedged")
                why = (f"{method} gave no answer by the deadline of {limits.deadline_s:g} s: answered by "
                       f"{self.degrade_to}, started {hedged[0]:.1f} s before it when {method} was forecast to miss it")
                return Outcome(spare, True, seconds, f"{degraded}; then {why}" if degraded else why, queued_s,
                               [done, *failed])
            raise ApiError(504, f"no expert answered within the deadline of {limits.deadline_s:g} s",
                           type_="server_error", code="deadline_exceeded")
        if done.error:
            raise ApiError(503, done.error, type_="server_error", code="experts_failed")
        return Outcome(done, timed_out, seconds, degraded, queued_s, failed)

    # -- responses ------------------------------------------------------------------------
    def record(self, outcome: Outcome) -> dict[str, Any]:
        """The ``symoe`` object of a response: the answer record's, with the server's own state."""
        return {**outcome.result.record(), "cooled_down": self.health.cooling(),
                "deadline_exceeded": outcome.deadline_exceeded, "seconds": round(outcome.seconds, 3),
                "queued_s": round(outcome.queued_s, 3), "degraded": outcome.degraded is not None,
                "degraded_why": outcome.degraded,
                "failed_experts": sorted({a.expert for r in (outcome.result, *outcome.failed)
                                          for a in r.expert_answers if not a.ok})}

    def usage(self, outcome: Outcome) -> CompletionUsage:
        u = outcome.result.usage
        for failed in outcome.failed:  # a failed router's tokens were spent too
            u = u + failed.usage
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
