"""Bad input at the edge: every case is a real ``symoe`` subprocess that must answer with
exit status 2, exactly one stderr line starting with ``error:`` that names the problem (and,
for a value, the allowed range), and no traceback.

Every input here is refused before any model loads: the commands run with a one-expert pool
whose model file does not exist and an empty ``SYMOE_HOME``, so even a check that went
missing could not load a real model (it would fail on the missing file, with another message).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from orchestrator.config import load_config
from orchestrator.provenance import pool_digest

ROOT = Path(__file__).resolve().parents[1]
SYMOE = [sys.executable, "-m", "orchestrator.cli"]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def fake_pool(tmp_path: Path) -> Path:
    """A config whose only expert's model file does not exist: nothing can load a real model."""
    path = tmp_path / "fake.yaml"
    path.write_text(yaml.safe_dump({"replace_pool": True, "default_expert": "fake",
                                    "experts": {"fake": {"path": str(tmp_path / "missing" / "fake.gguf")}}}))
    return path


def run(home: Path, *args: str | bytes, input: bytes | None = None,
        env: dict[str, str | bytes] | None = None) -> subprocess.CompletedProcess[bytes]:
    """``symoe ARGS`` with only the SYMOE_* variables given (a clean environment otherwise)."""
    base = {k: v for k, v in os.environ.items() if not k.upper().startswith("SYMOE_")}
    full = {**base, "SYMOE_HOME": str(home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env or {})}
    return subprocess.run([*SYMOE, *args], input=input if input is not None else b"", capture_output=True,
                          env=full, cwd=ROOT, timeout=120)


def one_error(proc: subprocess.CompletedProcess[bytes], *expected: str) -> str:
    """The one ``error:`` line of a refused command; it holds every ``expected`` text."""
    stdout, stderr = (proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace"))
    assert "Traceback" not in stdout + stderr, stderr[-3000:]
    assert proc.returncode == 2, (proc.returncode, stderr[-3000:])
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-3000:]
    for text in expected:
        assert text in lines[0], (text, lines[0])
    return lines[0]


# ---------------------------------------------------------------- input that is not UTF-8


def test_stdin_that_is_not_utf8(home: Path, fake_pool: Path) -> None:
    proc = run(home, "ask", "-c", str(fake_pool), "-", input=b"What is\n2 + \xff\xfe 2?\n")
    one_error(proc, "standard input is not valid UTF-8", "line 2", "byte 12")


def test_argument_that_is_not_utf8(home: Path, fake_pool: Path) -> None:
    proc = run(home, "ask", "-c", str(fake_pool), b"caf\xe9 question")
    one_error(proc, "argument 4", "is not valid UTF-8", "byte 3")


def test_environment_variable_that_is_not_utf8(home: Path) -> None:
    one_error(run(home, "config", "show", env={"SYMOE_DEFAULT_EXPERT": b"qwen\xff"}),
              "environment variable SYMOE_DEFAULT_EXPERT is not valid UTF-8", "byte 4")


@pytest.mark.parametrize(("name", "content", "line", "byte"), [
    ("bad.yaml", b"seed: 1\nrecruit:\n  k: 2 # \xff\n", 3, 26),
    ("bad.toml", b"seed = 1\n[recruit]\nk = 2 # \xe9\n", 3, 27),
])
def test_config_file_that_is_not_utf8(home: Path, tmp_path: Path, name: str, content: bytes, line: int,
                                      byte: int) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    one_error(run(home, "config", "show", "-c", str(path)),
              f"config file {path} is not valid UTF-8", f"line {line}", f"byte {byte}")


def test_task_file_that_is_not_utf8(home: Path, tmp_path: Path, fake_pool: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    good = json.dumps({"id": "q1", "question": "2+2?", "answer": "4"}).encode()
    path.write_bytes(good + b"\n" + b'{"id": "q2", "question": "caf\xe9?", "answer": "4"}\n')
    proc = run(home, "eval", "-c", str(fake_pool), "--tasks", str(path), "--routers", "single",
               "-o", str(tmp_path / "out"))
    one_error(proc, f"{path}:2: not valid UTF-8", "byte 29 of the line")


# ---------------------------------------------------------------- values nobody checked


@pytest.mark.parametrize("k", ["0", "-1", "1000"])
def test_k_out_of_range(home: Path, fake_pool: Path, k: str) -> None:
    one_error(run(home, "ask", "-c", str(fake_pool), "-k", k, "What is 2+2?"), "-k must be from 1 to 16", k)


@pytest.mark.parametrize("value", ["0", "9000"])
def test_max_tokens_out_of_range(home: Path, fake_pool: Path, value: str) -> None:
    one_error(run(home, "ask", "-c", str(fake_pool), "--max-tokens", value, "What is 2+2?"),
              "--max-tokens must be from 1 to 8192", value)


def test_unknown_skill_source(home: Path, fake_pool: Path) -> None:
    one_error(run(home, "ask", "-c", str(fake_pool), "--skills", "neighbors", "What is 2+2?"),
              "--skills must be llm, neighbours or hybrid, not 'neighbors'")


def test_seed_out_of_range(home: Path, fake_pool: Path) -> None:
    one_error(run(home, "ask", "-c", str(fake_pool), "--seed", "-1", "What is 2+2?"),
              "--seed must be from 0 to 2147483647")


def test_router_temperature_zero(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "cold.yaml"
    path.write_text("recruit:\n  temperature: 0\n")
    one_error(run(home, "config", "show", "-c", str(path)),
              "recruit.temperature", "allowed: more than 0 and at most 10", str(path))


def test_router_min_k_above_max_k(home: Path) -> None:
    one_error(run(home, "config", "show", env={"SYMOE_RECRUIT__MIN_K": "4", "SYMOE_RECRUIT__MAX_K": "2"}),
              "recruit", "min_k (4) must not exceed max_k (2)")


def test_more_than_26_choices(home: Path, tmp_path: Path, fake_pool: Path) -> None:
    path = tmp_path / "wide.jsonl"
    path.write_text(json.dumps({"id": "w1", "question": "Pick one.", "choices": [f"c{i}" for i in range(27)],
                                "answer": "A"}) + "\n")
    proc = run(home, "eval", "-c", str(fake_pool), "--tasks", str(path), "--routers", "single",
               "-o", str(tmp_path / "out"))
    one_error(proc, f"{path}:1: field 'choices'", "27 choices; at most 26 (A-Z)")


@pytest.mark.parametrize(("option", "value", "expected"), [
    ("--memory-budget-gb", "-1", "--memory-budget-gb must be from 0.1 to 65536 (GB)"),
    ("--memory-budget-gb", "nan", "--memory-budget-gb must be from 0.1 to 65536 (GB)"),
    ("--limit", "0", "--limit must be from 1 to 100000"),
])
def test_eval_option_out_of_range(home: Path, tmp_path: Path, fake_pool: Path, option: str, value: str,
                                  expected: str) -> None:
    proc = run(home, "eval", "-c", str(fake_pool), "--routers", "single", option, value, "-o", str(tmp_path / "out"))
    one_error(proc, expected)


@pytest.mark.parametrize(("sweep", "expected"), [
    ("budget.quality", ("is not KEY=V1,V2",)),
    ("budget.quality=", ("is not KEY=V1,V2",)),
    ("budget.quality=0,2", ("budget.quality=2", "allowed: from 0 to 1")),
    ("recruit.k=2", ("no router given reads 'recruit.k'", "read by:")),
    ("budget.quality=0[1]", ("may not hold",)),
    ("budget.quality=" + ",".join(f"{i / 100:g}" for i in range(65)), ("make 65 settings of a router", "at most 64")),
])
def test_eval_sweep_that_cannot_run(home: Path, tmp_path: Path, fake_pool: Path, sweep: str,
                                    expected: tuple[str, ...]) -> None:
    proc = run(home, "eval", "-c", str(fake_pool), "--routers", "budget", "--sweep", sweep, "-o", str(tmp_path / "o"))
    one_error(proc, *expected)


@pytest.mark.parametrize(("quality", "expected"), [("1.5", "--quality must be from 0 to 1"),
                                                   ("nan", "--quality must be from 0 to 1")])
def test_quality_out_of_range(home: Path, fake_pool: Path, quality: str, expected: str) -> None:
    one_error(run(home, "ask", "-c", str(fake_pool), "--quality", quality, "What is 2+2?"), expected)


def test_quality_with_another_method(home: Path, fake_pool: Path) -> None:
    proc = run(home, "ask", "-c", str(fake_pool), "--quality", "0.5", "--router", "symoe", "What is 2+2?")
    one_error(proc, "give one of router, model, k and quality")


@pytest.mark.parametrize(("args", "expected"), [
    (("--target-tokens-per-question", "0"), "--target-tokens-per-question must be from 1 to"),
    (("--target-tokens-per-question", "200", "--folds", "1"), "--folds must be from 2 to 50"),
])
def test_calibrate_option_out_of_range(home: Path, args: tuple[str, ...], expected: str) -> None:
    one_error(run(home, "profile", "calibrate", *args), expected)


@pytest.mark.parametrize("splits", ["valid", "validation:0", "test,test:5", ""])
def test_matrix_build_splits_it_cannot_build(home: Path, tmp_path: Path, fake_pool: Path, splits: str) -> None:
    proc = run(home, "matrix", "build", "-c", str(fake_pool), "--splits", splits, "-o", str(tmp_path / "m.jsonl"))
    one_error(proc, f"--splits {splits!r}", "validation:100,test:67")


def test_task_with_zero_questions(home: Path, tmp_path: Path, fake_pool: Path) -> None:
    proc = run(home, "eval", "-c", str(fake_pool), "--tasks", "mmlu:0", "--routers", "single",
               "-o", str(tmp_path / "out"))
    one_error(proc, "task 'mmlu:0' asks for 0 questions", "at least 1")


def test_empty_task_file(home: Path, tmp_path: Path, fake_pool: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    out = tmp_path / "out"
    proc = run(home, "eval", "-c", str(fake_pool), "--tasks", str(path), "--routers", "single", "-o", str(out))
    one_error(proc, str(path), "has no questions in the test split")
    assert not out.exists()  # refused before anything was written


@pytest.mark.parametrize(("text", "where"), [
    ("recruit:\n  bogus: 1\n", "recruit.bogus"),
    ("embedding:\n  pakage: x\n", "embedding.pakage"),
])
def test_unknown_nested_config_key(home: Path, tmp_path: Path, text: str, where: str) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text(text)
    one_error(run(home, "config", "show", "-c", str(path)), where, "Extra inputs are not permitted")


def test_unknown_nested_key_in_the_environment(home: Path) -> None:
    one_error(run(home, "config", "show", env={"SYMOE_RECRUIT__BOGUS": "1"}), "recruit.bogus", "SYMOE_")


@pytest.mark.parametrize("value", ["{bad", "not json"])
def test_malformed_json_section_variable(home: Path, value: str) -> None:
    one_error(run(home, "config", "show", env={"SYMOE_RECRUIT": value}),
              "environment variable SYMOE_RECRUIT is not a valid JSON object", "SYMOE_RECRUIT__K=2")


def test_json_section_variable_of_the_wrong_kind(home: Path) -> None:
    one_error(run(home, "config", "show", env={"SYMOE_RECRUIT": "[1, 2]"}), "recruit", "valid dictionary")


def test_home_that_is_not_a_directory(fake_pool: Path) -> None:
    one_error(run(Path("/dev/null"), "config", "show"), "home: /dev/null is not a directory", "SYMOE_HOME")
    one_error(run(Path("/dev/null/symoe"), "ask", "-c", str(fake_pool), "-k", "2", "What is 2+2?"),
              "home: /dev/null/symoe: /dev/null is not a directory", "SYMOE_HOME")


def test_empty_home_is_the_default(tmp_path: Path) -> None:
    """``SYMOE_HOME=`` (empty) is the same as unset: the XDG cache folder, no error."""
    proc = run(tmp_path, "config", "show", env={"SYMOE_HOME": "", "XDG_CACHE_HOME": str(tmp_path / "xdg")})
    assert proc.returncode == 0, proc.stderr.decode()
    assert yaml.safe_load(proc.stdout)["home"] == str(tmp_path / "xdg" / "symoe")


def test_profile_with_no_experts(home: Path, tmp_path: Path, fake_pool: Path) -> None:
    """Refused when the profile is read (before annotation), not by a traceback after it."""
    profile = tmp_path / "empty-profile.json"
    profile.write_text(json.dumps({"format": "symoe-profile", "version": 1, "annotator": "fake",
                                   "pool": pool_digest(load_config(fake_pool)), "experts": {}}))
    for method in ("symoe", "majority"):
        proc = run(home, "ask", "-c", str(fake_pool), "-p", str(profile), "--router", method, "What is 2+2?")
        one_error(proc, f"profile file {profile} profiles no experts", "symoe profile build")
