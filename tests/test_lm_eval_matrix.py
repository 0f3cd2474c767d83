"""A matrix from a real lm-evaluation-harness sample log (issue 23): lm-eval itself runs two
single experts (``symoe lm-eval --model symoe --model_args router=single:EXPERT --log_samples``)
on a few ARC-Easy questions exported offline (``symoe data lm-eval``), and ``symoe matrix import
lm-eval`` turns what it wrote into a matrix whose every outcome is the per-sample metric
lm-eval wrote.

The two ``direct`` experts answer a letter in a few tokens (16 at most), so the two runs take
seconds of generation each, mostly model loading. The matrix is made once per module by the
``lm_eval_matrix`` fixture, so a replay of it (``symoe eval --matrix FILE``) can sit beside the
import test and reuse it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from eval.matrix import read_matrix
from eval.matrix_importers import lm_eval_model_name

pytest.importorskip("lm_eval", reason="needs the lm-eval extra: pip install -e '.[lm-eval]'")

EXPERTS = ["qwen-0.5b-direct", "qwen-1.5b-direct"]
TASK = "arc_easy"  # multiple choice, scored by lm-eval on the stated letter (generate_until)
LM_EVAL_TASK = f"symoe_{TASK}"
LIMIT = 5


def runs_of(matrix: Path) -> Path:
    """The folder of lm-eval's output the matrix was imported from (one subfolder per expert)."""
    return matrix.parent / "runs"


def lm_eval_samples(runs: Path, expert: str) -> list[dict[str, Any]]:
    """The samples lm-eval wrote for ``expert`` (its one run of the task)."""
    (path,) = sorted((runs / expert).rglob(f"samples_{LM_EVAL_TASK}_*.jsonl"))
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def lm_eval_results(runs: Path, expert: str) -> dict[str, Any]:
    (path,) = sorted((runs / expert).rglob("results_*.json"))
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def lm_eval_matrix(tmp_path_factory: pytest.TempPathFactory, symoe_cli) -> Path:
    """The matrix (``<tmp>/matrix.jsonl``) imported from lm-eval's own logs of the two experts on
    ``LIMIT`` offline questions; lm-eval's output lies beside it (``runs_of(matrix)/<expert>/``).
    Only the ``real`` tests use it (it runs real default-pool models)."""
    root = tmp_path_factory.mktemp("lm-eval-matrix")
    tasks, runs, matrix = root / "tasks", root / "runs", root / "matrix.jsonl"
    env = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    exported = symoe_cli("data", "lm-eval", TASK, "--limit", str(LIMIT), "-o", str(tasks))
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert f"({LIMIT} questions)" in exported.stdout, exported.stdout
    for expert in EXPERTS:
        run = symoe_cli("lm-eval", "--model", "symoe", "--model_args", f"router=single:{expert}",
                        "--tasks", LM_EVAL_TASK, "--include_path", str(tasks), "--limit", str(LIMIT),
                        "--log_samples", "--output_path", str(runs / expert), env=env, timeout=1800)
        assert run.returncode == 0, run.stderr[-3000:]
    imported = symoe_cli("matrix", "import", "lm-eval", str(runs), "--output", str(matrix))
    assert imported.returncode == 0, imported.stderr[-3000:]
    assert f"{LIMIT} questions x {len(EXPERTS)} experts" in imported.stdout, imported.stdout
    return matrix


@pytest.mark.real
def test_lm_eval_sample_log_imports_as_a_matrix(lm_eval_matrix: Path, symoe_cli) -> None:
    runs = runs_of(lm_eval_matrix)
    m = read_matrix(lm_eval_matrix)
    assert m.experts == EXPERTS
    assert m.tasks == [LM_EVAL_TASK] and len(m.rows) == LIMIT
    assert m.counts() == {LM_EVAL_TASK: {"validation": LIMIT, "test": 0}}
    rows = {r.id: r for r in m.rows}
    for expert in EXPERTS:
        samples = lm_eval_samples(runs, expert)
        assert len(samples) == LIMIT and {s["filter"] for s in samples} == {"last-answer"}
        for s in samples:
            row = rows[f"{LM_EVAL_TASK}-{s['doc_hash'][:12]}"]
            outcome = row.outcomes[expert]
            assert s["metrics"] == ["exact_match"]
            assert outcome.correct == s["exact_match"], (expert, row.id)
            assert outcome.answer == s["filtered_resps"][0] and outcome.answer  # the letter, or "[invalid]"
            assert row.answer == s["target"] and row.question == s["doc"]["question"]
        # the matrix column scores what lm-eval's own aggregate says
        score = lm_eval_results(runs, expert)["results"][LM_EVAL_TASK]["exact_match,last-answer"]
        assert m.accuracy()[expert] == pytest.approx(score)
    shown = symoe_cli("matrix", "show", str(lm_eval_matrix))
    assert shown.returncode == 0, shown.stderr
    assert all(e in shown.stdout for e in EXPERTS) and "oracle" in shown.stdout


@pytest.mark.real
def test_the_lm_eval_matrix_replays_with_each_expert_scoring_what_lm_eval_said(lm_eval_matrix: Path,
                                                                              symoe_cli) -> None:
    """Replayed (every question validation: cross-fitted), each single expert scores lm-eval's
    own aggregate, and the routers that learn from the matrix run on it."""
    runs, out = runs_of(lm_eval_matrix), lm_eval_matrix.parent / "replay"
    proc = symoe_cli("eval", "--matrix", str(lm_eval_matrix), "--folds", "5", "-o", str(out),
                     "--routers", "single,best_single,task_best,majority,learned:knn,clusters")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["args"]["scored"] == "cross-fitted (5 folds)"
    for expert in EXPERTS:
        score = lm_eval_results(runs, expert)["results"][LM_EVAL_TASK]["exact_match,last-answer"]
        assert results["accuracy"][f"single:{expert}"]["all"]["accuracy"] == pytest.approx(100 * score)
        assert results["accuracy"][f"single:{expert}"]["all"]["n"] == LIMIT
    for router in ("best_single", "task_best", "majority", "learned:knn", "clusters", "oracle"):
        assert results["accuracy"][router]["all"]["n"] == LIMIT, router


def test_the_symoe_model_is_named_by_its_router() -> None:
    """lm-eval 0.4.13 names a run from model_args' ``pretrained=``/``model=``...; the symoe model's
    ``router=`` is none of them, so its results' ``model_name`` is a random id (the same one every
    run: lm-eval seeds ``random``), and two experts would import as one. This is what it wrote."""
    written = {"model_name": "qdpv68r5", "model_name_sanitized": "qdpv68r5",
               "config": {"model": "symoe", "model_args": {"router": "single:qwen-0.5b-direct"}}}
    assert lm_eval_model_name(written) == "qwen-0.5b-direct"
    written["config"]["model_args"] = "router=symoe,seed=7"
    assert lm_eval_model_name(written) == "symoe"
    written["config"]["model_args"] = {}  # --model symoe alone: the default router
    assert lm_eval_model_name(written) == "symoe"
    hf = {"model_name": "org/m-7b", "config": {"model": "hf", "model_args": "pretrained=org/m-7b,dtype=auto"}}
    assert lm_eval_model_name(hf) == "org/m-7b"
    peft = {"model_name": "org/adapter", "config": {"model": "hf", "model_args": {"pretrained": "org/m",
                                                                                 "peft": "org/adapter"}}}
    assert lm_eval_model_name(peft) == "org/adapter"
    assert lm_eval_model_name({"model_name": "hand-made"}) == "hand-made"  # no config: trusted as written
