"""Bulk generation for llama.cpp: several sequences decoded together, one weight read per step.

This module owns multi-sequence decoding for one loaded ``llama_cpp.Llama`` through
llama-cpp-python's low-level API. It does not change how the backend loads the model:
``Llama`` (0.3.36) creates its context with ``n_seq_max = 1`` and takes no argument to raise
it, so ``MultiSeq`` makes a *second* ``llama_context`` on the same loaded weights (no second
copy of the model; only a KV cache and compute buffers: ~0.5 GB for 8 x 2048 tokens of the
1.5B) with ``n_seq_max = n_seq`` and one KV stream per sequence (``kv_unified = False``).

Scheduling (continuous batching): at most ``n_seq`` sequences are live, each on its own
sequence id. A request is admitted when a slot is free: its KV stream is cleared
(``llama_memory_seq_rm``) and its prompt evaluated alone, in chunks of ``n_batch`` as
``Llama.eval`` does. Then every step is ONE ``llama_decode`` holding the next token of every
live sequence; each reads its own logits row. A sequence that finishes (end-of-generation
token, stop string, ``max_tokens``) or whose ``cancelled()`` returns true is dropped at that
step and its slot goes to the next waiting request.

What each sequence gets mirrors ``agents.backends.llamacpp.LlamaCppBackend`` request by
request, so a sequence's result is what the backend returns for it alone wherever the logits
agree. They do at batch 1 and, on this CPU, at 3 sequences per step; at 8, llama.cpp's batched
matmul kernels round differently and a near-tie can flip a greedy token (3 of 8 texts differed
on the 1.5B, 7 of 8 answers the same). On the idle 2-core machine batch 8 gives 1.7x the
tokens/s (on a loaded one it lost): bench/results/multiseq/README.md. The backend uses it for
``params.bulk`` > 1 (``matrix build`` and ``profile build`` default to 8).

- without ``logprobs``, as ``_prime`` + ``create_completion``: the prompt less its last token
  is evaluated first, the last token is decoded with the first step; greedy (argmax, first
  maximum, as llama.cpp's greedy sampler) at temperature 0; above it the same sampler chain
  llama-cpp-python builds (penalties (neutral), top-k 40, typical 1.0, top-p, min-p 0.05,
  temperature, ``dist(seed)``), one chain *per sequence* seeded with the request's seed, so a
  sequence draws from its own RNG exactly as the single-sequence call seeded with that seed
  does (same logits -> same tokens); stop strings are checked as ``create_completion`` does
  (the first listed stop found; not while a UTF-8 character is incomplete);
- with ``logprobs=n``, as ``_draft_with_logprobs``: the whole prompt is evaluated, decoding
  is greedy and each token records its log-prob and its top-n alternatives (what the
  pipeline reads letter margins from); the earliest stop string cuts the text.

``generate_many(backend, requests)`` is the adapter for the backend's ``_generate``; it
returns ``Generation`` records (``Generation.cancelled`` for a cancelled sequence, keeping
the tokens it spent; ``usage.seconds`` is each sequence's own wall span, which overlaps
its batch-mates'). ``release(llm)`` frees the extra context (also registered to run when
the ``Llama`` closes, before its model is freed).
"""

from __future__ import annotations

import math
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agents.backends.base import Generation, GenerationRequest, TokenLogprob, Usage
from agents.prompts import COMPLETION_STOPS

#: llama-cpp-python's sampler defaults that the backend leaves as they are
TOP_K, MIN_P, TYPICAL_P, PENALTY_LAST_N = 40, 0.05, 1.0, 64


@dataclass
class SeqRequest:
    """One sequence to generate: its prompt tokens and sampling parameters."""

    tokens: list[int]
    max_tokens: int = 256
    stop: list[str] = field(default_factory=list)
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    #: top-n alternatives per token (greedy draft, as the backend's logprobs path)
    logprobs: int | None = None
    #: read before every step; True drops the sequence there
    cancelled: Callable[[], bool] | None = None


@dataclass
class SeqResult:
    """What one sequence produced."""

    text: str = ""
    tokens: list[int] = field(default_factory=list)
    prompt_tokens: int = 0
    finish_reason: str | None = None
    error: str | None = None
    token_logprobs: list[TokenLogprob] | None = None
    seconds: float = 0.0

    @property
    def completion_tokens(self) -> int:
        return len(self.tokens)


@dataclass
class _Live:
    index: int
    request: SeqRequest
    seq: int
    start: float
    n_past: int = 0
    next_token: int = -1
    out: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None
    multibyte_fix: int = 0
    sampler: Any = None
    max_tokens: int = 0


def _multibyte_fix(all_text: bytes, current: int) -> int:
    """``create_completion``'s check for a UTF-8 character still incomplete at the end."""
    fix = current
    for k, char in enumerate(all_text[-3:]):
        k = 3 - k
        for num, pattern in [(2, 192), (3, 224), (4, 240)]:
            if num > k and pattern & char == pattern:
                fix = num - k
    return fix


class MultiSeq:
    """A context of ``n_seq`` KV streams on a loaded ``Llama``'s weights, and its scheduler."""

    def __init__(self, llm: Any, n_seq: int, n_ctx_seq: int | None = None) -> None:
        import llama_cpp

        # a proxy: the engine (kept per Llama in a WeakKeyDictionary) must not keep its Llama alive
        self.llm = weakref.proxy(llm)
        self.n_seq = max(1, int(n_seq))
        #: a sequence's context, as the Llama's own (prompt + new tokens must fit it)
        self.n_ctx_seq = int(n_ctx_seq or llm.n_ctx())
        params = llama_cpp.llama_context_params.from_buffer_copy(llm.context_params)
        params.n_seq_max = self.n_seq
        params.n_ctx = self.n_ctx_seq * self.n_seq
        params.kv_unified = False  # one KV stream per sequence: its cells as when it runs alone
        self.n_batch = int(llm.n_batch)
        params.n_batch = max(self.n_batch, self.n_seq)
        params.n_ubatch = max(int(params.n_ubatch), self.n_seq)
        self._lib = llama_cpp  # close() may run at interpreter exit, when imports fail
        ctx = llama_cpp.llama_init_from_model(llm._model.model, params)
        if ctx is None:
            raise RuntimeError(f"llama.cpp could not create a context of {self.n_seq} sequences")
        self.ctx = ctx
        self.mem = llama_cpp.llama_get_memory(ctx)
        self.vocab = llm._model.vocab
        self.n_vocab = int(llm.n_vocab())
        self._batch = llama_cpp.llama_batch_init(max(self.n_batch, self.n_seq), 0, 1)
        self._closed = False
        self.steps = 0  # llama_decode calls of decode steps (not prompt evaluation)
        #: seconds spent evaluating prompts and in decode steps (benches read them)
        self.prompt_seconds = 0.0
        self.step_seconds = 0.0

    # ------------------------------------------------------------------ lifetime

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._lib.llama_batch_free(self._batch)
        self._lib.llama_free(self.ctx)
        self.ctx = None

    # ------------------------------------------------------------------ llama.cpp calls

    def _decode(self, items: Sequence[tuple[int, int, int, bool]]) -> None:
        """One ``llama_decode`` of (token, position, seq id, wants logits) items."""
        import llama_cpp

        batch = self._batch
        for i, (token, pos, seq, logits) in enumerate(items):
            batch.token[i] = token
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = logits
        batch.n_tokens = len(items)
        rc = llama_cpp.llama_decode(self.ctx, batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")

    def _is_eog(self, token: int) -> bool:
        return bool(self._lib.llama_vocab_is_eog(self.vocab, token))

    def _clear(self, seq: int) -> None:
        """Empty one sequence's KV stream (a slot handed to a new request)."""
        self._lib.llama_memory_seq_rm(self.mem, seq, -1, -1)

    def _logits(self, i: int) -> np.ndarray:
        import llama_cpp

        row = llama_cpp.llama_get_logits_ith(self.ctx, i)
        return np.ctypeslib.as_array(row, shape=(self.n_vocab,))

    def _sampler(self, request: SeqRequest) -> Any:
        """llama-cpp-python's chain for temperature > 0 (``Llama._init_sampler``), own RNG."""
        import llama_cpp

        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        for s in (llama_cpp.llama_sampler_init_penalties(self.n_vocab, PENALTY_LAST_N, 1.0, 0.0, 0.0),
                  llama_cpp.llama_sampler_init_top_k(TOP_K),
                  llama_cpp.llama_sampler_init_typical(TYPICAL_P, 1),
                  llama_cpp.llama_sampler_init_top_p(request.top_p, 1),
                  llama_cpp.llama_sampler_init_min_p(MIN_P, 1),
                  llama_cpp.llama_sampler_init_temp(request.temperature),
                  llama_cpp.llama_sampler_init_dist(request.seed)):
            llama_cpp.llama_sampler_chain_add(chain, s)
        return chain

    # ------------------------------------------------------------------ the scheduler

    def run(self, requests: Sequence[SeqRequest], n_live: int | None = None) -> list[SeqResult]:
        """Generate every request, at most ``n_live`` (default ``n_seq``) decoded together;
        results in request order."""
        import llama_cpp

        results: list[SeqResult | None] = [None] * len(requests)
        waiting = deque(enumerate(requests))
        slots = self.n_seq if n_live is None else max(1, min(n_live, self.n_seq))
        free = list(range(slots - 1, -1, -1))
        live: list[_Live] = []

        def finish(state: _Live, reason: str | None, text: bytes | None = None, error: str | None = None) -> None:
            llm = self.llm
            body = text if text is not None else llm.detokenize(state.out, prev_tokens=state.request.tokens)
            results[state.index] = SeqResult(
                text=body.decode("utf-8", errors="ignore"), tokens=list(state.out),
                prompt_tokens=len(state.request.tokens), finish_reason=reason, error=error,
                token_logprobs=state.logprobs, seconds=time.perf_counter() - state.start)
            if state.sampler is not None:
                llama_cpp.llama_sampler_free(state.sampler)
                state.sampler = None
            if state in live:
                live.remove(state)
            free.append(state.seq)

        def take(state: _Live, i: int) -> None:
            """Sample the next token of ``state`` from logits row ``i`` and act on it."""
            request = state.request
            if request.logprobs:
                logits = self._logits(i).astype(np.float64)
                shifted = logits - logits.max()
                logp = shifted - math.log(float(np.exp(shifted).sum()))
                top_n = max(1, request.logprobs)
                best = np.argpartition(-logp, top_n - 1)[:top_n]
                best = best[np.argsort(-logp[best])]
                token = int(best[0])
            elif state.sampler is not None:
                token = int(llama_cpp.llama_sampler_sample(state.sampler, self.ctx, i))
            else:
                token = int(np.argmax(self._logits(i)))
            if self._is_eog(token):
                finish(state, "stop")
                return
            llm = self.llm
            if request.logprobs:
                assert state.logprobs is not None
                state.logprobs.append(TokenLogprob(
                    token=llm.detokenize([token]).decode(errors="ignore"), logprob=float(logp[token]),
                    top={llm.detokenize([int(t)]).decode(errors="ignore"): float(logp[t]) for t in best}))
            state.out.append(token)
            all_text = llm.detokenize(state.out, prev_tokens=request.tokens)
            if request.logprobs:  # as _draft_with_logprobs: the earliest stop, on text
                text = all_text.decode(errors="ignore")
                cut = min((j for j in (text.find(s) for s in request.stop if s) if j >= 0), default=-1)
                if cut >= 0:
                    finish(state, "stop", text[:cut].encode())
                    return
            else:  # as create_completion: bytes, the first listed stop, not mid-character
                state.multibyte_fix = _multibyte_fix(all_text, state.multibyte_fix)
                if state.multibyte_fix > 0:
                    state.multibyte_fix -= 1
                    state.next_token = token
                    return
                for s in request.stop:
                    b = s.encode("utf-8")
                    if b in all_text:
                        finish(state, "stop", all_text[: all_text.index(b)])
                        return
            if len(state.out) >= state.max_tokens:
                finish(state, "length", all_text)
                return
            state.next_token = token

        def admit(index: int, request: SeqRequest) -> None:
            start = time.perf_counter()
            n_prompt = len(request.tokens)
            if request.cancelled is not None and request.cancelled():
                results[index] = SeqResult(prompt_tokens=0, finish_reason="cancelled", error="cancelled")
                return
            if n_prompt == 0:
                results[index] = SeqResult(error="empty prompt")
                return
            if request.logprobs:
                if n_prompt + request.max_tokens > self.n_ctx_seq:
                    results[index] = SeqResult(error=(
                        f"prompt of {n_prompt} tokens + {request.max_tokens} new exceeds n_ctx {self.n_ctx_seq}"))
                    return
                max_tokens = request.max_tokens
            else:
                if n_prompt >= self.n_ctx_seq:
                    results[index] = SeqResult(error=(
                        f"Requested tokens ({n_prompt}) exceed context window of {self.n_ctx_seq}"))
                    return
                max_tokens = request.max_tokens
                if max_tokens <= 0 or max_tokens + n_prompt >= self.n_ctx_seq:
                    max_tokens = self.n_ctx_seq - n_prompt
            seq = free.pop()
            state = _Live(index=index, request=request, seq=seq, start=start, max_tokens=max_tokens,
                          logprobs=[] if request.logprobs else None)
            if request.temperature > 0 and not request.logprobs:
                state.sampler = self._sampler(request)
            self._clear(seq)
            # the prompt alone, chunked as Llama.eval; logprobs: all of it, else all but the last token
            head = request.tokens if request.logprobs else request.tokens[:-1]
            last = 0
            t0 = time.perf_counter()
            for j in range(0, len(head), self.n_batch):
                chunk = head[j: j + self.n_batch]
                self._decode([(t, j + k, seq, k == len(chunk) - 1) for k, t in enumerate(chunk)])
                last = len(chunk) - 1
            self.prompt_seconds += time.perf_counter() - t0
            state.n_past = len(head)
            live.append(state)
            if request.logprobs:
                take(state, last)  # the first token comes from the prompt's own logits
            else:
                state.next_token = request.tokens[-1]

        while waiting or live:
            while waiting and free:
                admit(*waiting.popleft())
            for state in list(live):
                if state.request.cancelled is not None and state.request.cancelled():
                    finish(state, "cancelled", error="cancelled")
            if not live:
                continue
            stepping = list(live)
            t0 = time.perf_counter()
            self._decode([(s.next_token, s.n_past, s.seq, True) for s in stepping])
            self.steps += 1
            for i, state in enumerate(stepping):
                state.n_past += 1
                take(state, i)
            self.step_seconds += time.perf_counter() - t0
        return [r if r is not None else SeqResult(error="not generated") for r in results]


# ---------------------------------------------------------------------- per Llama

_ENGINES: weakref.WeakKeyDictionary[Any, MultiSeq] = weakref.WeakKeyDictionary()


def engine_for(llm: Any, n_seq: int) -> MultiSeq:
    """The ``MultiSeq`` of this ``Llama`` with at least ``n_seq`` slots (made once, kept)."""
    engine = _ENGINES.get(llm)
    if engine is not None and not engine._closed and engine.n_seq >= n_seq:
        return engine
    if engine is not None:
        engine.close()
    engine = MultiSeq(llm, n_seq)
    _ENGINES[llm] = engine
    stack = getattr(llm, "_stack", None)
    if stack is not None:  # freed before the model when the Llama closes (LIFO)
        stack.callback(engine.close)
    return engine


def release(llm: Any) -> None:
    """Free this ``Llama``'s multi-sequence context (call before ``llm.close()``)."""
    engine = _ENGINES.pop(llm, None) if llm is not None else None
    if engine is not None:
        engine.close()


def generate_tokens(llm: Any, requests: Sequence[SeqRequest], n_seq: int = 8) -> list[SeqResult]:
    """Run ``requests`` on ``llm``, at most ``n_seq`` decoded together."""
    if not requests:
        return []
    return engine_for(llm, max(1, n_seq)).run(requests, n_live=max(1, min(n_seq, len(requests))))


# ---------------------------------------------------------------------- the backend's adapter


def seq_request(backend: Any, request: GenerationRequest,
                cancelled: Callable[[], bool] | None = None) -> SeqRequest:
    """A backend request as a sequence: the prompt tokens and stops the backend would use."""
    stops = list(request.stop) if backend.spec.chat_template else [*request.stop, *COMPLETION_STOPS]
    return SeqRequest(tokens=backend._prompt_tokens(request), max_tokens=request.max_tokens, stop=stops,
                      temperature=request.temperature, top_p=request.top_p,
                      seed=request.seed if request.seed is not None else 0,
                      logprobs=request.logprobs, cancelled=cancelled)


def to_generation(result: SeqResult, model: str) -> Generation:
    usage = Usage(prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
                  seconds=result.seconds)
    if result.finish_reason == "cancelled":
        return Generation.cancelled(model, "cancelled", usage=usage, text=result.text.strip())
    if result.error is not None:
        return Generation.failure(model, f"llama.cpp: {result.error}", result.seconds)
    return Generation(text=result.text.strip(), model=model, usage=usage, finish_reason=result.finish_reason,
                      token_logprobs=result.token_logprobs)


def generate_many(backend: Any, requests: Sequence[GenerationRequest],
                  cancelled: Sequence[Callable[[], bool] | None] | None = None,
                  n_seq: int = 8) -> list[Generation]:
    """The backend's requests decoded together on its loaded ``Llama`` (``backend._llm``)."""
    flags = list(cancelled) if cancelled is not None else [None] * len(requests)
    seqs = [seq_request(backend, r, f) for r, f in zip(requests, flags, strict=True)]
    try:
        results = generate_tokens(backend._llm, seqs, n_seq=n_seq)
    except (ValueError, RuntimeError) as exc:
        return [Generation.failure(backend.spec.name, f"llama.cpp: {exc}") for _ in requests]
    return [to_generation(r, backend.spec.name) for r in results]
