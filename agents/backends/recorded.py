"""The ``recorded`` backend: an expert known only from an outcome matrix (``eval.matrix``).

A recorded expert is routable and evaluable by replay (``symoe eval --matrix``), where its
recorded answers stand in for generations; it has no engine, so asking it live fails in one
line that says how to give it one.
"""

from __future__ import annotations

from agents.backends.base import Backend, BackendError, Generation, GenerationRequest
from agents.backends.registry import register_backend


@register_backend("recorded")
class RecordedBackend(Backend):
    needs_model_file = False

    def _load(self) -> None:
        raise BackendError(
            f"expert {self.spec.name!r} exists only in an outcome matrix (backend: recorded): it can be replayed "
            "(`symoe eval --matrix FILE`) but not asked; give it an engine in the config, e.g. "
            f"`{self.spec.name}: {{backend: openai, base_url: http://HOST:PORT/v1, model: NAME}}`")

    def _unload(self) -> None:
        pass

    def _generate(self, requests: list[GenerationRequest]) -> list[Generation]:  # never loaded
        raise BackendError(f"expert {self.spec.name!r} is recorded only")
