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
    max_in_flight: int = Field(default=64, ge=1, le=4096,
                               description="requests whose work runs at once; a slot is freed when the work stops")
    max_queued: int = Field(default=64, ge=0, le=4096,
                            description="requests that may wait for a slot; more get HTTP 429 with Retry-After")
    queue_wait_s: float = Field(default=30.0, gt=0.0,
                                description="longest wait for a slot (within the deadline); then HTTP 429")
    deadline_s: float = Field(default=300.0, gt=0.0,
                              description="after this (from arrival) a request's work is cancelled and it returns "
                                          "the best answer its finished experts gave")
    stop_grace_s: float = Field(default=0.5, gt=0.0, le=60.0,
                                description="how long past the deadline the cut answer may take to be combined")
    degrade_to: str | None = Field(default=None, description="a cheaper router routed requests fall back to under "
                                                             "load, and any request when its router failed: 'cheapest' "
                                                             "(the profile's fastest expert alone), 'default' (the "
                                                             "default expert alone) or a router such as "
                                                             "'single:qwen-0.5b-direct' or 'budget:0'; none: never")
    admit_by_deadline: bool = Field(default=True,
                                    description="with work already admitted, forecast when a request would finish "
                                                "(the learnt work-seconds of its router and of the work running and "
                                                "waiting) and degrade it, or answer 429 at once, when it would finish "
                                                "after admit_within of its deadline or push an admitted request past "
                                                "its own")
    hedge: bool = Field(default=True,
                        description="when a routed request's router is forecast to miss its deadline, start "
                                    "degrade_to beside it in its slot, in time to finish; at the deadline, if the "
                                    "router gave nothing, that answer is returned (degraded) instead of a 504")
    admit_within: float = Field(default=0.9, gt=0.0, le=1.0,
                                description="the fraction of deadline_s a forecast must fit in (the rest is margin)")
    degrade_when_queued: int = Field(default=1, ge=0,
                                     description="degrade a routed request when this many wait for a slot as it is "
                                                 "admitted (0: always, while degrade_to is set)")
    cooldown_failures: int = Field(default=3, ge=1, description="consecutive failures that cool an expert down")
    cooldown_s: float = Field(default=60.0, gt=0.0, description="how long a cooled-down expert is left out")
