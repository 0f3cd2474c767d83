"""Cost/quality curves (issue 23): RouteLLM's APGR and CPT(50%), RouterBench's AIQ, from a router
swept over its knob (``learned.cost_weight``), replayed on a matrix. Fast: numbers worked by hand,
and a small synthetic two-expert matrix with the shipped MiniLM embedder, no LLM."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import one_error_line
from test_replay import TOPICS, WORDS

from eval.curves import aiq, apgr, cpt, curves, pgr_curve, upper_hull
from eval.matrix import Matrix, MatrixRow, RecordedOutcome, write_matrix
from eval.replay import replay
from orchestrator.config import SymoeConfig


def test_the_hull_drops_points_under_it_and_never_falls() -> None:
    assert upper_hull([(0, 50), (1, 52), (2, 70), (3, 60), (4, 80)]) == [(0, 50), (2, 70), (4, 80)]
    assert upper_hull([(0, 50), (1, 90), (2, 80)]) == [(0, 50), (1, 90)]


def test_aiq_is_the_mean_of_the_hull_over_the_cost_range() -> None:
    assert aiq([(0, 50), (10, 70)], 0, 10) == pytest.approx(60.0, abs=0.01)
    # a router that reaches 70 at cost 2 and stays there: (2 * 60 + 8 * 70) / 10
    assert aiq([(0, 50), (2, 70)], 0, 10) == pytest.approx(68.0, abs=0.01)
    assert aiq([(0, 50)], 3, 3) is None


def test_apgr_and_cpt_of_a_random_router_and_a_perfect_one() -> None:
    diagonal = pgr_curve([0.25, 0.5, 0.75], [55.0, 60.0, 65.0], weak=50.0, strong=70.0)
    assert apgr(diagonal) == pytest.approx(0.5)
    assert cpt(diagonal) == pytest.approx(0.5)
    sharp = pgr_curve([0.2], [70.0], weak=50.0, strong=70.0)  # all the gap for 20% strong calls
    assert apgr(sharp) == pytest.approx(0.9)
    assert cpt(sharp) == pytest.approx(0.1)


def two_expert_matrix(per_topic: int = 30) -> Matrix:
    """``strong`` is right everywhere but dear; ``weak`` is right on chemistry only and cheap."""
    rows = []
    for task, templates in TOPICS.items():
        for i in range(per_topic):
            rows.append(MatrixRow(
                id=f"{task}-{i}", task=task, split="test" if i % 2 else "validation",  # type: ignore[arg-type]
                question=templates[i % 3].format(WORDS[i % 20] + str(i)),
                outcomes={"strong": RecordedOutcome(correct=1.0, cost=0.01),
                          "weak": RecordedOutcome(correct=float(task == "chem"), cost=0.0001)}))
    return Matrix(rows)


def test_a_swept_learned_router_sends_the_weak_expert_its_topic_and_recovers_the_gap(tmp_path: Path) -> None:
    samples, _ = replay(SymoeConfig(home=tmp_path), two_expert_matrix(), ["single", "learned:logreg"],
                        sweeps=[("learned.cost_weight", ["0", "0.3", "2"])])
    found = curves(samples)["learned:logreg"]
    assert (found["strong"], found["weak"], found["cost"]) == ("strong", "weak", "USD per question")
    shares = {p["method"]: p["strong_share"] for p in found["points"]}
    assert shares["learned:logreg[learned.cost_weight=0]"] > 0.9
    assert shares["learned:logreg[learned.cost_weight=2]"] < 0.1
    # at 0.3 chemistry goes to the cheap expert, history to the strong one: the whole gap for half the calls
    assert 0.4 <= shares["learned:logreg[learned.cost_weight=0.3]"] <= 0.6
    assert found["apgr"] > 0.7 and found["cpt50"] < 50
    assert found["aiq"] > found["aiq_zero"]


def test_eval_matrix_sweep_and_cost_reach_the_report_and_bad_costs_are_one_line(tmp_path: Path, symoe_cli) -> None:
    m = two_expert_matrix(10)
    unpriced = Matrix([r.model_copy(update={"outcomes": {e: o.model_copy(update={"cost": None})
                                                         for e, o in r.outcomes.items()}}) for r in m.rows])
    path = write_matrix(unpriced, tmp_path / "m.jsonl")
    env = {"SYMOE_HOME": str(tmp_path / "home")}
    proc = symoe_cli("eval", "--matrix", str(path), "--routers", "single,learned:knn", "--sweep",
                     "learned.cost_weight=0,5", "--cost", "strong=0.01,weak=0.0001", "-o", str(tmp_path / "run"),
                     env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = (tmp_path / "run" / "results.md").read_text()
    assert "| learned:knn | 2 |" in table and "USD per question" in table
    proc = symoe_cli("eval", "--matrix", str(path), "--cost", "strong=cheap", "-o", str(tmp_path / "r2"), env=env)
    one_error_line(proc, "--cost 'strong=cheap' is not EXPERT=COST")
    proc = symoe_cli("eval", "--matrix", str(path), "--cost", "gpt=1", "-o", str(tmp_path / "r3"), env=env)
    one_error_line(proc, "no expert 'gpt' to price")
