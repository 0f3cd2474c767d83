"""transformers backend: real batched generation with left padding.

A GGUF file is dequantized by transformers once and saved as a safetensors folder under
``<home>/hf/<expert>`` (``agents.backends.hf_cache``); later loads read that folder (seconds
instead of tens of seconds). Weights run in bfloat16 where the hardware computes it natively
(a GPU, or a CPU with AVX512-BF16/AMX: about 4x the float32 matmul rate on this project's
machines), else float32; ``params: {dtype: float32}`` overrides. Each batch holds prompts of
similar length (sorted before chunking) so little compute goes to padding.

Cancellation: a stopping criterion checks each row's cancel flag (``Backend.cancel_of``)
after every token; a cancelled row stops there (the batch ends when every row has) and
comes back as ``Generation.cancelled`` with the tokens it spent.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from agents.backends.base import Backend, BackendError, Generation, GenerationRequest, Usage
from agents.backends.hf_cache import convert_gguf, hf_folder
from agents.backends.registry import register_backend
from agents.prompts import COMPLETION_STOPS, completion_prompt

__all__ = ["TransformersBackend", "convert_gguf"]


@register_backend("transformers")
class TransformersBackend(Backend):
    """Batched ``generate`` over a causal LM; requests sharing sampling settings run together."""

    default_batch = 8

    def _model_dir(self) -> Path:
        return hf_folder(self.spec)

    def _load(self) -> None:
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError:
            raise BackendError("the transformers backend needs: pip install transformers gguf") from None
        if self.spec.path is None or not os.path.exists(self.spec.path):
            raise BackendError(
                f"model for expert {self.spec.name!r} not found ({self.spec.path}); "
                "run `symoe models prepare`"
            )
        torch.set_num_threads(int(self.spec.params.get("n_threads", os.cpu_count() or 2)))
        folder = self._model_dir()
        dtype = getattr(torch, str(self.spec.params.get("dtype") or default_dtype()))
        self._tok = AutoTokenizer.from_pretrained(str(folder))
        self._tok.padding_side = "left"
        if self._tok.pad_token is None:
            self._tok.pad_token = self._tok.eos_token
        self._model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype)
        self._model.eval()

    def _unload(self) -> None:
        self._model = None
        self._tok = None
        _release_freed_memory()

    def _prompt(self, request: GenerationRequest) -> str:
        messages = [m.model_dump() for m in request.messages]
        if self.spec.chat_template and getattr(self._tok, "chat_template", None):
            return str(self._tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
        return completion_prompt(request.messages)

    def _generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        # Identical requests (seed included) get one generation: a request's text then does not
        # depend on how many copies of it share a batch, as with the other engines.
        unique: dict[str, int] = {}
        for i, r in enumerate(requests):
            unique.setdefault(r.cache_key(), i)
        groups: dict[tuple[Any, ...], list[int]] = defaultdict(list)
        for i in unique.values():
            r = requests[i]
            seed = r.seed if r.temperature > 0 else None  # greedy output does not depend on the seed
            groups[(r.max_tokens, r.temperature, r.top_p, seed, tuple(r.stop))].append(i)
        results: dict[int, Generation] = {}
        batch_size = int(self.spec.params.get("batch_size", 8))
        for indices in groups.values():
            indices.sort(key=lambda i: len(self._prompt(requests[i])))  # similar lengths share a batch
            for lo in range(0, len(indices), batch_size):
                chunk = indices[lo : lo + batch_size]
                for i, gen in zip(chunk, self._batch([requests[i] for i in chunk]), strict=True):
                    results[i] = gen
        return [results[unique[r.cache_key()]] for r in requests]

    def _batch(self, requests: list[GenerationRequest]) -> list[Generation]:
        import torch

        first = requests[0]
        start = time.perf_counter()
        prompts = [self._prompt(r) for r in requests]
        enc = self._tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        kwargs: dict[str, Any] = {"max_new_tokens": first.max_tokens, "pad_token_id": self._tok.pad_token_id}
        if first.temperature > 0:
            torch.manual_seed(first.seed if first.seed is not None else 0)
            kwargs.update(do_sample=True, temperature=first.temperature, top_p=first.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        stops = first.stop if self.spec.chat_template else [*first.stop, *COMPLETION_STOPS]
        if stops:
            kwargs.update(stop_strings=stops, tokenizer=self._tok)
        flags = [self.cancel_of(r) for r in requests]
        if any(f is not None for f in flags):
            kwargs["stopping_criteria"] = _cancelled_rows(flags)
        with torch.inference_mode():
            out = self._model.generate(**enc, **kwargs)
        seconds = time.perf_counter() - start
        width = enc["input_ids"].shape[1]
        results = []
        for row, request in enumerate(requests):
            new = out[row, width:]
            special = set(self._tok.all_special_ids)
            completion = [int(t) for t in new if int(t) not in special]
            text = self._tok.decode(completion, skip_special_tokens=True)
            stops = request.stop if self.spec.chat_template else [*request.stop, *COMPLETION_STOPS]
            for stop in stops:
                text = text.split(stop, 1)[0]
            flag = flags[row]
            if flag is not None and flag.cancelled:
                results.append(Generation.cancelled(self.spec.name, flag.reason, Usage(
                    prompt_tokens=int(enc["attention_mask"][row].sum()), completion_tokens=len(completion),
                    seconds=seconds / len(requests)), text.strip()))
                continue
            results.append(Generation(
                text=text.strip(), model=self.spec.name,
                usage=Usage(prompt_tokens=int(enc["attention_mask"][row].sum()),
                            completion_tokens=len(completion), seconds=seconds / len(requests)),
            ))
        return results


def _cancelled_rows(flags: list[Any]) -> Any:
    """A stopping criterion: a row stops once its cancel flag is set (checked after each token)."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class Cancelled(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return torch.tensor([f is not None and f.cancelled for f in flags], dtype=torch.bool,
                                device=input_ids.device)

    return StoppingCriteriaList([Cancelled()])


def default_dtype() -> str:
    """``bfloat16`` where it is computed natively (CUDA, or CPU flags avx512_bf16 / amx_bf16), else ``float32``."""
    import torch

    if torch.cuda.is_available():
        return "bfloat16"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "float32"
    return "bfloat16" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "float32"


def _release_freed_memory() -> None:
    """Hand freed heap pages back to the OS (glibc keeps the model's freed tensors otherwise)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)
