"""The ``server:`` section of the config: where ``symoe serve`` listens and what it bounds."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ServerConfig(BaseModel):
    """Limits and timings of ``symoe serve``. The API key is never stored in a file: it comes
    from ``--api-key`` or ``SYMOE_API_KEY``."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    batch_window_ms: float = Field(default=5.0, ge=0.0, le=1000.0,
                                   description="how long the batcher gathers concurrent jobs for one model")
    max_body_bytes: int = Field(default=1 << 20, ge=1024, description="largest request body")
    max_messages: int = Field(default=64, ge=1, le=4096)
    max_tokens: int = Field(default=2048, ge=1, le=8192, description="largest max_tokens a request may ask for")
    max_in_flight: int = Field(default=64, ge=1, le=4096, description="requests answered at once; more get HTTP 429")
    deadline_s: float = Field(default=300.0, gt=0.0, description="after this a request returns the best answer it has")
    cooldown_failures: int = Field(default=3, ge=1, description="consecutive failures that cool an expert down")
    cooldown_s: float = Field(default=60.0, gt=0.0, description="how long a cooled-down expert is left out")
