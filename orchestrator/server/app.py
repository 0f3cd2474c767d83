"""The HTTP face: FastAPI routes in OpenAI's shapes over a ``Service``.

    GET  /v1/models            every router and expert, as OpenAI ``Model`` objects
    POST /v1/chat/completions  routed chat (``stream: true`` for server-sent events)
    POST /v1/completions       routed completion of a prompt
    GET  /health               ok, the loaded models, the cooled-down experts, running and queued requests,
                               the degrade target
    GET  /metrics              Prometheus text: requests, latency, model batches, failures, and the
                               admission's counts (admitted, rejected, cancelled, degraded,
                               timed out, unserved), requests running and queued

Safe by default: it binds to loopback (``symoe serve``); with an API key every request needs
``Authorization: Bearer <key>``; the body size, ``max_tokens``, the message count, the
requests running and the requests waiting are bounded by the ``server:`` config (a full
queue: 429 with ``Retry-After``, decided before any work or stream starts). A client that
disconnects, streaming or not, cancels its request's work (``Service.answer``). Each
request's work runs on a thread of its own that ends with it, so threads return to their
count after a burst. Every error is a 4xx (or 5xx) JSON body in OpenAI's error shape, never
a traceback; each request is logged in one line.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sse_starlette.sse import EventSourceResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Message, Receive, Scope, Send

from agents.backends.base import Cancel
from orchestrator.api import cut_at_stop
from orchestrator.methods import MethodSpec
from orchestrator.records import Query
from orchestrator.server.schema import ApiError, ChatRequest, CompletionRequest
from orchestrator.server.service import Outcome, Service, Ticket

log = logging.getLogger("symoe.serve")

#: the admission's events, as ``symoe_admission_total{event=...}``
EVENTS = ("admitted", "rejected", "cancelled", "degraded", "fell_back", "hedged", "timed_out", "unserved")


class AdmissionCollector(Collector):
    """The service's admission counts and its running and queued requests, read at each scrape."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def collect(self) -> Any:
        counts = CounterMetricFamily("symoe_admission", "requests by what the admission did: admitted, "
                                     "rejected (429), cancelled (the client left), degraded (a cheaper router), "
                                     "fell_back (answered by degrade_to after its router failed), "
                                     "hedged (answered by degrade_to, started beside a router that missed the "
                                     "deadline), "
                                     "timed_out (cut by the deadline), unserved (503: no expert)", labels=["event"])
        for event in EVENTS:
            counts.add_metric([event], self.service.counts.get(event, 0))
        yield counts
        admission = self.service.admission
        yield GaugeMetricFamily("symoe_queue_depth", "requests waiting for a slot", value=len(admission.waiting))
        yield GaugeMetricFamily("symoe_requests_running", "requests holding a slot (their work has not stopped)",
                                value=admission.running)
        yield GaugeMetricFamily("symoe_requests_running_max", "most requests that held a slot at once",
                                value=admission.most_running)


class Metrics:
    """The Prometheus collectors of one app (their own registry: several apps may live in one process)."""

    def __init__(self, service: Service) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("symoe_requests_total", "HTTP requests", ["path", "model", "status"],
                                registry=self.registry)
        self.latency = Histogram("symoe_request_seconds", "request latency", ["path"], registry=self.registry,
                                 buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 60, 120, 300))
        self.in_flight = Gauge("symoe_requests_in_flight", "requests being answered", registry=self.registry)
        batches = Gauge("symoe_model_batches", "batches run per model (concurrent requests share them)", ["model"],
                        registry=self.registry)
        jobs = Gauge("symoe_model_jobs", "generation jobs run per model", ["model"], registry=self.registry)
        failed = Gauge("symoe_expert_failures", "failed generations per expert", ["expert"], registry=self.registry)
        cooled = Gauge("symoe_expert_cooled_down", "1 while an expert is cooled down", ["expert"],
                       registry=self.registry)
        cooldowns = Gauge("symoe_expert_cooldowns", "times an expert was cooled down", ["expert"],
                          registry=self.registry)

        def refresh() -> None:
            for model, n in service.batcher.batches.items():
                batches.labels(model).set(n)
            for model, n in service.batcher.jobs.items():
                jobs.labels(model).set(n)
            cooling = service.health.cooling()
            for expert in service.config.experts:
                failed.labels(expert).set(service.health.failed.get(expert, 0))
                cooled.labels(expert).set(1 if expert in cooling else 0)
                cooldowns.labels(expert).set(service.health.cooldowns.get(expert, 0))

        self.refresh = refresh
        self.registry.register(AdmissionCollector(service))

    def text(self) -> bytes:
        self.refresh()
        return generate_latest(self.registry)


#: pydantic's error types -> the ``code`` of the 400 (OpenAI's codes where it has one).
VALIDATION_CODES = {"missing": "missing_required_parameter", "greater_than_equal": "below_min_value",
                    "greater_than": "below_min_value", "less_than_equal": "above_max_value",
                    "less_than": "above_max_value", "too_short": "invalid_value", "too_long": "invalid_value",
                    "json_invalid": "invalid_json"}
OUT_OF_RANGE = ("greater_than_equal", "greater_than", "less_than_equal", "less_than")


def error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers or None)


def in_thread(call: Callable[[], Any]) -> asyncio.Future[Any]:
    """``call()`` on a thread of its own (it ends with the call: no pool keeps it), awaited."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def run() -> None:
        try:
            result, error = call(), None
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
            result, error = None, exc
        loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, daemon=True, name="symoe-request").start()
    return future


async def watch_client(request: Request, cancel: Cancel) -> None:
    """Set ``cancel`` when the client disconnects."""
    while not cancel.cancelled:
        if await request.is_disconnected():
            cancel.cancel("the client disconnected")
            return
        await asyncio.sleep(0.1)


def create_app(service: Service) -> FastAPI:
    """The app: the guard (key, body size, metrics, log) around every request, OpenAI-shaped
    errors, and the routes."""
    app = FastAPI(title="symoe", description="A skill-routed mixture of expert LLMs behind the OpenAI API.",
                  docs_url=None, redoc_url=None)
    metrics = Metrics(service)
    add_guard(app, service, metrics)
    add_error_handlers(app)
    add_routes(app, service, metrics)
    return app


def add_guard(app: FastAPI, service: Service, metrics: Metrics) -> None:
    """Every request: the API key, the body's size bound, then its count, latency and log line.
    A plain ASGI middleware (not ``BaseHTTPMiddleware``): the routes see the client's own
    ``receive``, so a disconnect reaches them (``watch_client``)."""
    limits = service.config.server
    inner = app.build_middleware_stack

    def build() -> Any:
        downstream = inner()

        async def guard(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await downstream(scope, receive, send)
                return
            start = time.perf_counter()
            request = Request(scope)
            model, status = "-", [500]

            async def sending(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status[0] = int(message["status"])
                await send(message)

            try:
                body = await checked_body(request, receive)
                if request.method == "POST":
                    try:
                        model = str(json.loads(body).get("model", "-"))[:80]
                    except (ValueError, AttributeError):
                        model = "-"
                replayed = [False]

                async def replay() -> Message:
                    if not replayed[0]:
                        replayed[0] = True
                        return {"type": "http.request", "body": body, "more_body": False}
                    return await receive()  # what follows is the client's: a disconnect

                await downstream(scope, replay, sending)
            except ApiError as exc:
                await error_response(exc)(scope, receive, sending)
            seconds = time.perf_counter() - start
            metrics.requests.labels(scope["path"], model, str(status[0])).inc()
            metrics.latency.labels(scope["path"]).observe(seconds)
            log.info("%s %s model=%s %d %.3fs", request.method, scope["path"], model, status[0], seconds)

        async def checked_body(request: Request, receive: Receive) -> bytes:
            if service.api_key and request.url.path not in ("/health",):
                given = request.headers.get("authorization", "")
                if not hmac.compare_digest(given.encode(), f"Bearer {service.api_key}".encode()):
                    raise ApiError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                                   type_="authentication_error", code="invalid_api_key")
            length = request.headers.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > limits.max_body_bytes):
                raise ApiError(413, f"the request body is over {limits.max_body_bytes} bytes", code="too_large")
            body = b""
            more = True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    break
                body += message.get("body", b"")
                more = bool(message.get("more_body"))
                if len(body) > limits.max_body_bytes:
                    raise ApiError(413, f"the request body is over {limits.max_body_bytes} bytes", code="too_large")
            return body

        return guard

    app.build_middleware_stack = build  # type: ignore[method-assign]


def add_error_handlers(app: FastAPI) -> None:
    """Every error as OpenAI's JSON error object with its 4xx/5xx status, never a traceback."""

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        if first.get("type") == "json_invalid":
            message = "the request body is not valid JSON"
        else:
            message = f"{where or 'body'}: {first.get('msg', 'invalid request')}".replace("Value error, ", "")
            given = first.get("input")
            if first.get("type") in OUT_OF_RANGE and isinstance(given, int | float) and not isinstance(given, bool):
                message += f", not {given}"
        return error_response(ApiError(400, message, param=where or None, code=VALIDATION_CODES.get(
            str(first.get("type")), "invalid_value")))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(ApiError(exc.status_code, str(exc.detail)))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("internal error: %s: %s", type(exc).__name__, exc)
        return error_response(ApiError(500, f"internal error ({type(exc).__name__})", type_="server_error"))


def add_routes(app: FastAPI, service: Service, metrics: Metrics) -> None:
    """/v1/models, /health, /metrics, /v1/chat/completions (streaming or not), /v1/completions."""

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [m.model_dump() for m in service.models()]}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "loaded": service.pool.loaded(), "cooled_down": service.health.cooling(),
                "requests": service.requests, "running": service.admission.running,
                "queued": len(service.admission.waiting),
                "degrade_to": None if service.degrade_to is None else str(service.degrade_to)}

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.text(), media_type=CONTENT_TYPE_LATEST)

    async def answered(request: Request, query: Query, method: MethodSpec, seed: int | None) -> Outcome:
        """The pipeline's answer, run off the event loop, counted in flight meanwhile; the
        admission decides first (429/503 at once); a client that leaves cancels the work."""
        ticket = service.admit(method)
        cancel = Cancel()
        watcher = asyncio.create_task(watch_client(request, cancel))
        metrics.in_flight.inc()
        try:
            return await in_thread(lambda: service.answer(query, method, seed, cancel=cancel, ticket=ticket))
        finally:
            metrics.in_flight.dec()
            watcher.cancel()

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(body: ChatRequest, request: Request) -> Any:
        method = service.method_for(body.model)
        query = service.chat_query(body)
        if body.stream:
            ticket = service.admit(method)  # a full queue is a 429, not an error inside a 200 stream
            return stream(service, metrics, body.model, lambda on_text, cancel: service.answer(
                query, method, body.seed, on_text, cancel=cancel, ticket=ticket), body.stop, ticket)
        outcome = await answered(request, query, method, body.seed)
        return JSONResponse(service.chat_completion(body.model, outcome, body.stop).model_dump(exclude_none=True))

    @app.post("/v1/completions", response_model=None)
    async def complete(body: CompletionRequest, request: Request) -> Any:
        method = service.method_for(body.model)
        query = service.completion_query(body)
        if body.stream:
            raise ApiError(400, "stream is supported on /v1/chat/completions only", param="stream")
        outcome = await answered(request, query, method, body.seed)
        return JSONResponse(service.completion(body.model, outcome, body.stop).model_dump(exclude_none=True))


def stream(service: Service, metrics: Metrics, model: str,
           answer: Callable[[Callable[[str], None], Cancel], Outcome],
           stop: str | list[str] | None = None, ticket: Ticket | None = None) -> EventSourceResponse:
    """Server-sent events: the answer's text as it is produced (up to the first stop sequence),
    then a last chunk with the finish reason, usage and the ``symoe`` record, then ``[DONE]``.
    A client that disconnects cancels the request's work (its generation stops at the next token)."""
    cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    cancel = Cancel()

    async def events() -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        def put(kind: str, item: Any) -> None:
            loop.call_soon_threadsafe(pieces.put_nowait, (kind, item))

        def produce() -> None:
            metrics.in_flight.inc()
            try:
                put("done", answer(lambda piece: put("text", piece), cancel))
            except ApiError as exc:
                put("error", exc)
            except Exception as exc:  # noqa: BLE001 - the stream must end with an error event, not hang
                log.error("internal error in a stream: %s: %s", type(exc).__name__, exc)
                put("error", ApiError(500, f"internal error ({type(exc).__name__})", type_="server_error"))
            finally:
                metrics.in_flight.dec()

        started[0] = True
        threading.Thread(target=produce, daemon=True, name="symoe-stream").start()
        try:
            async for event in relay(pieces):
                yield event
        finally:
            cancel.cancel("the client disconnected")  # a no-op once the answer is complete

    async def relay(pieces: asyncio.Queue[tuple[str, Any]]) -> AsyncIterator[str]:
        sent, stopped = "", False
        yield service.chunk(cid, model, None, first=True).model_dump_json(exclude_none=True)  # the role, as OpenAI
        while True:
            kind, item = await pieces.get()
            if kind == "text":
                if stopped:
                    continue
                kept = cut_at_stop(sent + item, stop)[len(sent):]
                stopped = len(kept) < len(item)
                if kept:
                    sent += kept
                    yield service.chunk(cid, model, kept).model_dump_json(exclude_none=True)
            elif kind == "error":
                yield json.dumps(item.body())
                break
            else:
                outcome: Outcome = item
                final, said = cut_at_stop(outcome.text, stop), sent.strip()
                rest = final[len(said):] if final.startswith(said) else \
                    "" if stopped else ("\n" + final if said else final)
                if rest:
                    yield service.chunk(cid, model, rest).model_dump_json(exclude_none=True)
                yield service.chunk(cid, model, None, outcome).model_dump_json(exclude_none=True)
                break
        yield "[DONE]"

    started = [False]
    body = events()
    if ticket is not None:  # a stream that never starts (its client gone first) gives its place back
        weakref.finalize(body, lambda: None if started[0] else service.admission.release(ticket))
    return EventSourceResponse(body, ping=15)
