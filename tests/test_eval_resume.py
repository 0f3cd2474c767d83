"""`symoe eval` killed part-way (SIGKILL, a real subprocess) and restarted: the results equal
an uninterrupted run's, and no finished generation is computed again (counted).

Each test runs twice: on two scripted (fake) experts whose every generation takes ``FAKE_DELAY_S``
(the protocol: subprocesses, signals, the cache; in ``make test``), and on the two small real
models (``-m real``: the same protocol with real loads and real generation times)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from conftest import Spawned, spawn

from eval.datasets import load_split
from eval.matrix import read_matrix
from orchestrator.config import load_config
from orchestrator.profiles import ExpertProfile, Profile, SkillCount, save_profile
from orchestrator.provenance import pool_digest

SYMOE = [sys.executable, "-m", "orchestrator.cli"]
#: how long each scripted generation takes: long enough to stop a run part-way, to start a second
#: ``symoe eval`` while the first still runs (tests/test_concurrent_runs.py), short for the suite
FAKE_DELAY_S = 0.25


def fake_experts(questions: list) -> dict:
    """Scripted stand-ins for the two small models, under their names (so the tests' method names
    hold on both): each generation takes ``FAKE_DELAY_S``; SmolLM2 is right on even questions,
    Gemma on multiples of 3, so they disagree on some and moa's aggregator runs."""
    def answers(right: Callable[[int], bool]) -> dict[str, str]:
        return {q.question[:60]: f"Answer: {q.answer if right(i) else ('A' if q.answer != 'A' else 'B')}"
                for i, q in enumerate(questions)}

    def fake(right: Callable[[int], bool]) -> dict:
        return {"backend": "fake", "routed": True,
                "params": {"delay_s": FAKE_DELAY_S, "answers": answers(right), "default": "Answer: A"}}

    return {"smollm2-135m": fake(lambda i: i % 2 == 0), "gemma3-270m": fake(lambda i: i % 3 == 0)}


def write_small_config(path: Path, backend: str, profile_path: Path, questions: list) -> None:
    """Two experts named smollm2-135m and gemma3-270m: the real small models, or scripted ones
    that answer ``questions``."""
    if backend == "real":
        path.write_text(
            "default_expert: smollm2-135m\n"
            "experts:\n  qwen-coder-1.5b: null\n  qwen-coder-0.5b: null\n"
            "  smollm2-135m: {routed: true}\n  gemma3-270m: {routed: true}\n"
            f"recruit:\n  profile: {profile_path}\n")
    else:
        path.write_text(yaml.safe_dump({"replace_pool": True, "default_expert": "smollm2-135m",
                                        "experts": fake_experts(questions),
                                        "recruit": {"profile": str(profile_path)}}, sort_keys=False))


def with_fake_delay(config: Path, seconds: float) -> Path:
    """``config`` with its scripted experts' ``delay_s`` set to ``seconds`` (a copy beside it), for
    a test that needs its runs longer or shorter; the real pool's config comes back as it is."""
    data = yaml.safe_load(config.read_text())
    if not data.get("replace_pool"):
        return config
    for spec in data["experts"].values():
        spec["params"]["delay_s"] = seconds
    path = config.with_name(f"{config.stem}-delay-{seconds:g}.yaml")
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module", params=["fake", pytest.param("real", marks=pytest.mark.real)])
def small_setup(request, tmp_path_factory):
    """A two-expert pool (SmolLM2, Gemma base: real, or scripted with a delay), its profile, and
    8 real ARC questions. The scripted pool also answers the first 24 (the full-disk test's)."""
    root = tmp_path_factory.mktemp(f"resume-{request.param}")
    questions = load_split("arc_challenge", "test", limit=8, seed=0)
    task = root / "arc8.jsonl"
    task.write_text("".join(q.model_dump_json() + "\n" for q in questions))
    profile_path = root / "profile.json"
    config_path = root / "config.yaml"
    everything = {q.id: q for q in [*questions, *load_split("arc_challenge", "test", limit=24, seed=0)]}
    write_small_config(config_path, request.param, profile_path, list(everything.values()))
    config = load_config(config_path)
    counts = {"smollm2-135m": SkillCount(right=6, wrong=4), "gemma3-270m": SkillCount(right=4, wrong=6)}
    save_profile(Profile(pool=pool_digest(config), annotator="smollm2-135m",
                         experts={n: ExpertProfile(skills={"science reasoning": c}, tasks={"arc_challenge": c})
                                  for n, c in counts.items()}), profile_path)
    return root, task, config_path


def run_eval(config: Path, task: Path, out: Path, **popen: object) -> Spawned:
    cmd = [*SYMOE, "eval", "-c", str(config), "--tasks", str(task), "--routers", "single,majority,moa",
           "--output", str(out), "--log-samples"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    runs = len(list(out.parent.glob(f"{out.name}-*.log")))  # one log per run into ``out``
    return spawn(cmd, out.parent / f"{out.name}-{runs}.log", env=env, **popen)


def stored(out: Path) -> int:
    db = out / "generations.sqlite"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=1) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM generations").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def answers(out: Path) -> dict[tuple[str, str], tuple[str | None, bool]]:
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    return {(r["method"], r["question_id"]): (r["answer"], r["correct"]) for r in rows}


def test_killed_run_resumes_without_recomputing(small_setup, tmp_path):
    _, task, config = small_setup
    whole = tmp_path / "whole"
    proc = run_eval(config, task, whole)
    assert proc.finish(timeout=600) == 0, proc.output()[-3000:]
    reference = json.loads((whole / "results.json").read_text())
    needed = reference["stats"]["generations_needed"]
    assert reference["stats"]["generated"] == needed

    killed = tmp_path / "killed"
    proc = run_eval(config, task, killed)
    deadline = time.time() + 600
    while stored(killed) < needed // 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = stored(killed)
    assert 0 < done_before < needed

    proc = run_eval(config, task, killed)
    assert proc.finish(timeout=600) == 0, proc.output()[-3000:]
    resumed = json.loads((killed / "results.json").read_text())
    assert resumed["stats"]["generated"] == needed - done_before, "finished generations were recomputed"
    assert resumed["stats"]["from_cache"] >= done_before
    assert answers(killed) == answers(whole)
    def without_time(table: dict) -> dict:
        return {m: {t: {k: v for k, v in row.items() if k != "seconds"} for t, row in rows.items()}
                for m, rows in table.items()}

    assert without_time(resumed["accuracy"]) == without_time(reference["accuracy"])
    # every single expert's answers, as an outcome matrix whose columns score what eval did
    matrix = read_matrix(killed / "matrix.jsonl.gz")
    assert len(matrix) == reference["stats"]["questions"]
    for expert, accuracy in matrix.accuracy().items():
        assert 100 * accuracy == pytest.approx(resumed["accuracy"][f"single:{expert}"]["all"]["accuracy"], abs=0.01)


def test_bad_input_is_one_line_exit_2_and_loses_nothing(small_setup, tmp_path):
    root, task, config = small_setup
    out = tmp_path / "run"
    base = [*SYMOE, "eval", "-c", str(config), "--routers", "single:smollm2-135m"]
    done = subprocess.run([*base, "--tasks", str(task), "--output", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    n, results = stored(out), (out / "results.json").read_text()
    assert n == 8
    malformed = tmp_path / "broken.jsonl"
    malformed.write_text('{"id": "q1", "question": "2+2?", "choices": ["3", "4"], "answer": "B"}\n{"id": oops\n')
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cases = {
        "unknown task": ["--tasks", "no_such_task", "--output", str(out)],
        "broken.jsonl": ["--tasks", str(malformed), "--output", str(out)],
        "not writable": ["--tasks", str(task), "--output", str(blocker / "sub"),
                         "--use-cache", str(out / "generations.sqlite")],
        "unknown router": ["--tasks", str(task), "--routers", "oracle", "--output", str(out)],
    }
    for expect, args in cases.items():
        proc = subprocess.run([*base[:-2], *(["--routers", "single:smollm2-135m"] if "--routers" not in args else []),
                               *args], capture_output=True, text=True, timeout=120)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2, (expect, proc.stderr[-1500:])
        assert len(lines) == 1 and lines[0].startswith("error:") and expect in lines[0], (expect, proc.stderr)
    assert stored(out) == n and (out / "results.json").read_text() == results
