"""``symoe serve`` control flow with scripted (fake) experts on a real uvicorn server on a free
loopback port: the OpenAI shapes, bad requests (4xx JSON, still serving after), the API key,
streaming, concurrency sharing model batches, and a failing expert cooled down. Real models
are in test_server_real.py."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
import uvicorn
from conftest import free_port

from agents.pool import ExpertSpec
from orchestrator.config import SymoeConfig
from orchestrator.profiles import ExpertProfile, Profile, SkillCount, save_profile
from orchestrator.provenance import pool_digest
from orchestrator.server.app import create_app
from orchestrator.server.service import Service

ANSWERS = {"Which skills": "Keywords: arithmetic", "Responses from other models": "Answer: 391",
           "17 * 23": "17 * 23 = 391\nAnswer: 391", "capital of France": "Answer: Paris"}


def make_config(tmp_path: Path, **server: object) -> SymoeConfig:
    experts = {
        "alpha": ExpertSpec(name="alpha", backend="fake", params={"answers": ANSWERS}),
        "beta": ExpertSpec(name="beta", backend="fake", params={"answers": {**ANSWERS, "17 * 23": "Answer: 381"}}),
        "broken": ExpertSpec(name="broken", backend="fake", params={"fail": True}),
    }
    config = SymoeConfig(home=tmp_path / "home", experts=experts, default_expert="alpha", replace_pool=True,
                         recruit={"profile": tmp_path / "profile.json"}, retrieval={"mode": "never"},
                         server={"batch_window_ms": 30, **server})
    count = {"alpha": SkillCount(right=9, wrong=1), "beta": SkillCount(right=8, wrong=2),
             "broken": SkillCount(right=9, wrong=1)}
    save_profile(Profile(pool=pool_digest(config), annotator="alpha",
                         experts={n: ExpertProfile(skills={"arithmetic": c}, tasks={"t": c}) for n, c in count.items()},
                         aggregators={"alpha": ExpertProfile(tasks={"t": SkillCount(right=9)})}),
                 tmp_path / "profile.json")
    return config


class Running:
    def __init__(self, service: Service) -> None:
        self.service = service
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Running:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.service.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Running]:
    with Running(Service(make_config(tmp_path))) as running:
        yield running


def client(server: Running, key: str = "none") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=300)


def test_models_and_a_routed_chat_completion(server: Running) -> None:
    ids = [m.id for m in client(server).models.list()]
    assert ids[0] == "symoe" and {"moa", "majority", "symoe:k2", "symoe@never", "alpha", "beta"} <= set(ids)
    reply = client(server).chat.completions.create(model="symoe:k2", messages=[
        {"role": "user", "content": "What is 17 * 23?"}])
    assert reply.model == "symoe:k2" and "391" in (reply.choices[0].message.content or "")
    record = reply.model_extra["symoe"]  # type: ignore[index]
    assert record["answer"] == "391" and record["skills"] == ["arithmetic"]
    assert record["aggregated"] and record["aggregator"] == "alpha", record  # alpha and beta disagree
    assert {s["step"].split(":")[0] for s in record["steps"]} >= {"annotate", "expert", "aggregate"}
    assert reply.usage is not None and reply.usage.total_tokens == sum(
        s["usage"]["prompt_tokens"] + s["usage"]["completion_tokens"] for s in record["steps"])


def test_a_single_expert_by_name_completions_and_multi_turn(server: Running) -> None:
    one = client(server).chat.completions.create(model="beta", messages=[{"role": "user", "content": "17 * 23?"}])
    assert one.model_extra["symoe"]["experts"] == ["beta"] and "381" in (one.choices[0].message.content or "")
    done = client(server).completions.create(model="alpha", prompt="What is the capital of France?")
    assert done.choices[0].text.strip().endswith("Paris")
    turns = client(server).chat.completions.create(model="alpha", messages=[
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi."}, {"role": "user", "content": "What is the capital of France?"}])
    assert "Paris" in (turns.choices[0].message.content or "")


def test_streaming_chunks_join_to_the_answer_and_the_last_carries_the_record(server: Running) -> None:
    chunks = list(client(server).chat.completions.create(
        model="symoe", stream=True, messages=[{"role": "user", "content": "What is 17 * 23?"}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "391" in text and chunks[0].choices[0].delta.role == "assistant"
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop" and last.model_extra["symoe"]["answer"] == "391"  # type: ignore[index]


def test_stop_sequences_end_the_text_streamed_or_not(server: Running) -> None:
    """OpenAI's ``stop`` (lm-eval sends its ``until`` there): the text ends before the first one."""
    ask = {"model": "alpha", "messages": [{"role": "user", "content": "What is 17 * 23?"}]}
    whole = client(server).chat.completions.create(**ask)  # type: ignore[call-overload]
    assert whole.choices[0].message.content == "17 * 23 = 391\nAnswer: 391"
    cut = client(server).chat.completions.create(**ask, stop=["\nAnswer", "zzz"])  # type: ignore[call-overload]
    assert cut.choices[0].message.content == "17 * 23 = 391"
    assert client(server).completions.create(model="alpha", prompt="What is 17 * 23?", stop="=").choices[0].text \
        == "17 * 23 "
    chunks = list(client(server).chat.completions.create(**ask, stream=True, stop="\nAnswer"))  # type: ignore
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "17 * 23 = 391"
    assert chunks[-1].model_extra["symoe"]["answer"] == "391"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError, match="at most 4"):
        client(server).chat.completions.create(**ask, stop=list("abcde"))  # type: ignore[call-overload]


@pytest.mark.parametrize(("body", "status", "what"), [
    ({"model": "gpt-17", "messages": [{"role": "user", "content": "hi"}]}, 404, "unknown model"),
    ({"model": "symoe", "messages": []}, 400, "messages"),
    ({"model": "symoe", "messages": [{"role": "system", "content": "only a system prompt"}]}, 400, "no user"),
    ({"model": "symoe", "max_tokens": 10**9, "messages": [{"role": "user", "content": "hi"}]}, 400, "max_tokens"),
    ({"model": "symoe", "n": 3, "messages": [{"role": "user", "content": "hi"}]}, 400, "n > 1"),
    ({"model": "symoe", "messages": [{"role": "wizard", "content": "hi"}]}, 400, "role"),
])
def test_bad_requests_are_4xx_json_errors_and_the_server_keeps_serving(server: Running, body: dict, status: int,
                                                                       what: str) -> None:
    reply = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=300)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert what in error["message"] and error["type"] and "Traceback" not in reply.text
    assert httpx.get(server.url + "/health").json()["status"] == "ok"


def test_invalid_json_and_a_2mb_body(server: Running) -> None:
    bad = httpx.post(server.url + "/v1/chat/completions", content=b"{not json", timeout=30,
                     headers={"content-type": "application/json"})
    assert bad.status_code == 400 and "not valid JSON" in bad.json()["error"]["message"]
    big = httpx.post(server.url + "/v1/chat/completions", timeout=30, json={
        "model": "symoe", "messages": [{"role": "user", "content": "x" * (2 << 20)}]})
    assert big.status_code == 413 and big.json()["error"]["code"] == "too_large"
    assert client(server).models.list().data


def test_an_api_key_is_required_when_set(tmp_path: Path) -> None:
    with Running(Service(make_config(tmp_path), api_key="s3cret")) as running:
        for key in ("wrong", "none"):
            with pytest.raises(openai.AuthenticationError):
                client(running, key).models.list()
        assert httpx.get(running.url + "/v1/models").status_code == 401
        assert client(running, "s3cret").models.list().data


def test_concurrent_requests_share_model_batches(server: Running) -> None:
    def ask(i: int) -> str:
        reply = client(server).chat.completions.create(model="alpha", messages=[
            {"role": "user", "content": f"What is the capital of France? (user {i})"}])
        return reply.choices[0].message.content or ""

    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(ask, range(10)))
    assert all("Paris" in a for a in answers)
    batches = server.service.batcher.batches["alpha"]
    assert server.service.batcher.jobs["alpha"] == 10 and batches < 10, batches
    metrics = httpx.get(server.url + "/metrics").text
    assert 'symoe_model_batches{model="alpha"}' in metrics


def test_a_failing_expert_is_cooled_down_and_not_waited_for(tmp_path: Path) -> None:
    with Running(Service(make_config(tmp_path, cooldown_failures=2, cooldown_s=600))) as running:
        for _ in range(2):
            reply = client(running).chat.completions.create(model="symoe:k3-distinct", messages=[
                {"role": "user", "content": "What is 17 * 23?"}])
            assert "391" in (reply.choices[0].message.content or "")  # the others answer
        health = httpx.get(running.url + "/health").json()
        assert "broken" in health["cooled_down"], health
        after = client(running).chat.completions.create(model="symoe:k3-distinct", messages=[
            {"role": "user", "content": "What is 17 * 23?"}])
        assert "broken" not in after.model_extra["symoe"]["experts"]  # type: ignore[index]
        direct = httpx.post(running.url + "/v1/chat/completions", timeout=30, json={
            "model": "broken", "messages": [{"role": "user", "content": "hi"}]})
        assert direct.status_code == 503 and "cooled down" in direct.json()["error"]["message"]
        metrics = httpx.get(running.url + "/metrics").text
        assert 'symoe_expert_cooled_down{expert="broken"} 1.0' in metrics
        assert json.loads(json.dumps(health))["status"] == "ok"
