"""The ``symoe`` command as a user runs it (a subprocess of the installed console script).

Bad input must give exactly one line on stderr, starting with ``error:``, exit status 2 and
no traceback. The ``real`` tests answer with the prepared default pool, offline.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from orchestrator.config import default_pool

Cli = Callable[..., subprocess.CompletedProcess[str]]


def _one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def corrupt_setup(tmp_path: Path, home: Path) -> tuple[Path, Path]:
    """A config adding expert ``mine``: a damaged copy of SmolLM2 checked against its real hash."""
    smol = default_pool()["smollm2-135m"]
    original = smol.model_file(home)
    assert original is not None and original.exists()
    copy = tmp_path / "mine.gguf"
    shutil.copyfile(original, copy)
    with open(copy, "r+b") as handle:
        handle.seek(1 << 20)
        handle.write(b"\xff" * 64)
    config = tmp_path / "symoe.yaml"
    config.write_text(yaml.safe_dump({"experts": {"mine": {
        "path": str(copy), "source": smol.source.model_dump(mode="json")}}}))  # type: ignore[union-attr]
    return config, copy


# ------------------------------------------------------------------ answers


@pytest.mark.real
@pytest.mark.face  # the ask face in `make test`: one routed question on the default pool
def test_ask_answers_paris_offline(symoe_cli: Cli) -> None:
    proc = symoe_cli("ask", "What is the capital of France?")
    assert proc.returncode == 0, proc.stderr
    assert "Paris" in proc.stdout
    assert "Traceback" not in proc.stderr


@pytest.mark.real
def test_ask_quality_zero_and_one_turn_the_knob_on_real_models(symoe_cli: Cli) -> None:
    """The cost/quality knob on the shipped profile: at 0 the cheapest expert answers alone, at
    1 the cluster's most accurate option; no annotation either way."""
    question = "What is the capital of France?\nA. Berlin\nB. Madrid\nC. Paris\nD. Rome"
    cheap = json.loads(symoe_cli("ask", "--quality", "0", "--json", question).stdout)
    assert cheap["method"] == "budget:0" and cheap["routed"] is True
    (alone,) = cheap["expert_answers"]
    assert alone["expert"].endswith("-direct")  # the cheapest method (ties between the models go by cluster)
    assert "quality 0 (named)" in cheap["routing"] and not any(s["step"] == "annotate" for s in cheap["steps"])
    best = json.loads(symoe_cli("ask", "--quality", "1", "--json", question).stdout)
    assert best["answer"] == "C" and len(best["expert_answers"]) >= 1
    assert best["usage"]["prompt_tokens"] + best["usage"]["completion_tokens"] > \
        cheap["usage"]["prompt_tokens"] + cheap["usage"]["completion_tokens"]


@pytest.mark.real
def test_ask_json_record_from_stdin(symoe_cli: Cli) -> None:
    proc = symoe_cli("ask", "--model", "qwen-coder-0.5b", "--json", "--max-tokens", "32", "-",
                     input="What is the capital of France?\n")
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["question"] == "What is the capital of France?"
    assert "paris" in record["answer"].lower()
    assert record["routed"] is False and record["method"] == "single:qwen-coder-0.5b"
    (expert,) = record["expert_answers"]
    assert expert["expert"] == "qwen-coder-0.5b"
    assert record["usage"]["prompt_tokens"] > 5 and 0 < record["usage"]["completion_tokens"] <= 32
    assert record["seconds"] > 0 and expert["generation"]["usage"]["seconds"] > 0


@pytest.mark.real
def test_ask_json_reports_every_steps_real_cost_annotation_included(symoe_cli: Cli) -> None:
    """A skill-routed ask (``--router symoe``: the LLM names the skills; the default router,
    chosen by replay, makes no LLM call) on a question no cache holds: the annotation's five
    samples are counted."""
    nonce = uuid.uuid4().hex[:8]
    proc = symoe_cli("ask", "--json", "--router", "symoe", "--retrieval", "never",
                     f"What is 17 * 23? (request {nonce})")
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    steps = {s["step"]: s for s in record["steps"]}
    annotate = steps["annotate"]
    assert not annotate["cached"] and annotate["usage"]["completion_tokens"] > 5
    assert annotate["usage"]["prompt_tokens"] > 5 * 20 and annotate["usage"]["seconds"] > 0
    experts = [s for name, s in steps.items() if name.startswith("expert:")]
    assert experts and all(s["usage"]["completion_tokens"] > 0 and s["usage"]["seconds"] > 0 for s in experts)
    for key in ("prompt_tokens", "completion_tokens"):
        assert record["usage"][key] == sum(s["usage"][key] for s in record["steps"])
    # The nonce makes the prompt new, so the small model's arithmetic may slip (491 was seen in CI): the
    # answer must be the number extracted from the text, not necessarily the right one.
    assert re.fullmatch(r"-?\d+", record["answer"]) and record["answer"] in record["text"], record
    assert record["recruitment"]["k"] >= 1


def test_models_list_shows_the_four_experts_ready(symoe_cli: Cli) -> None:
    proc = symoe_cli("models", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert list(rows) == ["qwen-coder-1.5b", "qwen-coder-0.5b", "smollm2-135m", "gemma3-270m"]  # models only
    assert rows["qwen-coder-1.5b"]["experts"] == ["qwen-1.5b-direct", "qwen-1.5b-cot", "qwen-1.5b-program"]
    assert rows["smollm2-135m"]["experts"] == []  # not routed by default
    assert {r["status"] for r in rows.values()} == {"ready"}, rows
    assert rows["qwen-coder-1.5b"]["default"] and rows["qwen-coder-1.5b"]["size_mb"] == 1117
    table = symoe_cli("models", "list")
    assert table.returncode == 0 and table.stdout.count("ready") >= 4 and "gemma3-270m" in table.stdout


def test_config_show_prints_the_effective_config(symoe_cli: Cli, tmp_path: Path) -> None:
    config = tmp_path / "symoe.toml"
    config.write_text('seed = 3\n[experts.my-7b]\npath = "/models/my-7b.gguf"\n')
    proc = symoe_cli("config", "show", "--config", str(config), env={"SYMOE_RECRUIT__K": "2"})
    assert proc.returncode == 0, proc.stderr
    shown = yaml.safe_load(proc.stdout)
    assert shown["seed"] == 3 and shown["recruit"]["k"] == 2
    assert list(shown["experts"])[:4] == ["qwen-coder-1.5b", "qwen-coder-0.5b", "smollm2-135m", "gemma3-270m"]
    assert list(shown["experts"])[-1] == "my-7b" and shown["experts"]["qwen-1.5b-program"]["method"] == "program"
    assert shown["experts"]["my-7b"]["backend"] == "llamacpp"


def test_models_prepare_and_corrupt_status(symoe_cli: Cli, corrupt_setup: tuple[Path, Path], home: Path) -> None:
    config, copy = corrupt_setup
    env = {"SYMOE_HOME": str(home)}
    listed = symoe_cli("models", "list", "--json", "--config", str(config), env=env)
    assert {r["name"]: r["status"] for r in json.loads(listed.stdout)}["mine"] == "unverified"
    proc = symoe_cli("models", "prepare", "mine", "--config", str(config), env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("error: ")
    assert "corrupt" in proc.stderr
    listed = symoe_cli("models", "list", "--json", "--config", str(config), env=env)
    assert {r["name"]: r["status"] for r in json.loads(listed.stdout)}["mine"] == "corrupt"
    # an undamaged copy under the same config verifies
    shutil.copyfile(default_pool()["smollm2-135m"].model_file(home), copy)  # type: ignore[arg-type]
    proc = symoe_cli("models", "prepare", "mine", "--config", str(config), env=env)
    assert proc.returncode == 0, proc.stderr
    listed = symoe_cli("models", "list", "--json", "--config", str(config), env=env)
    assert {r["name"]: r["status"] for r in json.loads(listed.stdout)}["mine"] == "ready"


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("question", ["", "   ", "-"])
def test_empty_question(symoe_cli: Cli, question: str) -> None:
    line = _one_error_line(symoe_cli("ask", question, input="\n"))
    assert "question is empty" in line


def test_unknown_model(symoe_cli: Cli) -> None:
    line = _one_error_line(symoe_cli("ask", "--model", "gpt-17", "What is 2+2?"))
    assert "unknown expert 'gpt-17'" in line and "qwen-coder-1.5b" in line


def test_corrupt_model_file(symoe_cli: Cli, corrupt_setup: tuple[Path, Path], home: Path) -> None:
    config, copy = corrupt_setup
    proc = symoe_cli("ask", "--config", str(config), "--model", "mine", "What is 2+2?", env={"SYMOE_HOME": str(home)})
    line = _one_error_line(proc)
    assert "corrupt" in line and str(copy) in line


def test_missing_model_file(symoe_cli: Cli, tmp_path: Path, home: Path) -> None:
    config = tmp_path / "symoe.yaml"
    config.write_text(f"experts:\n  gone:\n    path: {tmp_path / 'gone.gguf'}\n")
    line = _one_error_line(symoe_cli("ask", "-c", str(config), "-m", "gone", "What is 2+2?",
                                     env={"SYMOE_HOME": str(home)}))
    assert "gone.gguf" in line and "does not exist" in line


@pytest.mark.parametrize(("name", "text", "expected"), [
    ("bad.yaml", "experts:\n  my-7b:\n    path: [unclosed\n", "not valid yaml"),
    ("bad.toml", "[recruit\nk = 2\n", "not valid toml"),
    ("extra.yaml", "routr:\n  k: 2\n", "routr"),
])
def test_malformed_config_file(symoe_cli: Cli, tmp_path: Path, name: str, text: str, expected: str) -> None:
    config = tmp_path / name
    config.write_text(text)
    for args in (("config", "show", "--config", str(config)), ("ask", "-c", str(config), "What is 2+2?")):
        line = _one_error_line(symoe_cli(*args))
        assert expected in line.lower() and name in line


def test_missing_config_file(symoe_cli: Cli, tmp_path: Path) -> None:
    line = _one_error_line(symoe_cli("config", "show", "--config", str(tmp_path / "nope.yaml")))
    assert "cannot read config file" in line and "nope.yaml" in line
    line = _one_error_line(symoe_cli("models", "list", env={"SYMOE_CONFIG": str(tmp_path / "nope.toml")}))
    assert "nope.toml" in line


def test_bad_environment_variable(symoe_cli: Cli) -> None:
    line = _one_error_line(symoe_cli("config", "show", env={"SYMOE_RECRUIT__K": "many"}))
    assert "recruit.k" in line


def test_ask_no_cache_generates_now_and_keeps_nothing(symoe_cli: Cli, tmp_path: Path) -> None:
    """``--no-cache``: the answer is made now and the generation cache is neither read nor written."""
    config = tmp_path / "c.yaml"
    config.write_text("replace_pool: true\ndefault_expert: a\n"
                      "experts:\n  a: {backend: fake, params: {default: 'Answer: 4'}}\n")
    cache = tmp_path / "cache" / "generations.sqlite"
    env = {"SYMOE_HOME": str(tmp_path)}
    proc = symoe_cli("ask", "--model", "a", "--no-cache", "What is 2 + 2?", "-c", str(config), env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "4" and not cache.exists()
    proc = symoe_cli("ask", "--model", "a", "What is 2 + 2?", "-c", str(config), env=env)
    assert proc.returncode == 0 and cache.exists()  # the default keeps it
