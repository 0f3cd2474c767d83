"""The one backend interface: load a model, generate for a batch of chat requests, unload.

Every engine (llama.cpp, transformers, vLLM, OpenAI-compatible servers) implements
``Backend``. Requests and results are typed records so the orchestrator never sees an
engine's own objects.
"""

from __future__ import annotations

import abc
import gc
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agents.errors import SymoeError

if TYPE_CHECKING:
    from agents.pool import ExpertSpec


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
        out = cls()
        for u in usages:
            out = out + u
        return out


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

    def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        """Generate for a batch; the result has one ``Generation`` per request, in order."""
        if not requests:
            return []
        if not self._loaded:
            self.load()
        if self.thread_safe:
            results = self._generate(requests)
        else:
            with self._lock:
                results = self._generate(requests)
        if len(results) != len(requests):
            raise BackendError(
                f"backend {self.name} returned {len(results)} results for {len(requests)} requests"
            )
        return results

    def generate_streaming(self, request: GenerationRequest, on_text: Callable[[str], None]) -> Generation:
        """Generate one request, calling ``on_text(piece)`` with the text as it is produced.

        Engines that can stream override ``_stream``; the default produces the whole text at
        once (one piece), so every backend can serve a streaming caller.
        """
        if not self._loaded:
            self.load()
        if self.thread_safe:
            return self._stream(request, on_text)
        with self._lock:
            return self._stream(request, on_text)

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
