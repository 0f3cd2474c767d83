"""Several processes at once: two ``symoe eval`` on one output folder (the second is refused
in one line, the first's report stays whole), and two on one shared generation cache (they
share the finished work: together they generate each distinct generation once).

On scripted experts with a delay per generation (``make test``) and on the small real models
(``-m real``): ``small_setup`` is parametrized by backend."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from conftest import Spawned, spawn
from test_eval_resume import small_setup, with_fake_delay  # noqa: F401  (the fixture: two small experts, 8 ARC questions)

SYMOE = [sys.executable, "-m", "orchestrator.cli"]


def start(config: Path, task: Path, out: Path, cache: Path | None = None) -> Spawned:
    return spawn([*SYMOE, "eval", "-c", str(config), "--tasks", str(task), "--routers", "single,majority",
                  "--output", str(out), "--log-samples", *(["--use-cache", str(cache)] if cache else [])],
                 out.parent / f"{out.name}.log")


def samples(out: Path) -> dict[tuple[str, str], str | None]:
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    return {(r["method"], r["question_id"]): r["answer"] for r in rows}


def test_two_runs_on_one_output_folder(small_setup, tmp_path: Path) -> None:  # noqa: F811
    _, task, config = small_setup
    config = with_fake_delay(config, 1.0)  # the first run outlasts the second's start (seconds of imports)
    out = tmp_path / "run"
    first = start(config, task, out)
    time.sleep(0.5)
    while not (out / ".lock").exists() and first.poll() is None:
        time.sleep(0.1)
    second = subprocess.run([*SYMOE, "eval", "-c", str(config), "--tasks", str(task), "--routers", "single",
                             "--output", str(out)], capture_output=True, text=True, timeout=300)
    assert first.finish(timeout=900) == 0, first.output()[-3000:]
    lines = second.stderr.strip().splitlines()
    assert second.returncode == 2 and len(lines) == 1 and "in use by another symoe eval" in lines[0], second.stderr
    report = json.loads((out / "results.json").read_text())
    assert report["args"]["methods"] == ["single:smollm2-135m", "single:gemma3-270m", "majority"]


def test_two_runs_sharing_one_cache_generate_each_thing_once(small_setup, tmp_path: Path) -> None:  # noqa: F811
    _, task, config = small_setup
    cache = tmp_path / "shared.sqlite"
    a, b = start(config, task, tmp_path / "a", cache), start(config, task, tmp_path / "b", cache)
    assert a.finish(timeout=1200) == 0, a.output()[-3000:]
    assert b.finish(timeout=1200) == 0, b.output()[-3000:]
    sa = json.loads((tmp_path / "a" / "results.json").read_text())["stats"]
    sb = json.loads((tmp_path / "b" / "results.json").read_text())["stats"]
    assert sa["generations_needed"] == sb["generations_needed"]
    assert sa["generated"] + sb["generated"] == sa["generations_needed"], (sa, sb)
    assert samples(tmp_path / "a") == samples(tmp_path / "b")
