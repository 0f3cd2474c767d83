"""Cancellation and the server's bounds under overload (issue 26), on scripted (fake) experts:
a cancelled generation stops at its next step and keeps what it spent; queued jobs never
start; a job two requests share runs on while one still wants it; ``Symoe.ask``'s deadline
stops its work; and through a real uvicorn server: the slot is held until the work stops, a
full queue is a 429 with ``Retry-After``, a client that leaves (streaming or not) cancels its
work, a request cut by the deadline is answered by the pipeline's own stages with the usage
spent, a degraded request says so, ``/metrics`` counts it all. The real pool's stream
disconnect is in test_overload_real.py."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
from test_server import ANSWERS, Running, client

from agents.backends import ChatMessage, GenerationRequest, create_backend
from agents.backends.base import Cancel, cancel_scope
from agents.errors import SymoeError
from agents.pool import ExpertSpec
from orchestrator.config import SymoeConfig
from orchestrator.executor import LocalExecutor
from orchestrator.profiles import ExpertProfile, Profile, SkillCount, save_profile
from orchestrator.provenance import pool_digest
from orchestrator.records import Job, Query
from orchestrator.server.batching import BatchingExecutor
from orchestrator.server.schema import ApiError
from orchestrator.server.service import Service
from orchestrator.session import Symoe

SLOW_S = 6.0


def slow_config(tmp_path: Path, delay: float = SLOW_S, **server: object) -> SymoeConfig:
    """alpha answers at once; slow takes ``delay`` seconds per generation (in 50 ms steps)."""
    experts = {
        "alpha": ExpertSpec(name="alpha", backend="fake", params={"answers": ANSWERS}),
        "slow": ExpertSpec(name="slow", backend="fake", params={"answers": ANSWERS, "delay_s": delay}),
    }
    config = SymoeConfig(home=tmp_path / "home", experts=experts, default_expert="alpha", replace_pool=True,
                         recruit={"profile": tmp_path / "profile.json"}, retrieval={"mode": "never"},
                         server={"batch_window_ms": 5, **server})
    count = {"alpha": SkillCount(right=8, wrong=2), "slow": SkillCount(right=9, wrong=1)}
    save_profile(Profile(pool=pool_digest(config), annotator="alpha",
                         experts={n: ExpertProfile(skills={"arithmetic": c}, tasks={"t": c}) for n, c in count.items()},
                         aggregators={"alpha": ExpertProfile(tasks={"t": SkillCount(right=9)})}),
                 tmp_path / "profile.json")
    return config


def request(text: str = "What is 17 * 23?") -> GenerationRequest:
    return GenerationRequest(messages=[ChatMessage(role="user", content=text)])


def slow_backend(delay: float = SLOW_S):
    return create_backend(ExpertSpec(name="slow", backend="fake", params={"answers": ANSWERS, "delay_s": delay}))


# -- the engine ------------------------------------------------------------------------------
def test_a_cancelled_generation_stops_at_its_next_step_and_keeps_what_it_spent() -> None:
    backend, flag = slow_backend(), Cancel()
    threading.Timer(0.3, flag.cancel, args=("test",)).start()
    start = time.monotonic()
    gen = backend.generate([request()], [flag])[0]
    assert time.monotonic() - start < 1.0
    assert gen.was_cancelled and not gen.ok and "test" in (gen.error or "")
    assert gen.usage.prompt_tokens > 0 and gen.usage.seconds >= 0.25
    assert backend.cancelled == 1 and backend.running == 0


def test_a_request_cancelled_before_its_turn_never_starts() -> None:
    backend = slow_backend(0.0)
    backend.load()
    flag, before = Cancel(), type(backend).calls
    flag.cancel("gone")
    gens = backend.generate([request(), request("capital of France")], [flag, None])
    assert gens[0].was_cancelled and gens[1].ok and type(backend).calls == before + 1  # one ran, not two


def test_the_local_executor_never_loads_a_model_for_cancelled_jobs(tmp_path: Path) -> None:
    from agents.runtime import LoadedPool

    config = slow_config(tmp_path)
    pool = LoadedPool(config.experts, config.home, budget_bytes=1 << 30)
    flag = Cancel()
    flag.cancel("gone")
    jobs = [Job(model="slow", request=request()) for _ in range(3)]
    seen: list[Job] = []
    with cancel_scope(flag):  # the thread's flag reaches the jobs
        LocalExecutor(pool).run("slow", jobs, seen.extend)
    assert all(j.generation is not None and j.generation.was_cancelled for j in jobs) and len(seen) == 3
    assert pool.loaded() == []


def test_a_shared_job_runs_on_while_one_request_still_wants_it(tmp_path: Path) -> None:
    from agents.runtime import LoadedPool

    config = slow_config(tmp_path, delay=1.0)
    batcher = BatchingExecutor(LocalExecutor(LoadedPool(config.experts, config.home, budget_bytes=1 << 30)), 20)
    first, second = Cancel(), Cancel()
    jobs = {name: Job(model="slow", request=request()) for name in ("first", "second")}
    took: dict[str, float] = {}

    def ask(name: str, flag: Cancel) -> None:
        start = time.monotonic()
        with cancel_scope(flag):
            batcher.run("slow", [jobs[name]], lambda batch: None)
        took[name] = time.monotonic() - start

    threads = [threading.Thread(target=ask, args=("first", first)),
               threading.Thread(target=ask, args=("second", second))]
    for t in threads:
        t.start()
    time.sleep(0.3)
    first.cancel("gone")  # the other request still wants the same job
    for t in threads:
        t.join(10)
    assert jobs["first"].generation is not None and jobs["first"].generation.was_cancelled
    assert took["first"] < 0.6  # it stopped waiting at once
    assert jobs["second"].generation is not None and jobs["second"].generation.ok, jobs["second"].generation
    assert batcher.shared["slow"] == 1 and batcher.jobs["slow"] == 1  # one generation for both
    # both leave: the shared job stops
    third, fourth = Cancel(), Cancel()
    jobs = {"first": Job(model="slow", request=request()), "second": Job(model="slow", request=request())}
    threads = [threading.Thread(target=ask, args=("first", third)),
               threading.Thread(target=ask, args=("second", fourth))]
    for t in threads:
        t.start()
    time.sleep(0.3)
    third.cancel("gone")
    fourth.cancel("gone")
    for t in threads:
        t.join(10)
    assert max(took.values()) < 0.7 and all(j.generation and j.generation.was_cancelled for j in jobs.values())
    deadline = time.monotonic() + 2
    while batcher.busy() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert batcher.busy() == []  # its runner thread is gone


def test_ask_deadline_stops_its_work(tmp_path: Path) -> None:
    with Symoe(slow_config(tmp_path, delay=30.0), use_cache=False) as symoe:
        start = time.monotonic()
        with pytest.raises(SymoeError, match="no answer within the deadline of 1 s"):
            symoe.ask("What is 17 * 23?", model="slow", deadline_s=1)
        assert time.monotonic() - start < 3
        backend = symoe.pool.get("slow")
        assert backend.running == 0 and backend.cancelled == 1


# -- the server ------------------------------------------------------------------------------
def post(running: Running, model: str = "slow", timeout: float = 60, **body: object) -> httpx.Response:
    return httpx.post(running.url + "/v1/chat/completions", timeout=timeout, json={
        "model": model, "messages": [{"role": "user", "content": "What is 17 * 23?"}], **body})


def metric(running: Running, event: str) -> float:
    for line in httpx.get(running.url + "/metrics").text.splitlines():
        if line.startswith(f'symoe_admission_total{{event="{event}"}}'):
            return float(line.split()[-1])
    raise AssertionError(f"no symoe_admission_total for {event}")


def test_a_full_queue_is_a_429_with_retry_after_and_metrics_count_it(tmp_path: Path) -> None:
    config = slow_config(tmp_path, delay=1.5, max_in_flight=1, max_queued=1)
    with Running(Service(config)) as running, __import__("concurrent.futures").futures.ThreadPoolExecutor(3) as pool:
        first = pool.submit(post, running)
        time.sleep(0.5)
        second = pool.submit(post, running)
        time.sleep(0.3)
        assert httpx.get(running.url + "/health").json()["queued"] == 1
        third = post(running)
        assert third.status_code == 429 and int(third.headers["retry-after"]) >= 1
        assert third.json()["error"]["code"] == "too_many_requests"
        assert first.result().status_code == 200 and second.result().status_code == 200
        assert metric(running, "rejected") == 1 and metric(running, "admitted") == 2
        assert running.service.admission.most_running == 1  # never more work than slots


def test_the_slot_is_held_until_the_work_stops(tmp_path: Path) -> None:
    config = slow_config(tmp_path, max_in_flight=1, max_queued=1, deadline_s=0.5, stop_grace_s=0.1)
    service = Service(config)
    try:
        stopped = threading.Event()

        def stubborn(*args: object, **kwargs: object) -> object:  # work that does not look at its flag
            time.sleep(2.0)
            stopped.set()
            raise SymoeError("stubborn")

        service.symoe.ask_query = stubborn  # type: ignore[method-assign]
        start = time.monotonic()
        with pytest.raises(ApiError) as cut:
            service.answer(Query(question="What is 17 * 23?"), service.method_for("alpha"))
        assert cut.value.status == 504 and time.monotonic() - start < 1.5
        assert service.admission.running == 1 and not stopped.is_set()  # the deadline passed; the work did not stop
        ticket = service.admit(service.method_for("alpha"))
        assert not ticket.running  # so the next request waits
        stopped.wait(5)
        time.sleep(0.1)
        assert ticket.running and service.admission.running == 1  # the slot passed on when the work stopped
        service.admission.release(ticket)
        assert service.counts["timed_out"] == 1
    finally:
        service.close()


def test_a_request_cut_by_the_deadline_is_combined_by_the_pipeline_with_the_usage_spent(tmp_path: Path) -> None:
    config = slow_config(tmp_path, delay=30.0, deadline_s=1.5)
    with Running(Service(config)) as running:
        start = time.monotonic()
        reply = post(running, model="majority:alpha+slow")
        took = time.monotonic() - start
        assert reply.status_code == 200, reply.text
        assert took < 1.5 + 1.0
        body = reply.json()
        record = body["symoe"]
        assert record["deadline_exceeded"] and "391" in body["choices"][0]["message"]["content"]
        steps = {s["step"]: s for s in record["steps"]}
        assert steps["expert:alpha#0"]["usage"]["completion_tokens"] > 0
        # the slow expert's step is there; what its cancelled generation spent may land after the
        # reply (the batcher releases a cancelled waiter at once), so its seconds are not asserted
        assert "expert:slow#0" in steps
        assert body["usage"]["total_tokens"] == sum(s["usage"]["prompt_tokens"] + s["usage"]["completion_tokens"]
                                                    for s in record["steps"]) > 0
        backend = running.service.pool.get("slow")
        stop_by = time.monotonic() + 2.0  # the generation itself stops at its next step
        while (backend.running or not backend.cancelled) and time.monotonic() < stop_by:
            time.sleep(0.05)
        assert backend.running == 0 and backend.cancelled >= 1
        assert metric(running, "timed_out") == 1
        alone = post(running)  # only the slow expert: nothing to combine
        assert alone.status_code == 504 and alone.json()["error"]["code"] == "deadline_exceeded"


def test_a_client_that_leaves_cancels_its_work_streaming_or_not(tmp_path: Path) -> None:
    with Running(Service(slow_config(tmp_path, delay=30.0))) as running:
        backend_calls = running.service.pool
        with pytest.raises(httpx.ReadTimeout):
            post(running, timeout=0.8)
        deadline = time.monotonic() + 3
        while running.service.admission.running and time.monotonic() < deadline:
            time.sleep(0.05)
        assert running.service.admission.running == 0 and metric(running, "cancelled") == 1
        slow = backend_calls.get("slow")
        assert slow.running == 0 and slow.cancelled == 1
        with httpx.stream("POST", running.url + "/v1/chat/completions", timeout=30, json={
                "model": "slow", "stream": True, "messages": [{"role": "user", "content": "What is 17 * 23?"}]}) as r:
            assert r.status_code == 200
            lines = r.iter_lines()  # kept: a dropped iterator closes the response
            assert next(lines).startswith("data: ")  # the first chunk (the role)
            began = time.monotonic()
            while not slow.running and time.monotonic() - began < 5:
                time.sleep(0.02)
            assert slow.running == 1
        left = time.monotonic()
        while slow.running and time.monotonic() - left < 2:
            time.sleep(0.02)
        assert slow.running == 0 and time.monotonic() - left < 1.0 and slow.cancelled == 2
        assert metric(running, "cancelled") == 2


def test_a_degraded_request_says_so(tmp_path: Path) -> None:
    config = slow_config(tmp_path, delay=0.0, degrade_to="default", degrade_when_queued=0)
    with Running(Service(config)) as running:
        reply = client(running).chat.completions.create(model="symoe", messages=[
            {"role": "user", "content": "What is 17 * 23?"}])
        record = reply.model_extra["symoe"]  # type: ignore[index]
        assert record["degraded"] is True and "single:alpha instead of symoe" in record["degraded_why"]
        assert record["experts"] == ["alpha"] and metric(running, "degraded") == 1
        one = client(running).chat.completions.create(model="slow", messages=[
            {"role": "user", "content": "What is 17 * 23?"}])
        assert one.model_extra["symoe"]["degraded"] is False  # type: ignore[index]  # one expert: nothing cheaper
    busy = slow_config(tmp_path, delay=0.0, degrade_to="default", degrade_when_queued=1)
    with Running(Service(busy)) as running:
        reply = client(running).chat.completions.create(model="symoe", messages=[
            {"role": "user", "content": "What is 17 * 23?"}])
        assert reply.model_extra["symoe"]["degraded"] is False  # type: ignore[index]  # nobody waited


def test_a_bad_degrade_router_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(SymoeError, match="server.degrade_to 'nonsense'"):
        Service(slow_config(tmp_path, degrade_to="nonsense"))


def test_no_expert_to_serve_is_a_503(tmp_path: Path) -> None:
    config = slow_config(tmp_path, delay=0.0)
    with Running(Service(config)) as running:
        for model in ("alpha", "slow"):
            for _ in range(config.server.cooldown_failures):
                running.service.health.observe(model, [__import__("agents.backends").backends.Generation.failure(
                    model, "down")])
        reply = post(running, model="symoe")
        assert reply.status_code == 503 and reply.json()["error"]["code"] == "no_expert_available"
        assert "retry-after" in reply.headers and metric(running, "unserved") == 1
        with pytest.raises(openai.InternalServerError):
            client(running).chat.completions.create(model="alpha", messages=[{"role": "user", "content": "hi"}])


def test_an_openai_expert_request_is_closed_when_cancelled() -> None:
    from test_backend_openai import ScriptedServer, chat_reply, spec

    with ScriptedServer([(200, {}, chat_reply("late"))], delay=5.0) as server:
        backend = create_backend(spec(server.url))
        backend.load()
        flag = Cancel()
        threading.Timer(0.4, flag.cancel, args=("gone",)).start()
        start = time.monotonic()
        gens = backend.generate([request(), request("capital of France")], [flag, flag])
        assert time.monotonic() - start < 1.5
        assert all(g.was_cancelled and "gone" in (g.error or "") for g in gens)
        assert len(server.posts()) == 2  # both were sent, and both connections closed before the answer
        backend.unload()
        assert not any(t.name.startswith("openai-") and t.is_alive() for t in threading.enumerate())
