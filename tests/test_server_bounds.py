"""``symoe serve`` refuses what the OpenAI API refuses, before any work: sampling parameters
outside the API's ranges, ``n`` other than 1, ``max_tokens`` < 1, a ``tool`` message without
``tool_call_id``, an ``assistant`` message with neither content nor tool_calls, unknown roles:
each a 400 in OpenAI's error shape naming the field (``param``). And ``symoe serve --host
0.0.0.0`` with the key in ``SYMOE_API_KEY`` requires it and does not warn that there is none.
Scripted (fake) experts, in process: no model loads."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from test_server import make_config
from typer.testing import CliRunner

from orchestrator.server.app import create_app
from orchestrator.server.service import Service

USER = [{"role": "user", "content": "What is 17 * 23?"}]


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[TestClient, list[Any]]]:
    """The app on fake experts, and the list of requests that reached ``Service.answer``."""
    service = Service(make_config(tmp_path))
    answered: list[Any] = []
    real = service.answer

    def answer(*args: Any, **kwargs: Any) -> Any:
        answered.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(service, "answer", answer)
    try:
        with TestClient(create_app(service), raise_server_exceptions=False) as client:
            yield client, answered
    finally:
        service.close()


BAD = [
    ({"temperature": 5}, "temperature", "less than or equal to 2"),
    ({"temperature": -0.1}, "temperature", "greater than or equal to 0"),
    ({"top_p": 2}, "top_p", "less than or equal to 1"),
    ({"top_p": -1}, "top_p", "greater than or equal to 0"),
    ({"presence_penalty": 2.5}, "presence_penalty", "less than or equal to 2"),
    ({"frequency_penalty": -3}, "frequency_penalty", "greater than or equal to -2"),
    ({"n": 2}, "n", "n > 1"),
    ({"n": 0}, "n", "greater than or equal to 1"),
    ({"max_tokens": 0}, "max_tokens", "greater than or equal to 1"),
    ({"max_completion_tokens": -5}, "max_completion_tokens", "greater than or equal to 1"),
    ({"top_logprobs": 21}, "top_logprobs", "less than or equal to 20"),
    ({"seed": -1}, "seed", "greater than or equal to 0"),
    ({"messages": [*USER, {"role": "tool", "content": "391"}]}, "messages.1.tool_call_id", "tool_call_id"),
    ({"messages": [{"role": "assistant"}, *USER]}, "messages.0.content", "content or tool_calls"),
    ({"messages": [{"role": "assistant", "content": None, "tool_calls": []}, *USER]}, "messages.0.content",
     "content or tool_calls"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role", "Input should be"),
    ({"messages": [{"role": "function", "content": "hi", "name": "f"}]}, "messages.0.role", "Input should be"),
]


@pytest.mark.parametrize(("change", "param", "said"), BAD, ids=[f"{p}:{list(c.values())[0]!r}"[:60] for c, p, _ in BAD])
def test_out_of_bounds_chat_requests_are_400_naming_the_field(api: tuple[TestClient, list[Any]],
                                                              change: dict[str, Any], param: str, said: str) -> None:
    client, answered = api
    reply = client.post("/v1/chat/completions", json={"model": "symoe", "messages": USER, **change})
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] == param, error
    assert said in error["message"] and error["message"].startswith(param), error
    assert error["code"], error
    assert answered == []  # refused before any work


def test_the_out_of_range_value_is_named_and_the_completions_route_is_bounded_too(
        api: tuple[TestClient, list[Any]]) -> None:
    client, answered = api
    error = client.post("/v1/chat/completions", json={"model": "symoe", "messages": USER,
                                                      "temperature": 5}).json()["error"]
    assert error == {"message": "temperature: Input should be less than or equal to 2, not 5",
                     "type": "invalid_request_error", "param": "temperature", "code": "above_max_value"}
    for change, param in (({"top_p": 2}, "top_p"), ({"temperature": -1}, "temperature"), ({"n": 3}, "n")):
        reply = client.post("/v1/completions", json={"model": "symoe", "prompt": "What is 17 * 23?", **change})
        assert reply.status_code == 400 and reply.json()["error"]["param"] == param, reply.text
    assert answered == []


def test_requests_within_the_bounds_are_answered(api: tuple[TestClient, list[Any]]) -> None:
    client, answered = api
    history = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Look it up."},
               {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {
                   "name": "calc", "arguments": "{}"}}]},
               {"role": "tool", "tool_call_id": "c1", "content": "391"}, *USER]
    for extra in ({"temperature": 0, "top_p": 1, "presence_penalty": -2, "frequency_penalty": 2, "n": 1},
                  {"temperature": 2, "top_p": 0, "n": None, "temperature_unknown_field": 1, "seed": 7},
                  {"messages": history}, {"messages": [{"role": "assistant", "content": ""}, *USER]}):
        reply = client.post("/v1/chat/completions", json={"model": "alpha", "messages": USER, **extra})
        assert reply.status_code == 200, (extra, reply.text)
        assert reply.json()["choices"][0]["message"]["content"]
    assert len(answered) == 4


@pytest.fixture
def serving(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[Service]]:
    """A one-fake-expert config file, ``SYMOE_*`` cleared, and ``uvicorn.run`` replaced: each
    ``symoe serve`` returns at once, its ``Service`` kept in the list."""
    from orchestrator.cli import serve as serve_cli

    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump({"home": str(tmp_path / "home"), "replace_pool": True, "default_expert": "fake",
                                    "experts": {"fake": {"backend": "fake"}}}))
    for name in [n for n in os.environ if n.upper().startswith("SYMOE_")]:
        monkeypatch.delenv(name)
    services: list[Service] = []
    real = serve_cli.Service

    def service(*args: Any, **kwargs: Any) -> Service:
        services.append(real(*args, **kwargs))
        return services[-1]

    monkeypatch.setattr(serve_cli, "Service", service)
    monkeypatch.setattr(serve_cli.uvicorn, "run", lambda asgi, **kwargs: None)
    return path, services


def test_serve_takes_the_key_from_SYMOE_API_KEY_without_warning(serving: tuple[Path, list[Service]],  # noqa: N802
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from orchestrator.cli import app
    from orchestrator.cli.serve import serve_command

    path, services = serving
    monkeypatch.setenv("SYMOE_API_KEY", "s3cret")
    serve_command(host="0.0.0.0", port=8123, config=path)  # the key in the environment only
    said = capsys.readouterr().err
    assert "without an API key" not in said and "key required" in said, said
    assert services[-1].api_key == "s3cret"
    args = ["serve", "--host", "0.0.0.0", "--port", "8123", "-c", str(path)]
    for env, key in (({"SYMOE_API_KEY": "s3cret"}, "s3cret"), ({"SYMOE_API_KEY": "env"}, "flag")):
        flag = ["--api-key", "flag"] if key == "flag" else []
        result = CliRunner().invoke(app, [*args, *flag], env=env)
        assert result.exit_code == 0, result.output
        assert "without an API key" not in result.output and "key required" in result.output, result.output
        assert services[-1].api_key == key
    for blank in ("", "   "):
        monkeypatch.setenv("SYMOE_API_KEY", blank)
        serve_command(host="0.0.0.0", port=8123, config=path)
        said = capsys.readouterr().err
        assert "without an API key" in said and "no key" in said, said
        assert services[-1].api_key is None
    for service in services:
        service.close()
