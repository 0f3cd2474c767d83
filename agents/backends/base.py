"""The one backend interface: load a model, generate for a batch of chat requests, unload.

Every engine (llama.cpp, transformers, vLLM, OpenAI-compatible servers) implements
``Backend``. Requests and results are typed records so the orchestrator never sees an
engine's own objects.

Cancellation: a ``Cancel`` flag travels with each request that someone may abandon (a
server's request past its deadline or whose client left). ``generate(requests, cancels)``
never starts a request whose flag is already set; engines that can stop mid-generation
(llama.cpp, transformers, OpenAI-compatible servers, the fake) read ``cancel_of(request)``
at every token and stop there, returning a ``Generation.cancelled`` that keeps the tokens
spent. ``cancel_scope`` makes a flag the current thread's (``current_cancel``): executors
attach it to the jobs that thread hands them.
"""

from __future__ import annotations

import abc
import contextlib
import contextvars
import gc
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agents.errors import SymoeError

if TYPE_CHECKING:
    from agents.pool import ExpertSpec


class Cancel:
    """A cancel flag: set once (``cancel(reason)``), read by anyone (``cancelled``). A flag made
    with a ``parent`` is set whenever the parent is; ``Cancel.all_of(flags)`` is set only when
    every one of its flags is (work shared by several requests stops when none wants it)."""

    def __init__(self, parent: Cancel | None = None) -> None:
        self._event = threading.Event()
        self._reason = ""
        self.parent = parent
        self._all: tuple[Cancel, ...] = ()

    @classmethod
    def all_of(cls, flags: Sequence[Cancel | None]) -> Cancel | None:
        """Set when every flag is; None (never cancelled) when any sharer cannot be cancelled."""
        if not flags or any(f is None for f in flags):
            return None
        if len(flags) == 1:
            return flags[0]
        shared = cls()
        shared._all = tuple(f for f in flags if f is not None)
        return shared

    def cancel(self, reason: str = "cancelled") -> None:
        if not self._event.is_set():
            self._reason = reason
            self._event.set()

    @property
    def cancelled(self) -> bool:
        if self._event.is_set():
            return True
        if self._all:
            return all(f.cancelled for f in self._all)
        return self.parent is not None and self.parent.cancelled

    @property
    def reason(self) -> str:
        if self._event.is_set():
            return self._reason
        if self._all and self.cancelled:
            return self._all[0].reason
        return self.parent.reason if self.parent is not None and self.parent.cancelled else ""

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``, waking as soon as the flag is set; True when it is."""
        end = time.monotonic() + seconds
        while not self.cancelled:
            left = end - time.monotonic()
            if left <= 0:
                return False
            self._event.wait(min(left, 0.05))
        return True


_CURRENT: contextvars.ContextVar[Cancel | None] = contextvars.ContextVar("symoe_cancel", default=None)


def current_cancel() -> Cancel | None:
    """The cancel flag of the work this thread is doing (None: nobody will cancel it)."""
    return _CURRENT.get()


@contextlib.contextmanager
def cancel_scope(flag: Cancel | None) -> Iterator[Cancel | None]:
    """Make ``flag`` this thread's current cancel flag for the block."""
    token = _CURRENT.set(flag)
    try:
        yield flag
    finally:
        _CURRENT.reset(token)


class BackendError(SymoeError):
    """A backend failed in a way the user can act on; the message says what to fix."""


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class GenerationRequest(BaseModel):
    """One chat request. ``logprobs`` asks for the top-n alternatives of each new token."""

    messages: list[ChatMessage]
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] = Field(default_factory=list)
    seed: int | None = None
    logprobs: int | None = None

    @classmethod
    def user(cls, text: str, system: str | None = None, **params: object) -> GenerationRequest:
        messages = [ChatMessage(role="system", content=system)] if system else []
        messages.append(ChatMessage(role="user", content=text))
        return cls(messages=messages, **params)  # type: ignore[arg-type]

    def cache_key(self) -> str:
        """Stable text for caching: the request with every sampling parameter."""
        return self.model_dump_json()


class TokenLogprob(BaseModel):
    token: str
    logprob: float
    top: dict[str, float] = Field(default_factory=dict)


class Usage(BaseModel):
    """What some work cost: tokens in, tokens out, seconds. Records add up with ``+``."""

    model_config = ConfigDict(frozen=True)

    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(prompt_tokens=self.prompt_tokens + other.prompt_tokens,
                     completion_tokens=self.completion_tokens + other.completion_tokens,
                     seconds=self.seconds + other.seconds)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def total(cls, usages: list[Usage]) -> Usage:
        """The sum of ``usages``, each field summed once (the same figures as adding them up
        with ``+``, without a record per addition); one usage is its own total (it is frozen)."""
        if len(usages) == 1 and type(usages[0]) is cls:
            return usages[0]
        seconds = 0.0
        for u in usages:
            seconds += u.seconds
        return cls(prompt_tokens=sum(u.prompt_tokens for u in usages),
                   completion_tokens=sum(u.completion_tokens for u in usages), seconds=seconds)


class Generation(BaseModel):
    """What a backend returns for one request; ``usage`` is what producing it cost."""

    text: str
    model: str
    usage: Usage = Field(default_factory=Usage)
    finish_reason: str | None = None
    error: str | None = None
    token_logprobs: list[TokenLogprob] | None = None

    @model_validator(mode="before")
    @classmethod
    def _flat_usage(cls, data: Any) -> Any:
        """Accept the flat ``prompt_tokens``/``completion_tokens``/``seconds`` of cache rows
        written before ``usage`` existed."""
        if isinstance(data, dict) and "usage" not in data and any(
                k in data for k in ("prompt_tokens", "completion_tokens", "seconds")):
            data = dict(data)
            data["usage"] = {k: data.pop(k) for k in ("prompt_tokens", "completion_tokens", "seconds") if k in data}
        return data

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def failure(cls, model: str, error: str, seconds: float = 0.0) -> Generation:
        return cls(text="", model=model, error=error, usage=Usage(seconds=seconds))

    @classmethod
    def cancelled(cls, model: str, reason: str = "", usage: Usage | None = None, text: str = "") -> Generation:
        """A generation stopped (or never started) because its caller cancelled it: not an
        answer (``error`` is set, so it is never cached or read), with the tokens it spent."""
        return cls(text=text, model=model, error=f"cancelled ({reason or 'cancelled'})", finish_reason="cancelled",
                   usage=usage or Usage())

    @property
    def was_cancelled(self) -> bool:
        return self.finish_reason == "cancelled"


class Backend(abc.ABC):
    """Base class of all engines. Subclasses set ``name`` and implement the three hooks."""

    name: ClassVar[str] = ""
    #: True when the engine needs a local model file (``ExpertSpec.path``).
    needs_model_file: ClassVar[bool] = True
    #: True when the engine may serve several calls at once (a remote server): no lock.
    thread_safe: ClassVar[bool] = False
    #: How many requests the engine runs together (results of one batch finish together).
    default_batch: ClassVar[int] = 1

    def __init__(self, spec: ExpertSpec) -> None:
        self.spec = spec
        self._loaded = False
        self.load_seconds = 0.0
        # Engines are not thread-safe; the query graph may call one from several branches.
        self._lock = threading.RLock()
        self._flags = threading.local()  # this call's cancel flag of each request (by id)
        #: generations running now, and generations stopped (or never started) by a cancel
        self.running = 0
        self.cancelled = 0
        self._count_lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._loaded

    @property
    def preferred_batch(self) -> int:
        return int(self.spec.params.get("batch_size", self.default_batch))  # type: ignore[call-overload]

    def load(self) -> None:
        with self._lock:
            if self._loaded:
                return
            start = time.perf_counter()
            self._load()
            self.load_seconds = time.perf_counter() - start
            self._loaded = True

    def unload(self) -> None:
        with self._lock:
            if not self._loaded:
                return
            self._unload()
            self._loaded = False
            gc.collect()

    def forget_state(self) -> None:  # noqa: B027 - a hook engines with no such state leave as it is
        """Drop whatever an engine keeps from the last request to answer the next one faster
        (llama.cpp's primed prompt), so the next request pays as a first one (latency benches)."""

    def cancel_of(self, request: GenerationRequest) -> Cancel | None:
        """The cancel flag the current call was given for ``request`` (engines read it per token)."""
        return getattr(self._flags, "by_id", {}).get(id(request))

    def _count(self, running: int = 0, cancelled: int = 0) -> None:
        with self._count_lock:
            self.running += running
            self.cancelled += cancelled

    def generate(self, requests: list[GenerationRequest],
                 cancels: Sequence[Cancel | None] | None = None) -> list[Generation]:
        """Generate for a batch; the result has one ``Generation`` per request, in order.
        ``cancels`` (one flag or None per request): a request whose flag is set when its turn
        comes is not started; engines that can stop one mid-generation do at its next token."""
        if not requests:
            return []
        flags: list[Cancel | None] = list(cancels) if cancels is not None else [None] * len(requests)
        if not self._loaded:
            self.load()
        if self.thread_safe:
            results = self._generate_live(requests, flags)
        else:
            with self._lock:
                results = self._generate_live(requests, flags)
        if len(results) != len(requests):
            raise BackendError(
                f"backend {self.name} returned {len(results)} results for {len(requests)} requests"
            )
        return results

    def _generate_live(self, requests: list[GenerationRequest], flags: list[Cancel | None]) -> list[Generation]:
        """``_generate`` on the requests still wanted (checked now, when the engine is free)."""
        live = [i for i, f in enumerate(flags) if f is None or not f.cancelled]
        out: dict[int, Generation] = {}
        for i, f in enumerate(flags):
            if i not in live and f is not None:
                out[i] = Generation.cancelled(self.spec.name, f.reason)
        if len(out):
            self._count(cancelled=len(out))
        if live:
            wanted = [requests[i] for i in live]
            previous = getattr(self._flags, "by_id", None)
            self._flags.by_id = {id(requests[i]): flags[i] for i in live if flags[i] is not None}
            self._count(running=len(live))
            try:
                generations = self._generate(wanted)
            finally:
                self._count(running=-len(live))
                self._flags.by_id = previous
            if len(generations) != len(wanted):
                raise BackendError(
                    f"backend {self.name} returned {len(generations)} results for {len(wanted)} requests"
                )
            stopped = sum(g.was_cancelled for g in generations)
            if stopped:
                self._count(cancelled=stopped)
            out.update(zip(live, generations, strict=True))
        return [out[i] for i in range(len(requests))]

    def generate_streaming(self, request: GenerationRequest, on_text: Callable[[str], None],
                           cancel: Cancel | None = None) -> Generation:
        """Generate one request, calling ``on_text(piece)`` with the text as it is produced.

        Engines that can stream override ``_stream``; the default produces the whole text at
        once (one piece), so every backend can serve a streaming caller. ``cancel``: as in
        ``generate``.
        """
        if not self._loaded:
            self.load()
        if self.thread_safe:
            return self._stream_live(request, on_text, cancel)
        with self._lock:
            return self._stream_live(request, on_text, cancel)

    def _stream_live(self, request: GenerationRequest, on_text: Callable[[str], None],
                     cancel: Cancel | None) -> Generation:
        if cancel is not None and cancel.cancelled:
            self._count(cancelled=1)
            return Generation.cancelled(self.spec.name, cancel.reason)
        previous = getattr(self._flags, "by_id", None)
        self._flags.by_id = {id(request): cancel} if cancel is not None else {}
        self._count(running=1)
        try:
            generation = self._stream(request, on_text)
        finally:
            self._count(running=-1)
            self._flags.by_id = previous
        if generation.was_cancelled:
            self._count(cancelled=1)
        return generation

    def _stream(self, request: GenerationRequest, on_text: Callable[[str], None]) -> Generation:
        generation = self._generate([request])[0]
        if generation.ok and generation.text:
            on_text(generation.text)
        return generation

    def __enter__(self) -> Backend:
        self.load()
        return self

    def __exit__(self, *exc: object) -> None:
        self.unload()

    @abc.abstractmethod
    def _load(self) -> None: ...

    @abc.abstractmethod
    def _unload(self) -> None: ...

    @abc.abstractmethod
    def _generate(self, requests: list[GenerationRequest]) -> list[Generation]: ...
