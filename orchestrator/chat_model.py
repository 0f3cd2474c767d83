"""symoe as a LangChain chat model (``langchain_core``'s ``BaseChatModel``), so it drops into a
langgraph agent or any LangChain chain as the model.

    from orchestrator.chat_model import SymoeChatModel
    llm = SymoeChatModel()                       # the default config, router "symoe"
    reply = llm.invoke("What is 17 * 23?")
    reply.content, reply.response_metadata["symoe"]["experts"]

The last human message is what is annotated and routed; earlier messages go to the experts
as history; ``invoke(..., answer_format="text"|"number"|"choice")`` declares the answer
format. Every reply carries the routing record (method, skills, recruited experts and
weights, aggregator, retrieval decision, per-step usage) in ``response_metadata["symoe"]``
and the token counts in ``usage_metadata``. Sync, async (LangChain runs the sync call in an
executor) and streaming (``stream``/``astream``: the answer's text as it is produced).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field, PrivateAttr, model_validator

from agents.backends import ChatMessage
from orchestrator.config import SymoeConfig, load_config
from orchestrator.queries import conversation_query
from orchestrator.records import AskResult, Query
from orchestrator.session import Symoe, deprecated

ROLES = {"human": "user", "ai": "assistant", "system": "system"}


class SymoeChatModel(BaseChatModel):
    """A chat model whose every reply is symoe's routed answer."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    router: str = Field("symoe", description="a router by name: symoe, clusters, moa, single:EXPERT, ...")
    config: SymoeConfig | None = None
    max_tokens: int | None = None
    _symoe: Symoe | None = PrivateAttr(None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @model_validator(mode="before")
    @classmethod
    def _old_names(cls, data: Any) -> Any:
        if isinstance(data, dict) and "strategy" in data:
            deprecated("SymoeChatModel(strategy=...)", "SymoeChatModel(router=...)")
            data = {k: v for k, v in data.items() if k != "strategy"} | {"router": data["strategy"]}
        return data

    @property
    def _llm_type(self) -> str:
        return "symoe"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"router": self.router}

    def symoe(self) -> Symoe:
        with self._lock:
            if self._symoe is None:
                self._symoe = Symoe(self.config or load_config())
            return self._symoe

    def close(self) -> None:
        if self._symoe is not None:
            self._symoe.close()
            self._symoe = None

    def _query(self, messages: list[BaseMessage], answer_format: str | None = None) -> Query:
        turns = [ChatMessage(role=ROLES.get(m.type, "user"), content=m.text) for m in messages  # type: ignore[arg-type]
                 if m.type in ROLES]
        query = conversation_query(turns, self.max_tokens)
        return query.model_copy(update={"format": answer_format}) if answer_format else query

    @staticmethod
    def _metadata(result: AskResult) -> dict[str, Any]:
        """The routing record and token counts a reply (or a stream's last chunk) carries."""
        return {"response_metadata": {"symoe": result.record(), "model_name": "symoe"},
                "usage_metadata": {"input_tokens": result.usage.prompt_tokens,
                                   "output_tokens": result.usage.completion_tokens,
                                   "total_tokens": result.usage.total_tokens}}

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        symoe = self.symoe()
        with self._lock:  # one pipeline run at a time per model object (the models are shared)
            result = symoe.ask_query(self._query(messages, kwargs.get("answer_format")), self.router)
        if result.error:
            raise RuntimeError(result.error)
        reply = AIMessage(content=result.text, **self._metadata(result))
        return ChatResult(generations=[ChatGeneration(message=reply)])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        symoe = self.symoe()
        query = self._query(messages, kwargs.get("answer_format"))
        pieces: queue.Queue[tuple[str, Any]] = queue.Queue()

        def work() -> None:
            try:
                with self._lock:
                    pieces.put(("done", symoe.stream(query, lambda t: pieces.put(("text", t)), router=self.router)))
            except Exception as exc:  # noqa: BLE001 - handed to the reader, raised there
                pieces.put(("error", exc))

        threading.Thread(target=work, daemon=True).start()
        sent = ""
        while True:
            kind, item = pieces.get()
            if kind == "text":
                sent += item
                if run_manager:
                    run_manager.on_llm_new_token(item)
                yield ChatGenerationChunk(message=AIMessageChunk(content=item))
            elif kind == "error":
                raise item
            else:
                result: AskResult = item
                rest = result.text[len(sent.strip()):] if result.text.startswith(sent.strip()) else ""
                # marked last, else langchain-core appends an empty last chunk of its own
                yield ChatGenerationChunk(message=AIMessageChunk(content=rest, chunk_position="last",
                                                                 **self._metadata(result)))
                return
