"""Replay equals live (issue 23): a live ``symoe eval`` of the default pool on 20 test questions
(10 MMLU, 10 GSM8K) with every single expert, ``clusters`` and ``majority``, its single-expert
rows imported as an outcome matrix (``symoe matrix import symoe``), then ``symoe eval --matrix``
under the shipped default profile: every router must give every question the answer live gave,
scored the same, and so the same accuracy.

The live run reads and writes the home generation cache (``<home>/cache/generations.sqlite``),
where ``make install`` imports the committed shards of ``data/generations/``; shard
``6d19de6878a9e515.jsonl.gz`` holds every generation this run needs (110: 5 experts x 20
questions, and the cot expert's 10 short second turns on GSM8K), so on a prepared machine it
generates nothing: the module takes about 30 s (live 25 s of it, the replay 5 s). Without the
shard it generates them: 63 min on 2 busy cores (2026-12-06).

``clusters`` runs as ``clusters@never``: live, a routed router retrieves by default
(``retrieval.mode: auto``), replay never does. Live ``clusters`` retrieved for 6 of these 20
questions and answered 2 of them otherwise (mmlu-06177 D, not C; gsm8k-855 158, not 24);
the shard also holds that run's 20 gate drafts and 6 expert answers with passages.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from eval.datasets import load_tasks, write_jsonl
from orchestrator.config import load_config
from orchestrator.profiles import default_profile_path
from orchestrator.session import default_cache_path

pytestmark = pytest.mark.real

TASKS = ["mmlu:10", "gsm8k:10"]
SEED = 0
# retrieval off on both sides: replay cannot retrieve (the matrix recorded answers without
# passages), and a live routed router retrieves by default (``retrieval.mode: auto``)
ROUTERS = "single,clusters@never,majority"
EXPERTS = ["qwen-1.5b-direct", "qwen-1.5b-cot", "qwen-1.5b-program", "qwen-0.5b-direct", "qwen-0.5b-program"]
COMPARED = [*(f"single:{e}" for e in EXPERTS), "clusters@never", "majority"]
QUESTIONS = 20


def samples(run: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """``samples.jsonl`` of a run by (router, question id)."""
    rows = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines() if line.strip()]
    keyed = {(r["method"], r["question_id"]): r for r in rows}
    assert len(keyed) == len(rows), "a (router, question) pair twice"
    return keyed


def accuracy(run: Path) -> dict[str, float]:
    results = json.loads((run / "results.json").read_text())
    return {method: rows["all"]["accuracy"] for method, rows in results["accuracy"].items()}


@pytest.fixture(scope="module")
def live_and_replay(tmp_path_factory: pytest.TempPathFactory, symoe_cli) -> tuple[Path, Path, dict[str, float]]:
    """(live run folder, replay run folder, seconds of each step)."""
    root = tmp_path_factory.mktemp("replay-live")
    live, replayed, matrix, questions = root / "live", root / "replay", root / "matrix.jsonl", root / "questions.jsonl"
    cache = default_cache_path(load_config())
    seconds = {}
    started = time.perf_counter()
    run = symoe_cli("eval", "--tasks", ",".join(TASKS), "--routers", ROUTERS, "--seed", str(SEED), "--log-samples",
                    "--use-cache", str(cache), "--output", str(live), timeout=5400)
    assert run.returncode == 0, run.stderr[-3000:]
    seconds["live"] = time.perf_counter() - started
    # the importer reads question texts from prepared task files or from question files given
    # beside the samples: the very questions the live run asked (same tasks, split and seed)
    write_jsonl(load_tasks(TASKS, "test", seed=SEED), questions)
    imported = symoe_cli("matrix", "import", "symoe", str(live / "samples.jsonl"), str(questions),
                         "--output", str(matrix))
    assert imported.returncode == 0, imported.stderr[-3000:]
    assert f"{QUESTIONS} questions x {len(EXPERTS)} experts" in imported.stdout, imported.stdout
    started = time.perf_counter()
    run = symoe_cli("eval", "--matrix", str(matrix), "--profile", str(default_profile_path()), "--routers", ROUTERS,
                    "--seed", str(SEED), "--log-samples", "--output", str(replayed), timeout=1800)
    assert run.returncode == 0, run.stderr[-3000:]
    seconds["replay"] = time.perf_counter() - started
    return live, replayed, seconds


def test_replay_gives_every_router_the_live_answers(live_and_replay: tuple[Path, Path, dict[str, float]]) -> None:
    live_run, replay_run, _ = live_and_replay
    live, replayed = samples(live_run), samples(replay_run)
    for router in COMPARED:
        asked = {q for m, q in live if m == router}
        assert len(asked) == QUESTIONS, (router, len(asked))
        assert {q for m, q in replayed if m == router} == asked, router
    different = []
    for (router, qid), was in sorted(live.items()):
        now = replayed[(router, qid)]
        if (now["answer"], now["correct"]) != (was["answer"], was["correct"]):
            different.append(f"{router} {qid}: live {was['answer']!r} ({was['correct']}, experts {was['experts']}, "
                             f"fallback {was['fallback']}) vs replay {now['answer']!r} ({now['correct']}, "
                             f"experts {now['experts']}, fallback {now['fallback']})")
    assert not different, "\n".join(different)
    # clusters routes each question to one expert: replay must pick the expert live picked
    for (router, qid), was in live.items():
        if router == "clusters@never":
            assert replayed[(router, qid)]["experts"] == was["experts"], qid


def test_replay_gives_every_router_the_live_accuracy(live_and_replay: tuple[Path, Path, dict[str, float]]) -> None:
    live_run, replay_run, _ = live_and_replay
    live, replayed = accuracy(live_run), accuracy(replay_run)
    assert set(COMPARED) == set(live)
    assert set(COMPARED) <= set(replayed)
    assert {r: replayed[r] for r in COMPARED} == live
