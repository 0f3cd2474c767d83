"""Report statistics: standard errors and paired-bootstrap intervals against the reference."""

from __future__ import annotations

from agents.backends import Usage
from eval.report import markdown_table, plot_pareto
from eval.runner import SampleResult, summarise
from eval.stats import compare, paired_interval, standard_error


def test_standard_error_in_points():
    assert standard_error([True, False] * 50) == 5.0
    assert standard_error([True] * 10) == 0.0 and standard_error([]) == 0.0


def test_paired_interval_separates_a_real_difference_from_a_tie():
    same = [True, False, True, True] * 25
    assert paired_interval(same, same) == (0.0, 0.0)
    better = compare([True] * 40 + [False] * 10, [True] * 20 + [False] * 30, "ref")
    assert better.diff == 40.0 and better.beats and 25 < better.low < 40 < better.high < 55
    one_question = compare([True] + [False] * 49, [False] * 50, "ref")  # one question of 50
    assert one_question.diff == 2.0 and not one_question.beats and one_question.low == 0.0
    assert paired_interval(same, same[::-1], seed=1) == paired_interval(same, same[::-1], seed=1)  # seeded


def _sample(method: str, qid: str, correct: bool) -> SampleResult:
    return SampleResult(method=method, question_id=qid, task="t", subject="s", answer="A", gold="A",
                        correct=correct, experts=[], usage=Usage())


def test_every_method_is_compared_with_best_single_in_the_summary():
    rows = [_sample("best_single", f"q{i}", i < 20) for i in range(50)]
    rows += [_sample("symoe", f"q{i}", i < 40) for i in range(50)]
    summary = summarise(rows)
    vs = summary["compared"]["symoe"]
    assert vs["reference"] == "best_single" and vs["n"] == 50 and vs["diff"] == 40.0 and vs["low"] > 0
    assert summary["compared"]["best_single"]["diff"] == 0.0
    assert summary["accuracy"]["symoe"]["all"]["stderr"] == round(standard_error([True] * 40 + [False] * 10), 2)


def _costly(method: str, qid: str, correct: bool, tokens: int, seconds: float,
            escalated: bool | None = None) -> SampleResult:
    return SampleResult(method=method, question_id=qid, task="t", subject="s", answer="A", gold="A", correct=correct,
                        experts=[], usage=Usage(completion_tokens=tokens, seconds=seconds), escalated=escalated)


def test_the_pareto_section_marks_methods_nothing_beats_on_cost_and_accuracy(tmp_path):
    rows = []
    for i in range(10):
        rows.append(_costly("cheap", f"q{i}", i < 4, 10, 0.1))
        rows.append(_costly("dear", f"q{i}", i < 8, 300, 5.0))
        rows.append(_costly("wasteful", f"q{i}", i < 4, 200, 0.05))  # as accurate as cheap, dearer in tokens
        rows.append(_costly("cascade", f"q{i}", i < 7, 60, 1.0, escalated=i % 5 == 0))
    summary = summarise(rows)
    front = {m: (p["front_tokens"], p["front_seconds"]) for m, p in summary["pareto"].items()}
    assert front == {"cheap": (True, False), "dear": (True, True), "wasteful": (False, True), "cascade": (True, True)}
    assert summary["pareto"]["cascade"]["tokens_per_question"] == 60.0
    assert summary["escalation"] == {"cascade": {"cascaded": 10, "escalated": 2, "rate": 20.0}}
    plot_pareto(summary, tmp_path / "pareto.png")
    assert (tmp_path / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert "cascade escalated 2 of 10 cascaded questions (20%)" in markdown_table(summary)
