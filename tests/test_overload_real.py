"""Issue 26 on the real default pool: a client that disconnects from a stream after its first
content chunk stops its request's llama.cpp generation within 1 s (the backend's own
counters of running and cancelled generations), and the slot is free again; an ``openai``
expert whose server (a second ``symoe serve``) is killed mid-request degrades the answer
to ``degrade_to`` instead of losing the query. The control flow on scripted experts is
test_cancel.py and test_overload_admission.py; the load bench is bench/overload.py."""

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


def test_an_expert_killed_mid_request_degrades_the_answer_and_the_server_stays_healthy(tmp_path: Path) -> None:
    """The expert ``remote`` is smollm2-135m served by a second ``symoe serve`` (another process);
    SIGKILL it while it generates for two requests: both are answered by ``degrade_to`` within
    the deadline plus 1 s, the record names the failed expert and why, a request afterwards
    is served as before, and the server's threads come back to their count."""
    import signal
    import threading

    import yaml
    from test_server_real import start

    (tmp_path / "remote").mkdir()
    remote, remote_url, _ = start(tmp_path / "remote")
    deadline_s = 60.0
    try:
        (tmp_path / "main.yaml").write_text(yaml.safe_dump({
            "experts": {"remote": {"backend": "openai", "base_url": remote_url + "/v1", "model": EXPERT,
                                   "routed": False, "max_retries": 0, "timeout_s": 60}},
            "server": {"deadline_s": deadline_s, "degrade_to": f"single:{EXPERT}"}}))
        config = load_config(tmp_path / "main.yaml")
        with Running(Service(config)) as running:
            def ask(question: str, max_tokens: int = 32) -> tuple[httpx.Response, float]:
                began = time.monotonic()
                reply = httpx.post(running.url + "/v1/chat/completions", timeout=600, json={
                    "model": "remote", "max_tokens": max_tokens,
                    "messages": [{"role": "user", "content": question}]})
                return reply, time.monotonic() - began

            warm, _ = ask(f"What is 2 + {time.time_ns() % 1000}?")  # loads the remote's model, starts the I/O thread
            assert warm.status_code == 200 and warm.json()["symoe"]["experts"] == ["remote"], warm.text
            threads_before = threading.active_count()
            replies: list[tuple[httpx.Response, float]] = []
            workers = [threading.Thread(target=lambda i=i: replies.append(ask(
                f"Write a very long story about lighthouse keeper {i} ({time.time_ns()}).", 1000)))
                for i in range(2)]
            for w in workers:
                w.start()
            waited = time.monotonic()
            while httpx.get(remote_url + "/health", timeout=5).json()["running"] < 1:
                assert time.monotonic() - waited < 60, "the remote never started generating"
                time.sleep(0.05)
            time.sleep(1.0)  # mid-generation
            remote.send_signal(signal.SIGKILL)
            remote.wait(10)
            for w in workers:
                w.join(deadline_s + 30)
            assert len(replies) == 2
            for reply, took in replies:
                assert reply.status_code == 200, reply.text
                record = reply.json()["symoe"]
                assert record["degraded"] and record["failed_experts"] == ["remote"], record
                assert record["experts"] == [EXPERT] and "single:remote failed" in record["degraded_why"]
                assert took < deadline_s + 1
            assert running.service.counts["fell_back"] == 2
            after, _ = ask(f"What is 3 + {time.time_ns() % 1000}?")  # the expert is gone: the fallback answers
            assert after.status_code == 200 and after.json()["symoe"]["degraded"], after.text
            time.sleep(1.0)
            assert threading.active_count() <= threads_before
            assert running.service.admission.running == 0
    finally:
        if remote.poll() is None:
            remote.kill()
            remote.wait(10)
