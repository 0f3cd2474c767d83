"""The ``openai`` backend against real servers on 127.0.0.1, never a mock client.

- ``llama_server`` (session scope) runs ``python -m llama_cpp.server`` with SmolLM2-135M from the
  default pool; the tests marked ``real`` send it real requests, through the backend and the CLI.
- ``ScriptedServer`` is a small stdlib ``http.server`` on loopback that answers from a script
  (500, 429, slow, ...) so retries, backoff, ``Retry-After``, timeouts and concurrency are
  exercised over real sockets.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agents.backends import BackendError, GenerationRequest, create_backend
from agents.backends.base import ChatMessage
from agents.pool import ExpertSpec
from agents.prompts import COMPLETION_STOPS, completion_prompt

REPO = Path(__file__).resolve().parents[1]
ENV_VARS = ("SYMOE_OPENAI_BASE_URL", "OPENAI_BASE_URL", "OPENAI_API_KEY", "SYMOE_TEST_KEY")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port bound on 127.0.0.1 but not listening: connections to it are refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


def spec(base_url: str, **kw: Any) -> ExpertSpec:
    params = {"backoff_s": 0.01, "backoff_max_s": 0.05, **kw.pop("params", {})}
    return ExpertSpec(name=kw.pop("name", "remote"), backend="openai", base_url=base_url,
                      params=params, **kw)


# -- a scripted server on loopback --------------------------------------------------------------


def chat_reply(text: str, prompt_tokens: int = 5, completion_tokens: int = 3) -> dict[str, Any]:
    return {
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


class ScriptedServer:
    """Answers POSTs from ``script`` in order (the last entry repeats); GET /v1/models is 200.

    An entry is ``(status, headers, body)``; ``body`` may be ``"echo"`` to answer with the last
    user message. ``delay`` makes every POST wait that long. Every request is recorded.
    """

    def __init__(self, script: list[tuple[int, dict[str, str], Any]], delay: float = 0.0) -> None:
        self.script = script
        self.delay = delay
        self.requests: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _reply(self, status: int, headers: dict[str, str], body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                owner.requests.append({"method": "GET", "path": self.path, "headers": dict(self.headers)})
                self._reply(200, {}, {"object": "list", "data": [{"id": "scripted"}]})

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with owner._lock:
                    index = sum(1 for r in owner.requests if r["method"] == "POST")
                    owner.requests.append({"method": "POST", "path": self.path, "body": body,
                                           "headers": dict(self.headers), "time": time.monotonic()})
                    owner.in_flight += 1
                    owner.max_in_flight = max(owner.max_in_flight, owner.in_flight)
                try:
                    time.sleep(owner.delay)
                    status, headers, reply = owner.script[min(index, len(owner.script) - 1)]
                    if reply == "echo":
                        reply = chat_reply(f"echo: {body['messages'][-1]['content']}")
                    self._reply(status, headers, reply)
                finally:
                    with owner._lock:
                        owner.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    def posts(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] == "POST"]

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)


ERROR = {"error": {"message": "overloaded", "type": "server_error"}}


# -- load: reachability and configuration -------------------------------------------------------


def test_unreachable_endpoint_fails_fast_with_one_line(closed_port: int) -> None:
    backend = create_backend(spec(f"http://127.0.0.1:{closed_port}/v1", max_retries=2))
    with pytest.raises(BackendError) as info:
        backend.load()
    message = str(info.value)
    assert "\n" not in message
    assert f"http://127.0.0.1:{closed_port}/v1/models" in message
    assert "after 3 attempt(s)" in message and "ConnectError" in message
    assert "start the server" in message
    assert backend.attempts == 3 and backend.retries == 2  # type: ignore[attr-defined]
    assert len(backend.waits) == 2 and sum(backend.waits) <= 0.1  # type: ignore[attr-defined]
    assert not backend.loaded


def test_missing_base_url_is_a_clear_error() -> None:
    backend = create_backend(ExpertSpec(name="remote", backend="openai"))
    with pytest.raises(BackendError, match="no base_url.*SYMOE_OPENAI_BASE_URL"):
        backend.load()


def test_base_url_and_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with ScriptedServer([(200, {}, "echo")]) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1")  # lower priority: unused
        monkeypatch.setenv("SYMOE_OPENAI_BASE_URL", server.url + "/")
        monkeypatch.setenv("SYMOE_TEST_KEY", "sk-test-123")
        backend = create_backend(ExpertSpec(name="remote", backend="openai", api_key_env="SYMOE_TEST_KEY"))
        gen = backend.generate([GenerationRequest.user("hello")])[0]
    assert gen.ok and gen.text == "echo: hello"
    assert [r["path"] for r in server.requests] == ["/v1/models", "/v1/chat/completions"]
    assert all(r["headers"].get("Authorization") == "Bearer sk-test-123" for r in server.requests)
    assert server.posts()[0]["body"]["model"] == "remote"  # default model name: the expert's name


def test_no_key_sends_no_authorization_header() -> None:
    with ScriptedServer([(200, {}, "echo")]) as server:
        backend = create_backend(spec(server.url, model="served-name"))
        backend.generate([GenerationRequest.user("hi")])
    assert all("Authorization" not in r["headers"] for r in server.requests)
    assert server.posts()[0]["body"]["model"] == "served-name"


# -- retries, backoff, Retry-After, timeouts ----------------------------------------------------


def test_500_and_429_are_retried_then_succeed_honouring_retry_after() -> None:
    script = [(500, {}, ERROR), (503, {}, ERROR), (429, {"Retry-After": "1"}, ERROR),
              (200, {}, chat_reply("Paris", 9, 2))]
    with ScriptedServer(script) as server:
        backend = create_backend(spec(server.url, max_retries=3))
        backend.load()
        gen = backend.generate([GenerationRequest.user("capital of France?")])[0]
    assert gen.ok, gen.error
    assert gen.text == "Paris" and gen.usage.prompt_tokens == 9 and gen.usage.completion_tokens == 2
    posts = server.posts()
    assert len(posts) == 4 and backend.retries == 3  # type: ignore[attr-defined]
    assert posts[3]["time"] - posts[2]["time"] >= 0.95  # waited the server's Retry-After
    waits = backend.waits  # type: ignore[attr-defined]
    assert waits[2] == 1.0 and max(waits[:2]) <= 0.05  # Retry-After, else the small backoff set here


def test_failure_after_retries_degrades_to_error_generations() -> None:
    with ScriptedServer([(500, {}, ERROR)]) as server:
        backend = create_backend(spec(server.url, max_retries=2))
        results = backend.generate([GenerationRequest.user("a"), GenerationRequest.user("b")])
    assert len(results) == 2
    for gen in results:
        assert not gen.ok and gen.text == ""
        assert "HTTP 500" in (gen.error or "") and "overloaded" in (gen.error or "")
        assert "/v1/chat/completions" in (gen.error or "")
    assert len(server.posts()) == 2 * 3


def test_client_errors_are_not_retried() -> None:
    bad = {"error": {"message": "max_tokens is too large", "type": "invalid_request_error"}}
    with ScriptedServer([(400, {}, bad), (200, {}, "echo")]) as server:
        backend = create_backend(spec(server.url, max_retries=3))
        gen = backend.generate([GenerationRequest.user("x")])[0]
    assert gen.error is not None and "HTTP 400" in gen.error and "max_tokens is too large" in gen.error
    assert len(server.posts()) == 1


def test_a_server_that_refuses_logprobs_is_asked_without_them_from_then_on() -> None:
    refused = {"error": {"message": "logprobs is not supported"}}
    with ScriptedServer([(400, {}, refused), (200, {}, "echo"), (200, {}, "echo")]) as server:
        backend = create_backend(spec(server.url))
        first, second = (backend.generate([GenerationRequest.user(q, logprobs=5)])[0] for q in ("a", "b"))
    assert first.ok and first.text == "echo: a" and first.token_logprobs is None and second.ok
    assert ["logprobs" in p["body"] for p in server.posts()] == [True, False, False]  # asked once, then never


def test_timeouts_are_retried_then_reported() -> None:
    with ScriptedServer([(200, {}, "echo")], delay=1.0) as server:
        backend = create_backend(spec(server.url, max_retries=1, timeout_s=0.3))
        backend.load()  # GET /models is not delayed
        gen = backend.generate([GenerationRequest.user("slow")])[0]
    assert gen.error is not None and "ReadTimeout" in gen.error
    assert len(server.posts()) == 2 and backend.retries == 1  # type: ignore[attr-defined]


def test_batch_is_concurrent_bounded_and_ordered() -> None:
    with ScriptedServer([(200, {}, "echo")], delay=0.3) as server:
        backend = create_backend(spec(server.url, params={"concurrency": 3}))
        backend.load()
        results = backend.generate([GenerationRequest.user(f"q{i}") for i in range(6)])
    assert [g.text for g in results] == [f"echo: q{i}" for i in range(6)]
    assert server.max_in_flight == 3  # concurrent, and never more than the bound


# -- what goes over the wire ------------------------------------------------------------------


def test_chat_request_carries_every_parameter_and_maps_logprobs() -> None:
    reply = chat_reply("Hi", 4, 2)
    reply["choices"][0]["logprobs"] = {"content": [
        {"token": "H", "logprob": -0.1, "top_logprobs": [{"token": "H", "logprob": -0.1},
                                                         {"token": "Y", "logprob": -2.5}]},
        {"token": "i", "logprob": -0.2, "top_logprobs": [{"token": "i", "logprob": -0.2}]},
    ]}
    request = GenerationRequest.user("hello", system="be brief", max_tokens=7, temperature=0.5,
                                     top_p=0.9, stop=["\n"], seed=11, logprobs=2)
    with ScriptedServer([(200, {}, reply)]) as server:
        gen = create_backend(spec(server.url)).generate([request])[0]
    body = server.posts()[0]["body"]
    assert body["messages"] == [{"role": "system", "content": "be brief"},
                                {"role": "user", "content": "hello"}]
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["stop"], body["seed"]) == (
        7, 0.5, 0.9, ["\n"], 11)
    assert body["logprobs"] is True and body["top_logprobs"] == 2
    assert gen.token_logprobs is not None
    assert [(t.token, t.logprob) for t in gen.token_logprobs] == [("H", -0.1), ("i", -0.2)]
    assert gen.token_logprobs[0].top == {"H": -0.1, "Y": -2.5}


def test_base_model_uses_completions_with_the_plain_prompt() -> None:
    reply = {"choices": [{"text": " Paris\n", "finish_reason": "stop", "logprobs": {
        "tokens": [" Paris"], "token_logprobs": [-0.4], "top_logprobs": [{" Paris": -0.4, " Lyon": -3.0}]}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 1}}
    messages = [ChatMessage(role="user", content="Capital of France?")]
    with ScriptedServer([(200, {}, reply)]) as server:
        backend = create_backend(spec(server.url, chat_template=False))
        gen = backend.generate([GenerationRequest(messages=messages, stop=["END"], logprobs=2)])[0]
    post = server.posts()[0]
    assert post["path"] == "/v1/completions"
    assert post["body"]["prompt"] == completion_prompt(messages)
    assert post["body"]["stop"] == ["END", *COMPLETION_STOPS] and post["body"]["logprobs"] == 2
    assert gen.text == "Paris" and gen.usage.prompt_tokens == 12 and gen.usage.completion_tokens == 1
    assert gen.token_logprobs is not None and gen.token_logprobs[0].top == {" Paris": -0.4, " Lyon": -3.0}


# -- a real llama.cpp server ------------------------------------------------------------------


#: Questions SmolLM2-135M answers right at temperature 0 (checked through this server).
FACTS = [
    ("What is the capital of Japan?", "Tokyo"),
    ("What is the capital of England?", "London"),
    ("What is the chemical symbol for water?", "H2O"),
    ("What is the capital of France? Answer in English.", "Paris"),
    ("How many days are in a week?", "7"),
]


@pytest.mark.real
def test_real_batch_answers_in_order_with_token_counts(llama_server: str) -> None:
    backend = create_backend(spec(llama_server, name="smol-remote"))
    with backend:
        results = backend.generate([GenerationRequest.user(q, max_tokens=40) for q, _ in FACTS])
    assert len(results) == len(FACTS)
    for (question, expected), gen in zip(FACTS, results, strict=True):
        assert gen.ok, gen.error
        assert expected in gen.text, (question, gen.text)
        assert gen.usage.prompt_tokens > 0 and gen.usage.completion_tokens > 0
        assert gen.finish_reason == "stop" and gen.model == "smol-remote"
    assert backend.retries == 0  # type: ignore[attr-defined]


@pytest.mark.real
def test_real_logprobs(llama_server: str) -> None:
    backend = create_backend(spec(llama_server))
    gen = backend.generate([GenerationRequest.user("What is the capital of Japan?", max_tokens=6, logprobs=3)])[0]
    assert gen.ok, gen.error
    assert gen.token_logprobs is not None and len(gen.token_logprobs) == gen.usage.completion_tokens == 6
    assert "".join(t.token for t in gen.token_logprobs).strip() == gen.text
    for item in gen.token_logprobs:
        assert item.logprob <= 0 and 1 <= len(item.top) <= 3
        assert item.top[item.token] == pytest.approx(item.logprob)  # greedy: the chosen one is the best
        assert max(item.top.values()) == pytest.approx(item.logprob)


@pytest.mark.real
def test_real_completions_path(llama_server: str) -> None:
    backend = create_backend(spec(llama_server, chat_template=False))
    question = "The capital of France is Paris. What is the capital of France?"
    gen = backend.generate([GenerationRequest.user(question, max_tokens=8)])[0]
    assert gen.ok, gen.error
    assert "Paris" in gen.text and gen.usage.prompt_tokens > 0 and gen.usage.completion_tokens > 0


# -- the CLI --------------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS and not k.startswith("SYMOE_")}
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.real
def test_cli_ask_with_an_openai_expert_from_a_config_file(llama_server: str, tmp_path: Path) -> None:
    config = tmp_path / "symoe.yaml"
    config.write_text(f"experts:\n  remote-smol:\n    backend: openai\n    base_url: {llama_server}\n")
    result = run_cli("ask", "--config", str(config), "--model", "remote-smol", "--max-tokens", "40",
                     "What is the capital of France? Answer in English.")
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout


def test_cli_unreachable_endpoint_is_one_error_line(closed_port: int, tmp_path: Path) -> None:
    config = tmp_path / "symoe.yaml"
    config.write_text(
        "experts:\n  remote:\n    backend: openai\n"
        f"    base_url: http://127.0.0.1:{closed_port}/v1\n"
        "    max_retries: 1\n    params: {backoff_s: 0.01}\n"
    )
    result = run_cli("ask", "--config", str(config), "--model", "remote", "What is 2+2?")
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert f"127.0.0.1:{closed_port}" in lines[0] and "Traceback" not in result.stderr
    assert result.stdout == ""
