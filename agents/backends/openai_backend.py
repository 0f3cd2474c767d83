"""OpenAI-compatible server backend: vLLM serve, llama.cpp server, Ollama, hosted APIs.

The expert's spec says where and what:

- ``base_url``: the API root that holds ``/chat/completions`` (e.g. ``http://127.0.0.1:8000/v1``);
  when unset, ``SYMOE_OPENAI_BASE_URL`` then ``OPENAI_BASE_URL`` from the environment.
- ``api_key_env``: the environment variable holding the key (default ``OPENAI_API_KEY``); a
  local server usually needs none, so a missing key is not an error.
- ``model``: the model name the server knows (default: the expert's name).
- ``chat_template: false``: a base model; requests go to ``/completions`` with the plain-text
  prompt of ``agents.prompts.completion_prompt`` and its stop strings.
- ``timeout_s`` and ``max_retries``: per-request timeout; retries with exponential backoff and
  jitter on connection errors, timeouts, HTTP 429 and 5xx, honouring ``Retry-After``.
- ``params``: ``concurrency`` (requests of one batch in flight at once, default 4),
  ``backoff_s`` (first retry delay, default 0.5), ``backoff_max_s`` (cap, default 30),
  ``retry_after_max_s`` (longest ``Retry-After`` honoured, default 60), ``load_timeout_s``
  (the reachability check at load, default 5), ``extra_body`` (a mapping merged into every
  request body, e.g. ``{top_k: 1}`` for vLLM).

A request given a cancel flag (``Backend.generate``'s ``cancels``) goes out on an asyncio
client on the backend's own I/O thread; when the flag is set the request's task is
cancelled, which closes its HTTP connection (the server sees the client go and can stop
generating), and a retry's wait ends at once. It comes back as ``Generation.cancelled``.

``load`` checks the server answers ``GET /models`` and raises ``BackendError`` with one line
when it does not. A request that still fails after its retries comes back as a
``Generation`` with ``error`` set, so one failing expert degrades an answer instead of
losing the query.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import email.utils
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import httpx

from agents.backends.base import Backend, BackendError, Cancel, Generation, GenerationRequest, TokenLogprob, Usage
from agents.backends.registry import register_backend
from agents.prompts import COMPLETION_STOPS, completion_prompt

log = logging.getLogger("symoe.openai")
SLOW_S = 5.0  # waits this long (a slow or hung server) are reported as they happen

if TYPE_CHECKING:
    from agents.pool import ExpertSpec

#: Environment variables consulted, in order, when the spec has no ``base_url``.
BASE_URL_ENVS = ("SYMOE_OPENAI_BASE_URL", "OPENAI_BASE_URL")


class _Retryable(Exception):
    """One attempt failed in a way worth retrying; ``wait`` is the server's Retry-After."""

    def __init__(self, message: str, wait: float | None = None) -> None:
        super().__init__(message)
        self.wait = wait


class _Failed(Exception):
    """A request failed for good (a 4xx other than 429, or a malformed answer)."""


class _Cancelled(Exception):
    """The caller cancelled the request: its connection was closed, it is not retried."""


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), if any."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _server_message(response: httpx.Response) -> str:
    """The server's own error text, on one short line."""
    try:
        body = response.json()
    except ValueError:
        text = response.text
    else:
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            text = str(error.get("message") or error)
        elif error:
            text = str(error)
        elif isinstance(body, dict) and body.get("detail"):
            text = str(body["detail"])
        else:
            text = str(body)
    text = " ".join(text.split())
    return text[:300] + ("..." if len(text) > 300 else "")


def _describe(exc: httpx.HTTPError) -> str:
    kind = type(exc).__name__
    detail = " ".join(str(exc).split())
    return f"{kind}: {detail}" if detail else kind


@register_backend("openai")
class OpenAIBackend(Backend):
    """Sends each request to an OpenAI-compatible server; a batch goes out concurrently."""

    needs_model_file = False
    thread_safe = True
    #: A batch goes out as concurrent requests (``params.concurrency``, default 4).
    default_batch = 4

    def __init__(self, spec: ExpertSpec) -> None:
        super().__init__(spec)
        self._client: httpx.Client | None = None
        self._io: tuple[asyncio.AbstractEventLoop, threading.Thread] | None = None  # for cancellable requests
        self._async_client: httpx.AsyncClient | None = None
        self._concurrency = 4
        self._refuses_logprobs = False  # set when the server answered 400/422 to a request with log-probs
        self._stats_lock = threading.Lock()
        #: Requests sent (every attempt) and the seconds waited before each retry, over this
        #: backend's life.
        self.attempts = 0
        self.waits: list[float] = []
        #: Model ids the server listed at load (empty if it listed none).
        self.server_models: list[str] = []

    @property
    def retries(self) -> int:
        """Retries made over this backend's life (one wait before each)."""
        return len(self.waits)

    # -- settings ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str | None:
        url = self.spec.base_url or next((os.environ[e] for e in BASE_URL_ENVS if os.environ.get(e)), None)
        return url.rstrip("/") if url else None

    @property
    def model_name(self) -> str:
        return self.spec.model or self.spec.name

    def _param(self, key: str, default: float) -> float:
        value = self.spec.params.get(key, default)
        try:
            return float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise BackendError(
                f"expert {self.spec.name!r}: params.{key} must be a number, got {value!r}"
            ) from None

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        key = os.environ.get(self.spec.api_key_env or "OPENAI_API_KEY")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    # -- lifecycle ----------------------------------------------------------------------------

    def _load(self) -> None:
        base = self.base_url
        if not base:
            raise BackendError(
                f"expert {self.spec.name!r} uses the openai backend but has no base_url; set "
                f"`base_url` in its config or {BASE_URL_ENVS[0]} (e.g. http://127.0.0.1:8000/v1)"
            )
        if not base.startswith(("http://", "https://")):
            raise BackendError(
                f"expert {self.spec.name!r}: base_url {base!r} must start with http:// or https://"
            )
        self._concurrency = max(1, int(self._param("concurrency", 4)))
        timeout = self.spec.timeout_s
        self._client = httpx.Client(
            base_url=base,
            headers=self._headers(),
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(max_connections=self._concurrency, max_keepalive_connections=self._concurrency),
        )
        try:
            self._check_server(base)
        except BackendError:
            self._client.close()
            self._client = None
            raise

    def _check_server(self, base: str) -> None:
        url = f"{base}/models"
        load_timeout = min(self._param("load_timeout_s", 5.0), self.spec.timeout_s)
        attempts = 1 + max(0, self.spec.max_retries)
        try:
            response = self._with_retries(
                lambda: self._send("GET", "/models", None, timeout=load_timeout)
            )
        except _Retryable as exc:
            raise BackendError(
                f"cannot reach the OpenAI-compatible server for expert {self.spec.name!r} at {url} "
                f"after {attempts} attempt(s) ({exc}); start the server or fix the expert's base_url "
                f"(or {BASE_URL_ENVS[0]})"
            ) from None
        except _Failed as exc:
            hint = ""
            if "HTTP 401" in str(exc) or "HTTP 403" in str(exc):
                hint = f"; set a valid key in ${self.spec.api_key_env}"
            elif "HTTP 404" in str(exc) and not base.endswith("/v1"):
                hint = f"; did you mean base_url {base}/v1 ?"
            raise BackendError(
                f"the server for expert {self.spec.name!r} at {url} refused the check: {exc}{hint}"
            ) from None
        try:
            data = response.json().get("data") or []
            self.server_models = [str(m.get("id")) for m in data if isinstance(m, dict)]
        except (ValueError, AttributeError):
            self.server_models = []

    def _unload(self) -> None:
        if self._client is not None:
            self._client.close()
        self._client = None
        if self._io is not None:
            loop, thread = self._io
            if self._async_client is not None:
                with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
                    asyncio.run_coroutine_threadsafe(self._async_client.aclose(), loop).result(5)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            loop.close()
        self._io, self._async_client = None, None

    def _loop(self) -> asyncio.AbstractEventLoop:
        """The I/O thread's event loop (started at the first cancellable request)."""
        with self._stats_lock:
            if self._io is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, daemon=True, name=f"openai-{self.spec.name}-io")
                thread.start()
                self._io = (loop, thread)
            return self._io[0]

    async def _async_send(self, method: str, path: str, body: dict[str, Any] | None,
                          timeout: float | None) -> httpx.Response:
        if self._async_client is None:
            assert self._client is not None
            self._async_client = httpx.AsyncClient(
                base_url=str(self._client.base_url), headers=self._headers(), timeout=self._client.timeout,
                limits=httpx.Limits(max_connections=self._concurrency, max_keepalive_connections=self._concurrency))
        kwargs: dict[str, Any] = {"timeout": httpx.Timeout(timeout)} if timeout is not None else {}
        return await self._async_client.request(method, path, json=body, **kwargs)

    def _send_cancellable(self, method: str, path: str, body: dict[str, Any] | None, timeout: float | None,
                          cancel: Cancel) -> httpx.Response:
        """One attempt on the I/O thread; cancelled (its connection closed) as soon as ``cancel`` is set."""
        if cancel.cancelled:
            raise _Cancelled(cancel.reason)
        running = asyncio.run_coroutine_threadsafe(self._async_send(method, path, body, timeout), self._loop())
        while True:
            try:
                return running.result(timeout=0.05)
            except concurrent.futures.TimeoutError:
                if cancel.cancelled:
                    running.cancel()  # the task is cancelled: httpx closes the connection
                    raise _Cancelled(cancel.reason) from None

    # -- HTTP with retries ------------------------------------------------------------------------

    def _send(self, method: str, path: str, body: dict[str, Any] | None,
              timeout: float | None = None, cancel: Cancel | None = None) -> httpx.Response:
        """One attempt; raises ``_Retryable``, ``_Failed`` or ``_Cancelled``, returns a 2xx response."""
        assert self._client is not None
        with self._stats_lock:
            self.attempts += 1
        kwargs: dict[str, Any] = {}
        if timeout is not None:
            kwargs["timeout"] = httpx.Timeout(timeout)
        try:
            if cancel is not None:
                response = self._send_cancellable(method, path, body, timeout, cancel)
            else:
                response = self._client.request(method, path, json=body, **kwargs)
        except httpx.TransportError as exc:  # connection refused, reset, timeouts
            raise _Retryable(_describe(exc)) from None
        if response.status_code == 429 or response.status_code >= 500:
            raise _Retryable(f"HTTP {response.status_code}: {_server_message(response)}",
                             wait=_retry_after(response))
        if response.status_code >= 400:
            raise _Failed(f"HTTP {response.status_code}: {_server_message(response)}")
        return response

    def _with_retries(self, attempt: Callable[[], httpx.Response], cancel: Cancel | None = None) -> httpx.Response:
        """Run ``attempt`` up to ``1 + max_retries`` times with backoff; re-raise the last failure
        (a wait ends at once, ``_Cancelled``, when ``cancel`` is set)."""
        retries = max(0, self.spec.max_retries)
        base = self._param("backoff_s", 0.5)
        cap = self._param("backoff_max_s", 30.0)
        retry_after_cap = self._param("retry_after_max_s", 60.0)
        for n in range(retries + 1):
            began = time.monotonic()
            try:
                return attempt()
            except _Retryable as exc:
                waited = time.monotonic() - began
                if n == retries:
                    raise
                if exc.wait is not None:
                    delay = min(exc.wait, retry_after_cap)
                else:
                    ceiling = min(cap, base * 2**n)
                    delay = ceiling / 2 + random.uniform(0, ceiling / 2)  # equal jitter
                with self._stats_lock:
                    self.waits.append(delay)
                if waited >= SLOW_S or delay >= SLOW_S:  # a quick refusal is not worth a note; a hang is
                    log.warning("waiting for %s (expert %s): %s after %.0f s; retry %d of %d in %.1f s",
                                self.base_url, self.spec.name, exc, waited, n + 1, retries, delay)
                if cancel is None:
                    time.sleep(delay)
                elif cancel.wait(delay):
                    raise _Cancelled(cancel.reason) from None
        raise AssertionError("unreachable")

    # -- generation ----------------------------------------------------------------------------

    def _body(self, request: GenerationRequest) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {
            "model": self.model_name,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
        }
        if request.seed is not None:
            body["seed"] = request.seed
        if self.spec.chat_template:
            path = "/chat/completions"
            body["messages"] = [m.model_dump() for m in request.messages]
            if request.stop:
                body["stop"] = list(request.stop)
            if request.logprobs:
                body["logprobs"] = True
                body["top_logprobs"] = request.logprobs
        else:
            path = "/completions"
            body["prompt"] = completion_prompt(request.messages)
            body["stop"] = [*request.stop, *COMPLETION_STOPS]
            if request.logprobs:
                body["logprobs"] = request.logprobs
        extra = self.spec.params.get("extra_body")
        if isinstance(extra, dict):
            body.update(extra)
        return path, body

    def _generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        flags = [self.cancel_of(r) for r in requests]  # read here: the pool's threads do not see this call's
        if len(requests) == 1:
            return [self._one(requests[0], flags[0])]
        workers = min(self._concurrency, len(requests))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"openai-{self.spec.name}") as pool:
            return list(pool.map(self._one, requests, flags))

    def _one(self, request: GenerationRequest, cancel: Cancel | None = None) -> Generation:
        start = time.perf_counter()
        if request.logprobs and self._refuses_logprobs:
            request = request.model_copy(update={"logprobs": None})
        path, body = self._body(request)
        try:
            try:
                response = self._with_retries(lambda: self._send("POST", path, body, cancel=cancel), cancel)
            except _Failed as exc:
                if not request.logprobs or not str(exc).startswith(("HTTP 400", "HTTP 422")):
                    raise
                # log-probs are a confidence signal, not the answer: a server that refuses them
                # is asked without them, from now on
                self._refuses_logprobs = True
                path, body = self._body(request.model_copy(update={"logprobs": None}))
                response = self._with_retries(lambda: self._send("POST", path, body, cancel=cancel), cancel)
            return self._parse(response.json(), start)
        except _Cancelled as exc:
            return Generation.cancelled(self.spec.name, str(exc), Usage(seconds=time.perf_counter() - start))
        except (_Retryable, _Failed) as exc:
            error = f"{self.base_url}{path}: {exc}"
            if "HTTP 404" in str(exc) and self.server_models and self.model_name not in self.server_models:
                error += f" (model {self.model_name!r}; the server lists: {', '.join(self.server_models[:5])})"
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            error = f"{self.base_url}{path}: malformed answer from the server ({type(exc).__name__}: {exc})"
        return Generation.failure(self.spec.name, error, time.perf_counter() - start)

    def _parse(self, data: dict[str, Any], start: float) -> Generation:
        choice = data["choices"][0]
        if self.spec.chat_template:
            text = (choice.get("message") or {}).get("content") or ""
            logprobs = _chat_logprobs(choice.get("logprobs"))
        else:
            text = choice.get("text") or ""
            logprobs = _completion_logprobs(choice.get("logprobs"))
        usage = data.get("usage") or {}
        return Generation(
            text=text.strip(),
            model=self.spec.name,
            usage=Usage(prompt_tokens=int(usage.get("prompt_tokens") or 0),
                        completion_tokens=int(usage.get("completion_tokens") or 0),
                        seconds=time.perf_counter() - start),
            finish_reason=choice.get("finish_reason"),
            token_logprobs=logprobs,
        )


def _chat_logprobs(block: Any) -> list[TokenLogprob] | None:
    """``choices[0].logprobs.content`` of a chat completion as ``TokenLogprob`` records."""
    if not isinstance(block, dict) or not isinstance(block.get("content"), list):
        return None
    out: list[TokenLogprob] = []
    for item in block["content"]:
        top = {str(t["token"]): float(t["logprob"]) for t in item.get("top_logprobs") or []}
        out.append(TokenLogprob(token=str(item["token"]), logprob=float(item["logprob"]), top=top))
    return out


def _completion_logprobs(block: Any) -> list[TokenLogprob] | None:
    """The legacy ``/completions`` layout: parallel ``tokens``/``token_logprobs``/``top_logprobs``."""
    if not isinstance(block, dict) or not isinstance(block.get("tokens"), list):
        return None
    tops = block.get("top_logprobs") or []
    out: list[TokenLogprob] = []
    for i, (token, logprob) in enumerate(zip(block["tokens"], block.get("token_logprobs") or [], strict=False)):
        top = tops[i] if i < len(tops) and isinstance(tops[i], dict) else {}
        out.append(TokenLogprob(token=str(token), logprob=float(logprob if logprob is not None else 0.0),
                                top={str(k): float(v) for k, v in top.items()}))
    return out
