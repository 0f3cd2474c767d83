"""``symoe matrix build`` (issue 24): every routed expert's answers as an outcome matrix, in
resumable pieces under a time budget. Fast: scripted (fake) experts answer a small task file;
the protocol (chunks, the budget, resuming from the cache) is what is tested."""

from __future__ import annotations

import json
from pathlib import Path

from eval.matrix import read_matrix, write_matrix
from eval.matrix_build import build_matrix, interleaved
from orchestrator.config import SymoeConfig

QUESTIONS = [{"id": f"{task}-{i}", "question": f"{task} question number {i}?", "choices": ["yes", "no"],
              "answer": "A" if i % 2 else "B", "split": "validation" if i < 4 else "test", "task": task}
             for task in ("alpha", "beta") for i in range(6)]


def task_files(tmp_path: Path) -> list[str]:
    out = []
    for task in ("alpha", "beta"):
        path = tmp_path / f"{task}.jsonl"
        path.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS if q["task"] == task))
        out.append(str(path))
    return out


def config(tmp_path: Path, delay_s: float = 0.0) -> SymoeConfig:
    def fake(right_when_odd: bool) -> dict:
        def said(q: dict) -> str:
            return q["answer"] if (int(q["id"].split("-")[1]) % 2 == 1) == right_when_odd else "A"
        answers = {q["question"]: f"Answer: {said(q)}" for q in QUESTIONS}
        return {"backend": "fake", "params": {"answers": answers, "default": "Answer: A", "delay_s": delay_s}}
    return SymoeConfig(home=tmp_path / "home", replace_pool=True, default_expert="odd",
                       experts={"odd": fake(True), "even": fake(False)})


def test_the_matrix_holds_every_experts_scored_answer(tmp_path: Path) -> None:
    matrix, report = build_matrix(config(tmp_path), task_files(tmp_path), ["validation", "test"], chunk=4)
    assert report.done == report.questions == 12 and not report.stopped_by_budget
    assert sorted(matrix.experts) == ["even", "odd"] and matrix.counts() == {
        "alpha": {"validation": 4, "test": 2}, "beta": {"validation": 4, "test": 2}}
    for row in matrix.rows:
        odd = int(row.id.split("-")[1]) % 2 == 1
        assert row.outcomes["odd"].correct == (1.0 if odd else float(row.answer == "A"))
        assert row.outcomes["odd"].answer in ("A", "B") and row.outcomes["odd"].prompt_tokens
    write_matrix(matrix, tmp_path / "m.jsonl.gz")
    assert len(read_matrix(tmp_path / "m.jsonl.gz")) == 12


def test_a_budget_stops_between_chunks_and_the_next_run_resumes_from_the_cache(tmp_path: Path) -> None:
    cfg, tasks = config(tmp_path, delay_s=0.05), task_files(tmp_path)
    first, report = build_matrix(cfg, tasks, ["validation"], chunk=2, budget_s=0.01)
    assert report.stopped_by_budget and 0 < report.done < report.questions == 8
    assert {r.task for r in first.rows} == {"alpha", "beta"}  # tasks interleaved: a piece covers each
    again, report = build_matrix(cfg, tasks, ["validation"], chunk=2)
    assert report.done == 8 and not report.stopped_by_budget
    assert [r for r in again.rows if r.id in first.ids] == first.rows


def test_rows_of_the_earlier_matrix_are_kept_and_not_asked_again(tmp_path: Path) -> None:
    """A re-run goes on from the matrix file, not only from the cache: here the cache is gone
    (a fresh machine without the shards), and the kept rows still cost no generation."""
    cfg, tasks = config(tmp_path), task_files(tmp_path)
    first, _ = build_matrix(cfg, tasks, ["validation"], chunk=2, skills=False)
    fresh = cfg.model_copy(update={"home": tmp_path / "other-home"})
    again, report = build_matrix(fresh, tasks, ["validation", "test"], chunk=2, skills=False, done=first)
    assert report.kept == 8 and report.done == 12
    assert [r for r in again.rows if r.id in first.ids] == first.rows
    # a kept row must hold every expert of the pool: a matrix that lacks one is asked again ...
    lacking = type(first)([r.model_copy(update={"outcomes": {"odd": r.outcomes["odd"]}}) for r in first.rows],
                          ["odd"])
    _, report = build_matrix(fresh, tasks, ["validation"], chunk=2, skills=False, done=lacking)
    assert report.kept == 0 and report.done == 8
    # ... and an expert the pool no longer has is dropped from the kept rows
    smaller = fresh.model_copy(update={"experts": {"odd": fresh.experts["odd"]}})
    only_odd, report = build_matrix(smaller, tasks, ["validation"], chunk=2, skills=False, done=first)
    assert report.kept == 8 and only_odd.experts == ["odd"]


def test_a_split_takes_its_own_limit_and_rows_outside_the_selection_stay_in_the_file(tmp_path: Path) -> None:
    """``validation:3,test:1`` gives each split its own count a task (the first N of the split's
    order, so a larger limit later goes on from them); a later run over a smaller selection
    writes the earlier rows outside it back, instead of dropping them from the file."""
    cfg, tasks = config(tmp_path), task_files(tmp_path)
    first, report = build_matrix(cfg, tasks, ["validation:3", "test:1"], chunk=2, skills=False)
    assert report.done == report.questions == 8 and first.counts() == {
        "alpha": {"validation": 3, "test": 1}, "beta": {"validation": 3, "test": 1}}
    wider, _ = build_matrix(cfg, tasks, ["validation", "test"], limit=2, skills=False)
    assert {r.id for r in wider.rows if r.split == "test"} >= {r.id for r in first.rows if r.split == "test"}
    only_test, report = build_matrix(cfg, tasks, ["test:1"], chunk=2, skills=False, done=first)
    assert report.questions == report.kept == report.done == 2 and report.outside == 6
    assert sorted(r.id for r in only_test.rows) == sorted(r.id for r in first.rows)


def test_an_interrupt_stops_between_chunks_and_keeps_what_is_done(tmp_path: Path, monkeypatch) -> None:
    """Ctrl-C (or SIGTERM, which ``symoe matrix build`` turns into one) during the second chunk:
    the first chunk's rows are returned to be written, the run says it was interrupted."""
    from orchestrator.session import Symoe
    cfg, tasks = config(tmp_path), task_files(tmp_path)
    real, calls = Symoe.ask_many, []

    def ask_many(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Symoe, "ask_many", ask_many)
    matrix, report = build_matrix(cfg, tasks, ["validation"], chunk=2, skills=False)
    assert report.interrupted and not report.stopped_by_budget and report.done == len(matrix) == 2


def test_interleaving_round_robins_over_tasks_and_splits() -> None:
    from eval.datasets import Question
    qs = [Question(id=f"{t}{i}", question="q", answer="1", task=t, split="validation") for t in "ab" for i in range(3)]
    assert [q.id for q in interleaved(qs)] == ["a0", "b0", "a1", "b1", "a2", "b2"]
    both = [Question(id=f"{t}{s[0]}{i}", question="q", answer="1", task=t, split=s)
            for s in ("validation", "test") for t in "ab" for i in range(2)]
    assert [q.id for q in interleaved(both)] == ["av0", "bv0", "at0", "bt0", "av1", "bv1", "at1", "bt1"]


def test_each_row_carries_the_skills_the_annotator_names_unless_told_not_to(tmp_path: Path) -> None:
    base = config(tmp_path)
    tagger = {"backend": "fake", "routed": False, "params": {"default": "algebra, arithmetic"}}
    cfg = SymoeConfig(home=base.home, replace_pool=True, default_expert="odd", skills={"annotator": "tagger"},
                      experts={**{n: e.model_dump(exclude={"name"}) for n, e in base.experts.items()},
                               "tagger": tagger})
    matrix, _ = build_matrix(cfg, task_files(tmp_path), ["validation"], chunk=4)
    assert sorted(matrix.experts) == ["even", "odd"]  # the annotator is no expert of the matrix
    assert all(r.skills and "algebra" in r.skills for r in matrix.rows), [r.skills for r in matrix.rows]
    bare, _ = build_matrix(cfg, task_files(tmp_path), ["validation"], chunk=4, skills=False)
    assert all(r.skills is None for r in bare.rows)


def test_sigterm_interrupts_like_ctrl_c_inside_the_block_only() -> None:
    import os
    import signal

    import pytest

    from orchestrator.cli.common import sigterm_interrupts
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), sigterm_interrupts():
        os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) == before
