"""Every file in examples/ runs: the Python API, the config with a local GGUF and an
OpenAI-compatible expert, a custom backend and a custom method (real models where they ask)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from orchestrator.config import load_config

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def run_example(name: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_config_example_adds_a_local_and_a_server_expert() -> None:
    config = load_config(EXAMPLES / "config.yaml")
    assert list(config.experts)[:4] == ["qwen-coder-1.5b", "qwen-coder-0.5b", "smollm2-135m", "gemma3-270m"]
    assert config.experts["my-local"].backend == "llamacpp" and config.experts["my-local"].n_ctx == 4096
    server = config.experts["my-server"]
    assert server.backend == "openai" and server.base_url == "http://127.0.0.1:8080/v1" and server.model == "my-model"
    cot = config.experts["my-local-cot"]
    assert cot.method == "cot" and cot.load_as == "my-local" and cot.n_ctx == 4096


def test_custom_backend_example(tmp_path: Path) -> None:
    out = run_example("custom_backend.py", tmp_path, env={"SYMOE_HOME": str(tmp_path / "home")})
    assert "calculator: 7006652" in out
    assert "calculator on words: I do not know" in out


@pytest.mark.real
def test_config_example_experts_answer(llama_server: str, tmp_path: Path, symoe_cli) -> None:
    """The example's two experts, pointed at a real GGUF file and a real llama.cpp server."""
    data = yaml.safe_load((EXAMPLES / "config.yaml").read_text())
    smol = load_config().expert("smollm2-135m").model_file(load_config().home)
    data["experts"]["my-local"]["path"] = str(smol)
    data["experts"]["my-server"]["base_url"] = llama_server
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(data))
    for expert in ("my-local", "my-server"):
        proc = symoe_cli("ask", "-c", str(config), "--model", expert, "What is the capital of Japan?")
        assert proc.returncode == 0, proc.stderr
        assert "Tokyo" in proc.stdout, (expert, proc.stdout)


@pytest.mark.real
def test_ask_example(tmp_path: Path) -> None:
    out = run_example("ask.py", tmp_path)
    lines = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    assert lines["answer"].strip() == "391"
    assert lines["single expert"].strip() == "single:qwen-coder-1.5b -> B"
    assert "Paris" in lines["batch"] and "42" in lines["batch"]
    assert "annotate" in lines["tokens"]


@pytest.mark.real
def test_custom_method_example(tmp_path: Path) -> None:
    out = run_example("custom_method.py", tmp_path)
    assert "cheap_pair:" in out and "experts: smollm2-135m, gemma3-270m" in out.replace("gemma3-270m, smollm2-135m",
                                                                                     "smollm2-135m, gemma3-270m")
    assert "cheap_pair: " in out and "% on 6 questions" in out
    assert (tmp_path / "runs" / "example-cheap-pair" / "generations.sqlite").exists()


@pytest.mark.real
def test_langgraph_agent_example_on_the_chat_model(tmp_path: Path) -> None:
    out = run_example("agent.py", tmp_path)
    lines = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    assert lines["answer"].strip() == "391", out
    assert "qwen-1.5b-" in lines["experts"] and lines["check"].split("|")[0].strip() in ("yes", "no")


@pytest.mark.real
def test_chat_model_sync_async_stream_with_the_routing_record() -> None:
    import asyncio

    from orchestrator.chat_model import SymoeChatModel

    llm = SymoeChatModel()
    try:
        reply = llm.invoke("What is 17 * 23?")
        record = reply.response_metadata["symoe"]
        assert "391" in str(reply.content) and record["answer"] == "391" and record["experts"]
        assert reply.usage_metadata and reply.usage_metadata["output_tokens"] > 0
        later = asyncio.run(llm.ainvoke("What is 17 * 23?"))
        assert later.response_metadata["symoe"]["answer"] == "391"
        chunks = list(llm.stream("What is the capital of France?"))
        assert "Paris" in "".join(str(c.content) for c in chunks)
        assert chunks[-1].response_metadata["symoe"]["experts"]
    finally:
        llm.close()
