"""A real ``symoe serve`` (a subprocess on a free loopback port, the real default pool) driven
by the ``openai`` Python client, and a failing expert (an ``openai`` expert pointing at a
closed port) cooled down after N failures."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from conftest import free_port, stop_process

pytestmark = pytest.mark.real


def start(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str, Path]:
    port = free_port()
    log = tmp_path / f"serve-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "serve", "--port", str(port), *args],
                                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        if proc.poll() is not None:
            pytest.fail(f"symoe serve exited with {proc.returncode}: {log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url, log
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"symoe serve not ready after 300 s: {log.read_text()[-3000:]}")
        time.sleep(0.5)


stop = stop_process


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[openai.OpenAI, str, Path]]:
    proc, url, log = start(tmp_path_factory.mktemp("serve"))
    try:
        yield openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=600), url, log
    finally:
        stop(proc)


@pytest.mark.face
def test_one_chat_completion_from_a_real_expert(served) -> None:
    """The server's face in ``make test``: one request, answered by one small real expert, with
    its routing record; the routed, streamed and completions requests are the test below."""
    client, _, log = served
    one = client.chat.completions.create(model="qwen-coder-0.5b", messages=[
        {"role": "user", "content": "What is the capital of France?"}])
    assert one.model == "qwen-coder-0.5b" and one.model_extra["symoe"]["experts"] == ["qwen-coder-0.5b"]  # type: ignore[index]
    assert "Paris" in (one.choices[0].message.content or "")
    assert one.usage is not None and one.usage.completion_tokens > 0
    assert "POST /v1/chat/completions model=qwen-coder-0.5b 200" in log.read_text()


def test_models_routed_chat_streaming_single_expert_and_completions(served) -> None:
    client, url, log = served
    ids = [m.id for m in client.models.list()]
    assert {"symoe", "moa", "majority", "qwen-coder-1.5b", "smollm2-135m"} <= set(ids)

    routed = client.chat.completions.create(model="symoe", messages=[{"role": "user", "content": "What is 17 * 23?"}])
    assert "391" in (routed.choices[0].message.content or ""), routed
    record = routed.model_extra["symoe"]  # type: ignore[index]
    assert record["answer"] == "391" and record["experts"] and record["skills"], record
    assert routed.usage is not None and routed.usage.completion_tokens > 0

    # a question no cache holds (a cached answer arrives as one piece): one expert's tokens stream
    # as produced; routed, several agreeing experts' answer arrives whole, the record on the last chunk
    fresh = f"What is the capital of France? (request {uuid.uuid4().hex[:8]})"
    chunks = list(client.chat.completions.create(model="qwen-1.5b-cot", stream=True,
                                                 messages=[{"role": "user", "content": fresh}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Paris" in text and len(chunks) > 3, text
    chunks = list(client.chat.completions.create(model="symoe", stream=True,
                                                 messages=[{"role": "user", "content": fresh + " "}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    last = chunks[-1].model_extra["symoe"]  # type: ignore[index]
    assert "Paris" in text and last["answer"] and "Paris" in last["answer"], text

    one = client.chat.completions.create(model="qwen-coder-0.5b", messages=[
        {"role": "user", "content": "What is the capital of France?"}])
    assert one.model == "qwen-coder-0.5b" and one.model_extra["symoe"]["experts"] == ["qwen-coder-0.5b"]  # type: ignore[index]
    assert "Paris" in (one.choices[0].message.content or "")

    done = client.completions.create(model="qwen-coder-1.5b", prompt="What is the capital of Japan?")
    assert "Tokyo" in done.choices[0].text
    assert "POST /v1/chat/completions model=symoe 200" in log.read_text()


def test_a_failing_expert_is_cooled_down_and_metrics_show_it(tmp_path: Path) -> None:
    closed = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(
        "experts:\n  qwen-coder-0.5b: null\n  gemma3-270m: null\n"
        f"  dead:\n    backend: openai\n    base_url: http://127.0.0.1:{closed}/v1\n    max_retries: 0\n"
        "    timeout_s: 2\n"
        "server:\n  cooldown_failures: 2\n  cooldown_s: 600\n")
    proc, url, _ = start(tmp_path, "--config", str(config))
    try:
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=600)
        for _ in range(2):
            with pytest.raises(openai.APIStatusError) as err:
                client.chat.completions.create(model="dead", messages=[{"role": "user", "content": "hi"}])
            assert err.value.status_code == 503
        cooled = httpx.get(url + "/health").json()["cooled_down"]
        assert "dead" in cooled, cooled
        start_t = time.monotonic()
        with pytest.raises(openai.APIStatusError) as err:
            client.chat.completions.create(model="dead", messages=[{"role": "user", "content": "hi"}])
        assert "cooled down" in str(err.value) and time.monotonic() - start_t < 2
        metrics = httpx.get(url + "/metrics").text
        assert 'symoe_expert_cooled_down{expert="dead"} 1.0' in metrics
        assert 'symoe_expert_failures{expert="dead"} 2.0' in metrics
    finally:
        stop(proc)
