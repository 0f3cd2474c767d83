"""llama.cpp backend (llama-cpp-python): the CPU default for GGUF files."""

from __future__ import annotations

import math
import os
import time
from typing import Any

from agents.backends.base import Backend, BackendError, Generation, GenerationRequest, TokenLogprob
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
    """Runs a GGUF model in-process; a batch is generated request by request."""

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

    def _unload(self) -> None:
        llm = getattr(self, "_llm", None)
        if llm is not None:
            llm.close()
        self._llm = None

    def _generate(self, requests: list[GenerationRequest]) -> list[Generation]:
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
        try:
            if request.logprobs:
                return self._draft_with_logprobs(request, start)
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
            return Generation(text="", model=self.spec.name, error=f"llama.cpp: {exc}",
                              seconds=time.perf_counter() - start)
        usage = out.get("usage", {})
        return Generation(
            text=text.strip(),
            model=self.spec.name,
            prompt_tokens=usage.get("prompt_tokens", 0),
            completion_tokens=usage.get("completion_tokens", 0),
            seconds=time.perf_counter() - start,
            finish_reason=out["choices"][0].get("finish_reason"),
        )

    def _prompt_tokens(self, request: GenerationRequest) -> list[int]:
        if self.spec.chat_template:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            template = self._llm.metadata.get("tokenizer.chat_template")
            if template:
                eos = self._llm.detokenize([self._llm.token_eos()]).decode(errors="ignore")
                bos = self._llm.detokenize([self._llm.token_bos()]).decode(errors="ignore")
                formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
                text = formatter(messages=[m.model_dump() for m in request.messages]).prompt
                return self._llm.tokenize(text.encode(), add_bos=False, special=True)
        return self._llm.tokenize(completion_prompt(request.messages).encode(), special=True)

    def _draft_with_logprobs(self, request: GenerationRequest, start: float) -> Generation:
        """Greedy draft that records each token's log-prob and its top alternatives."""
        import numpy as np

        llm = self._llm
        tokens = self._prompt_tokens(request)
        llm.reset()
        llm.eval(tokens)
        out_tokens: list[int] = []
        logprobs: list[TokenLogprob] = []
        top_n = request.logprobs or 1
        for _ in range(request.max_tokens):
            logits = np.asarray(llm.eval_logits[-1], dtype=np.float64)
            shifted = logits - logits.max()
            logp = shifted - math.log(float(np.exp(shifted).sum()))
            best = np.argsort(-logp)[:top_n]
            token = int(best[0])
            if token == llm.token_eos() or llm._model.token_is_eog(token):
                break
            piece = llm.detokenize([token]).decode(errors="ignore")
            logprobs.append(TokenLogprob(
                token=piece, logprob=float(logp[token]),
                top={llm.detokenize([int(t)]).decode(errors="ignore"): float(logp[t]) for t in best},
            ))
            out_tokens.append(token)
            llm.eval([token])
        text = llm.detokenize(out_tokens).decode(errors="ignore")
        return Generation(
            text=text.strip(), model=self.spec.name, prompt_tokens=len(tokens),
            completion_tokens=len(out_tokens), seconds=time.perf_counter() - start,
            token_logprobs=logprobs,
        )
