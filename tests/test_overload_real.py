"""Issue 26 on the real default pool: a client that disconnects from a stream after its first
content chunk stops its request's llama.cpp generation within 1 s (the backend's own
counters of running and cancelled generations), and the slot is free again. The control
flow on scripted experts is test_cancel.py; the load bench is bench/overload.py."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from test_server import Running

from orchestrator.config import load_config
from orchestrator.server.service import Service

pytestmark = pytest.mark.real

EXPERT = "smollm2-135m"


def test_a_stream_closed_after_its_first_chunk_stops_its_generation_within_a_second(tmp_path: Path) -> None:
    config = load_config(None)
    config = config.model_copy(update={"server": config.server.model_copy(update={"deadline_s": 600})})
    with Running(Service(config)) as running:
        backend = running.service.pool.get(EXPERT)
        body = {"model": EXPERT, "stream": True, "max_tokens": 1500, "seed": int(time.time()) % 100000,
                "messages": [{"role": "user", "content": f"Write a very long story about lighthouse keeper "
                                                         f"number {time.time_ns()}."}]}
        with httpx.stream("POST", running.url + "/v1/chat/completions", json=body, timeout=600) as reply:
            assert reply.status_code == 200
            lines = reply.iter_lines()
            for line in lines:  # the role chunk, then the first piece of text
                if '"content":"' in line and '"content":""' not in line:
                    break
            assert backend.running == 1  # it is generating
        closed = time.monotonic()
        while backend.running and time.monotonic() - closed < 30:
            time.sleep(0.01)
        stopped = time.monotonic() - closed
        assert backend.running == 0 and stopped < 1.0, f"generation ran on {stopped:.2f} s after the client left"
        assert backend.cancelled == 1
        while running.service.admission.running and time.monotonic() - closed < 5:
            time.sleep(0.01)
        assert running.service.admission.running == 0 and running.service.counts["cancelled"] == 1
