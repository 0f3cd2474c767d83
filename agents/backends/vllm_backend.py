"""vLLM backend (offline ``LLM`` engine). Placeholder until implemented."""

from __future__ import annotations

from agents.backends.base import Backend, BackendError, Generation, GenerationRequest
from agents.backends.registry import register_backend


@register_backend("vllm")
class VllmBackend(Backend):
    def _load(self) -> None:
        raise BackendError("the vllm backend is not implemented yet")

    def _unload(self) -> None:
        pass

    def _generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        raise BackendError("the vllm backend is not implemented yet")
