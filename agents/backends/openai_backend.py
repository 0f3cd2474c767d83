"""OpenAI-compatible chat server backend. Placeholder until implemented."""

from __future__ import annotations

from agents.backends.base import Backend, BackendError, Generation, GenerationRequest
from agents.backends.registry import register_backend


@register_backend("openai")
class OpenAIBackend(Backend):
    needs_model_file = False

    def _load(self) -> None:
        raise BackendError("the openai backend is not implemented yet")

    def _unload(self) -> None:
        pass

    def _generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        raise BackendError("the openai backend is not implemented yet")
