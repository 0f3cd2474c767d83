"""Request bodies of the OpenAI API as ``symoe serve`` reads them, and OpenAI's error shape.

Responses are ``openai``'s own published types (``ChatCompletion``, ``ChatCompletionChunk``,
``Completion``, ``Model``), built in ``service``; requests are checked here, before any work.
Parameters the router does not use (``temperature``, ``top_p``, ``n`` = 1, the penalties, ...)
are accepted and ignored, as OpenAI-compatible servers commonly do, but only inside the OpenAI
API's own ranges (``BOUNDS``): a value outside is a 400 naming the field, as the API answers.
``n`` > 1, ``tools`` and non-text content are refused; a ``tool`` message needs its
``tool_call_id`` and an ``assistant`` message its ``content`` or ``tool_calls``, as in the API.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from orchestrator.config import MAX_SEED

#: The ranges the OpenAI API documents for the sampling parameters (inclusive); ``seed`` is
#: bounded by what symoe's samplers take.
BOUNDS: dict[str, tuple[float, float]] = {
    "temperature": (0.0, 2.0), "top_p": (0.0, 1.0), "presence_penalty": (-2.0, 2.0),
    "frequency_penalty": (-2.0, 2.0), "top_logprobs": (0, 20), "seed": (0, MAX_SEED),
}


class ApiError(Exception):
    """An error the client caused or must know about: an HTTP status and OpenAI's error body."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers or {}  # e.g. Retry-After on a 429

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    # before ``content``: its check reads them
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = Field(None, validate_default=True)
    content: str | list[dict[str, Any]] | None = Field(None, validate_default=True)

    @field_validator("tool_call_id")
    @classmethod
    def _tool_reply_names_its_call(cls, tool_call_id: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("role") == "tool" and not tool_call_id:
            raise ValueError("a tool message needs the tool_call_id of the call it answers")
        return tool_call_id

    @field_validator("content")
    @classmethod
    def _assistant_says_something(cls, content: str | list[dict[str, Any]] | None,
                                  info: ValidationInfo) -> str | list[dict[str, Any]] | None:
        if info.data.get("role") == "assistant" and content is None and not info.data.get("tool_calls"):
            raise ValueError("an assistant message needs content or tool_calls")
        return content

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ApiError(400, "only text content is supported", param="messages")
            parts.append(part["text"])
        return "".join(parts)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(1, ge=1)
    seed: int | None = Field(None, ge=BOUNDS["seed"][0], le=BOUNDS["seed"][1])
    temperature: float | None = Field(None, ge=BOUNDS["temperature"][0], le=BOUNDS["temperature"][1])
    top_p: float | None = Field(None, ge=BOUNDS["top_p"][0], le=BOUNDS["top_p"][1])
    presence_penalty: float | None = Field(None, ge=BOUNDS["presence_penalty"][0], le=BOUNDS["presence_penalty"][1])
    frequency_penalty: float | None = Field(None, ge=BOUNDS["frequency_penalty"][0],
                                            le=BOUNDS["frequency_penalty"][1])
    top_logprobs: int | None = Field(None, ge=BOUNDS["top_logprobs"][0], le=BOUNDS["top_logprobs"][1])
    user: str | None = None
    stop: str | list[str] | None = Field(None, description="the returned text ends before the first of these")

    @field_validator("stop")
    @classmethod
    def _stops(cls, stop: str | list[str] | None) -> str | list[str] | None:
        if isinstance(stop, list) and len(stop) > 4:
            raise ValueError("at most 4 stop sequences")
        return stop

    @field_validator("n")
    @classmethod
    def _one(cls, n: int | None) -> int | None:
        if n is not None and n != 1:
            raise ValueError("n > 1 is not supported: the router returns one answer")
        return n

    @property
    def token_cap(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class ChatRequest(_Common):
    messages: list[Message] = Field(min_length=1)
    tools: list[Any] | None = None

    @field_validator("tools")
    @classmethod
    def _no_tools(cls, tools: list[Any] | None) -> list[Any] | None:
        if tools:
            raise ValueError("tools are not supported")
        return tools


class CompletionRequest(_Common):
    prompt: str | list[str]

    def text(self) -> str:
        if isinstance(self.prompt, list):
            if len(self.prompt) != 1:
                raise ApiError(400, "give one prompt per request", param="prompt")
            return self.prompt[0]
        return self.prompt
