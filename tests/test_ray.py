"""The Ray executor: the same ``symoe eval`` with ``--executor local`` and ``--executor ray``
(a local 2-CPU Ray cluster, one actor per model) gives identical answers; a SIGKILLed actor
is replaced and the run finishes with the same results, no finished generation redone; no
Ray or an unreachable cluster is one line and exit 2."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import free_port, one_error_line, spawn
from test_eval_resume import stored

from eval.datasets import load_split
from orchestrator.config import load_config
from orchestrator.profiles import ExpertProfile, Profile, SkillCount, save_profile
from orchestrator.provenance import pool_digest

SYMOE = [sys.executable, "-m", "orchestrator.cli"]


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two small real experts (SmolLM2, Gemma base) with a profile, and 12 ARC test questions."""
    root = tmp_path_factory.mktemp("ray")
    task = root / "arc12.jsonl"
    task.write_text("".join(q.model_dump_json() + "\n" for q in load_split("arc_challenge", "test", limit=12, seed=1)))
    config = root / "config.yaml"
    config.write_text("default_expert: smollm2-135m\nexperts:\n  qwen-coder-1.5b: null\n  qwen-coder-0.5b: null\n"
                      "  smollm2-135m: {routed: true}\n  gemma3-270m: {routed: true}\n"
                      f"recruit:\n  profile: {root / 'profile.json'}\nretrieval:\n  mode: never\n")
    counts = {"smollm2-135m": SkillCount(right=6, wrong=4), "gemma3-270m": SkillCount(right=5, wrong=5)}
    save_profile(Profile(pool=pool_digest(load_config(config)), annotator="smollm2-135m",
                         experts={n: ExpertProfile(skills={"science reasoning": c}, tasks={"arc_challenge": c})
                                  for n, c in counts.items()},
                         aggregators={n: ExpertProfile(tasks={"arc_challenge": c}) for n, c in counts.items()}),
                 root / "profile.json")
    return config, task


def eval_args(config: Path, task: Path, out: Path, *extra: str) -> list[str]:
    return [*SYMOE, "eval", "-c", str(config), "--tasks", str(task), "--routers", "single,symoe:k2-distinct",
            "--output", str(out), "--log-samples", *extra]


def answers(out: Path) -> dict[tuple[str, str], str | None]:
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    return {(r["method"], r["question_id"]): r["answer"] for r in rows}


def test_without_ray_the_executor_says_what_to_install(small, tmp_path: Path) -> None:
    config, task = small
    shadow = tmp_path / "shadow" / "ray"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError(\"No module named 'ray'\")\n")
    env = {**os.environ, "PYTHONPATH": f"{shadow.parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(eval_args(config, task, tmp_path / "out", "--executor", "ray"), capture_output=True,
                          text=True, env=env, timeout=300)
    assert "pip install 'symoe[ray]'" in one_error_line(proc)


def test_an_unreachable_cluster_is_one_line(small, tmp_path: Path) -> None:
    config, task = small
    port = free_port()
    start = time.monotonic()
    proc = subprocess.run(eval_args(config, task, tmp_path / "out", "--executor", "ray", "--ray-address",
                                    f"127.0.0.1:{port}"), capture_output=True, text=True, timeout=300)
    line = one_error_line(proc)
    assert f"127.0.0.1:{port}" in line and "ray start --head" in line and time.monotonic() - start < 120


@pytest.mark.real
@pytest.mark.face
def test_a_ray_run_answers_as_the_local_executor(small, tmp_path: Path) -> None:
    """Ray's face in ``make test``: one ``symoe eval --executor ray`` (one actor, the smallest
    model, 2 questions) gives the local executor's answers and loads its model once."""
    config, task = small
    two = tmp_path / "arc2.jsonl"
    two.write_text("".join(task.read_text().splitlines(keepends=True)[:2]))
    runs = {}
    for executor in ("local", "ray"):
        out = tmp_path / executor
        proc = subprocess.run([*SYMOE, "eval", "-c", str(config), "--tasks", str(two), "--routers",
                               "single:smollm2-135m", "--output", str(out), "--log-samples", "--executor", executor],
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[executor] = out
    assert answers(runs["ray"]) == answers(runs["local"]) and len(answers(runs["ray"])) == 2
    stats = json.loads((runs["ray"] / "results.json").read_text())["stats"]
    assert stats["loads"] == ["smollm2-135m"] and stats["generated"] == stats["generations_needed"] == 2, stats


@pytest.fixture(scope="module")
def local_run(small, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: the same eval with the local executor (run once for both Ray tests)."""
    config, task = small
    out = tmp_path_factory.mktemp("local") / "out"
    proc = subprocess.run(eval_args(config, task, out, "--executor", "local"), capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def actor_pids() -> list[int]:
    found = subprocess.run(["pgrep", "-f", "ray::ModelActor"], capture_output=True, text=True).stdout.split()
    return [int(p) for p in found]


@pytest.mark.real
def test_a_killed_actor_is_replaced_and_the_answers_are_the_local_executors(small, local_run: Path,
                                                                           tmp_path: Path) -> None:
    """One Ray run (a SIGKILLed actor part-way) against the local executor's: the same answers,
    one load per actor, no finished generation redone (one run, not two: each is minutes)."""
    config, task = small
    needed = json.loads((local_run / "results.json").read_text())["stats"]["generations_needed"]
    out = tmp_path / "killed"
    proc = spawn(eval_args(config, task, out, "--executor", "ray"), tmp_path / "killed.log")
    deadline = time.time() + 600
    while (stored(out) < needed // 3 or not actor_pids()) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert proc.poll() is None, "the run finished before an actor could be killed"
    os.kill(actor_pids()[0], signal.SIGKILL)
    assert proc.finish(timeout=900) == 0, proc.output()[-3000:]
    stats = json.loads((out / "results.json").read_text())["stats"]
    assert stats["generated"] == needed, "a finished generation was computed twice, or one was lost"
    assert answers(out) == answers(local_run)  # the same answers as the local executor's
    # one load per actor: each model once, plus the killed actor's replacement if it had work
    loads = stats["loads"]
    assert sorted(set(loads)) == ["gemma3-270m", "smollm2-135m"] and len(loads) <= 3, loads
