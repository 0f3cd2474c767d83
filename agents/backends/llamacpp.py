"""llama.cpp backend (llama-cpp-python): the CPU default for GGUF files.

With ``params: {bulk: N}`` (N > 1) a batch of requests is decoded N sequences at a time on a
second context over the same weights (``agents.backends.llamacpp_multiseq``): ~1.7x the
tokens/s at N = 8 on the idle 2-core machine, but batched float rounding can flip a greedy
near-tie, so ``symoe ask`` keeps one sequence at a time and bulk work (``symoe matrix build``,
``symoe profile build``) turns it on (bench/results/multiseq/README.md).

A request given a cancel flag (``Backend.generate``'s ``cancels``) stops at its next token
once the flag is set: a logits processor llama.cpp runs per token then leaves only the
end-of-generation token (a streamed request also stops reading its chunks); the prompt's
evaluation is not cut. It comes back as ``Generation.cancelled`` with the tokens it spent.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from agents.backends.base import Backend, BackendError, Cancel, Generation, GenerationRequest, TokenLogprob, Usage
from agents.backends.llamacpp_multiseq import generate_many, release
from agents.backends.registry import register_backend
from agents.prompts import COMPLETION_STOPS, completion_prompt

_LOG_CALLBACK: Any = None


def _silence_llama_log() -> None:
    """llama.cpp logs to stderr from C even with verbose=False; route it to nowhere."""
    global _LOG_CALLBACK
    if _LOG_CALLBACK is not None:
        return
    import llama_cpp

    @llama_cpp.llama_log_callback
    def _ignore(level: int, text: bytes, user_data: Any) -> None:
        return None

    _LOG_CALLBACK = _ignore
    llama_cpp.llama_log_set(_LOG_CALLBACK, None)


@register_backend("llamacpp")
class LlamaCppBackend(Backend):
    """Runs a GGUF model in-process; a batch is generated request by request, or ``bulk`` at a time."""

    @property
    def bulk(self) -> int:
        """Sequences decoded together (``params.bulk``; 1: one request after another)."""
        return max(1, int(self.spec.params.get("bulk", 1)))  # type: ignore[call-overload]

    @property
    def preferred_batch(self) -> int:
        """In bulk, several batches' worth per call: a sequence that ends early hands its slot on."""
        return max(super().preferred_batch, 4 * self.bulk if self.bulk > 1 else 1)

    def _load(self) -> None:
        try:
            from llama_cpp import Llama
        except ImportError:
            raise BackendError(
                "the llamacpp backend needs llama-cpp-python: pip install 'llama-cpp-python==0.3.36'"
            ) from None
        if self.spec.path is None or not os.path.exists(self.spec.path):
            raise BackendError(
                f"model file for expert {self.spec.name!r} not found ({self.spec.path}); "
                "run `symoe models prepare`"
            )
        _silence_llama_log()
        params: dict[str, Any] = {
            "n_ctx": self.spec.n_ctx,
            "n_threads": int(self.spec.params.get("n_threads", os.cpu_count() or 2)),
            "verbose": False,
            "seed": int(self.spec.params.get("seed", 0)),
        }
        try:
            self._llm = Llama(model_path=str(self.spec.path), **params)
        except (ValueError, RuntimeError) as exc:
            raise BackendError(
                f"llama.cpp could not load {self.spec.path} for expert {self.spec.name!r}: {exc}"
            ) from None

    _primed: tuple[tuple[int, ...], Any] | None = None  # (prompt head, llama.cpp state after it)

    def _unload(self) -> None:
        self._primed = None
        llm = getattr(self, "_llm", None)
        if llm is not None:
            release(llm)
            llm.close()
        self._llm = None

    def _generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        if self.bulk > 1 and len(requests) > 1:
            flags = [self.cancel_of(r) for r in requests]
            return generate_many(self, requests, [None if f is None else (lambda f=f: f.cancelled) for f in flags],
                                 n_seq=self.bulk)
        return [self._one(request) for request in requests]

    def _one(self, request: GenerationRequest) -> Generation:
        start = time.perf_counter()
        params: dict[str, Any] = {
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "stop": request.stop or None,
            "seed": request.seed if request.seed is not None else 0,
        }
        if request.temperature == 0:
            params["top_k"] = 1
        cancel = self.cancel_of(request)
        if cancel is not None:
            params["logits_processor"] = self._stop_when(cancel)
        try:
            if request.logprobs:
                return self._draft_with_logprobs(request, start)
            self._prime(request)
            if cancel is not None and cancel.cancelled:  # cancelled while the prompt was read
                return Generation.cancelled(self.spec.name, cancel.reason, Usage(seconds=time.perf_counter() - start))
            if self.spec.chat_template:
                out = self._llm.create_chat_completion(
                    messages=[m.model_dump() for m in request.messages], **params
                )
                text = out["choices"][0]["message"]["content"] or ""
            else:
                params["stop"] = [*request.stop, *COMPLETION_STOPS]
                out = self._llm.create_completion(completion_prompt(request.messages), **params)
                text = out["choices"][0]["text"]
        except (ValueError, RuntimeError) as exc:
            return Generation.failure(self.spec.name, f"llama.cpp: {exc}", time.perf_counter() - start)
        usage = out.get("usage", {})
        spent = Usage(prompt_tokens=usage.get("prompt_tokens", 0), completion_tokens=usage.get("completion_tokens", 0),
                      seconds=time.perf_counter() - start)
        if cancel is not None and cancel.cancelled:
            return Generation.cancelled(self.spec.name, cancel.reason, spent, text.strip())
        return Generation(text=text.strip(), model=self.spec.name, usage=spent,
                          finish_reason=out["choices"][0].get("finish_reason"))

    def _stream(self, request: GenerationRequest, on_text: Callable[[str], None]) -> Generation:
        """Chat or completion with ``stream=True``: each new piece of text goes to ``on_text``."""
        if request.logprobs:
            return super()._stream(request, on_text)
        start = time.perf_counter()
        params: dict[str, Any] = {"max_tokens": request.max_tokens, "temperature": request.temperature,
                                  "top_p": request.top_p, "stop": request.stop or None,
                                  "seed": request.seed if request.seed is not None else 0, "stream": True}
        if request.temperature == 0:
            params["top_k"] = 1
        pieces: list[str] = []
        finish = None
        cancel = self.cancel_of(request)
        if cancel is not None:
            params["logits_processor"] = self._stop_when(cancel)
        try:
            self._prime(request)
            if self.spec.chat_template:
                chunks = self._llm.create_chat_completion(messages=[m.model_dump() for m in request.messages],
                                                          **params)
            else:
                params["stop"] = [*request.stop, *COMPLETION_STOPS]
                chunks = self._llm.create_completion(completion_prompt(request.messages), **params)
            for chunk in chunks:
                if cancel is not None and cancel.cancelled:
                    chunks.close()  # the generator stops: no further token is evaluated
                    break
                choice = chunk["choices"][0]
                piece = (choice.get("delta") or {}).get("content") if self.spec.chat_template else choice.get("text")
                if piece:
                    if not pieces:
                        piece = piece.lstrip()
                    pieces.append(piece)
                    if piece:
                        on_text(piece)
                finish = choice.get("finish_reason") or finish
        except (ValueError, RuntimeError) as exc:
            return Generation.failure(self.spec.name, f"llama.cpp: {exc}", time.perf_counter() - start)
        text = "".join(pieces)
        prompt_tokens = len(self._prompt_tokens(request))
        completion_tokens = len(self._llm.tokenize(text.encode(), add_bos=False, special=True)) if text else 0
        if cancel is not None and cancel.cancelled:
            return Generation.cancelled(self.spec.name, cancel.reason, Usage(
                prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                seconds=time.perf_counter() - start), text.strip())
        return Generation(text=text.strip(), model=self.spec.name, finish_reason=finish,
                          usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                                      seconds=time.perf_counter() - start))

    def _stop_when(self, cancel: Cancel) -> Any:
        """A logits processor that, once ``cancel`` is set, leaves only the end-of-generation
        token: the generation ends at its next token (chat and completion paths alike)."""
        from llama_cpp import LogitsProcessorList

        eos = self._llm.token_eos()

        def end(_tokens: Any, scores: Any) -> Any:
            if cancel.cancelled:
                scores[:] = -np.inf
                scores[eos] = 0.0
            return scores

        return LogitsProcessorList([end])

    def forget_state(self) -> None:
        with self._lock:
            self._primed = None

    def _prime(self, request: GenerationRequest) -> None:
        """Put the KV cache where a fresh evaluation of the prompt, all but its last token, leaves it.

        A generation must depend on its request alone, not on what ran before it: reusing an
        arbitrary earlier prefix changes how the prompt is batched, hence the float rounding,
        hence (on this CPU's kernels) the text. So every request starts from one state: its
        prompt less the last token, evaluated in one batch from empty (llama.cpp then
        evaluates the last token and samples). The state is kept, so the next request with
        the same prompt (the annotator's samples of one question) loads it instead of
        evaluating the prompt again, and gets exactly the same logits as a first request.
        """
        llm = self._llm
        head = tuple(self._prompt_tokens(request)[:-1])
        if self._primed is not None and self._primed[0] == head:
            llm.load_state(self._primed[1])
            return
        self._primed = None
        llm.reset()
        if head:
            llm.eval(list(head))
        self._primed = (head, llm.save_state())

    def _prompt_tokens(self, request: GenerationRequest) -> list[int]:
        """The prompt tokens exactly as ``create_chat_completion``/``create_completion`` build them."""
        llm = self._llm
        template = llm.metadata.get("tokenizer.chat_template") if self.spec.chat_template else None
        if template:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            # As llama_cpp.Llama builds its "chat_template.default" handler: special-token texts
            # (detokenize() would render BOS/EOS as empty strings).
            model = llm._model
            eos, bos = model.token_eos(), model.token_bos()
            formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=model.token_get_text(eos) if eos != -1 else "",
                bos_token=model.token_get_text(bos) if bos != -1 else "",
            )
            text = formatter(messages=[m.model_dump() for m in request.messages]).prompt
            return list(llm.tokenize(text.encode(), add_bos=False, special=True))
        return list(llm.tokenize(completion_prompt(request.messages).encode(), special=True))

    def _draft_with_logprobs(self, request: GenerationRequest, start: float) -> Generation:
        """Greedy draft that records each token's log-prob and its top-n alternatives.

        The model is loaded without ``logits_all`` (so ``Llama.eval_logits`` stays empty);
        the last position's logits are read from the context after each ``eval``. Stops as
        the chat/completion paths do: at an end-of-generation token or a stop string.
        """
        import llama_cpp
        llm = self._llm
        tokens = self._prompt_tokens(request)
        if len(tokens) + request.max_tokens > llm.n_ctx():
            raise ValueError(
                f"prompt of {len(tokens)} tokens + {request.max_tokens} new exceeds n_ctx {llm.n_ctx()}"
            )
        stops = list(request.stop) if self.spec.chat_template else [*request.stop, *COMPLETION_STOPS]
        n_vocab = llm.n_vocab()
        top_n = max(1, request.logprobs or 1)
        llm.reset()
        llm.eval(tokens)
        out_tokens: list[int] = []
        logprobs: list[TokenLogprob] = []
        finish = "length"
        text = ""
        cancel = self.cancel_of(request)
        for _ in range(request.max_tokens):
            if cancel is not None and cancel.cancelled:
                return Generation.cancelled(self.spec.name, cancel.reason, Usage(
                    prompt_tokens=len(tokens), completion_tokens=len(out_tokens),
                    seconds=time.perf_counter() - start), text.strip())
            row = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
            logits = np.ctypeslib.as_array(row, shape=(n_vocab,)).astype(np.float64)
            shifted = logits - logits.max()
            logp = shifted - math.log(float(np.exp(shifted).sum()))
            best = np.argpartition(-logp, top_n - 1)[:top_n]
            best = best[np.argsort(-logp[best])]
            token = int(best[0])
            if llama_cpp.llama_vocab_is_eog(llm._model.vocab, token):
                finish = "stop"
                break
            logprobs.append(TokenLogprob(
                token=llm.detokenize([token]).decode(errors="ignore"), logprob=float(logp[token]),
                top={llm.detokenize([int(t)]).decode(errors="ignore"): float(logp[t]) for t in best},
            ))
            out_tokens.append(token)
            text = llm.detokenize(out_tokens, prev_tokens=tokens).decode(errors="ignore")
            cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
            if cut >= 0:
                text, finish = text[:cut], "stop"
                break
            llm.eval([token])
        return Generation(
            text=text.strip(), model=self.spec.name,
            usage=Usage(prompt_tokens=len(tokens), completion_tokens=len(out_tokens),
                        seconds=time.perf_counter() - start),
            finish_reason=finish, token_logprobs=logprobs,
        )

