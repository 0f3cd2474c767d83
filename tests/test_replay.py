"""Replay (issue 23): routers judged on an outcome matrix through the live pipeline, with
recorded answers in place of generations; profiles from a matrix, their router chosen by
replay. Fast: small synthetic matrices, the shipped MiniLM embedder, no LLM."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest
from conftest import one_error_line

from agents.errors import SymoeError
from eval.matrix import Matrix, MatrixRow, RecordedOutcome, write_matrix
from eval.matrix_importers import sample_outcome
from eval.replay import as_replayed, profile_by_replay, replay, replay_config
from eval.runner import SampleResult
from orchestrator.config import SymoeConfig, load_config
from orchestrator.methods import MethodSpec
from orchestrator.profiles import Profile
from orchestrator.session import Symoe

TOPICS = {
    "chem": ["What is the boiling point of {} at sea level?", "Which element has atomic number {}?",
             "How many moles of {} react with oxygen?"],
    "hist": ["In which year did the {} treaty get signed?", "Who ruled the {} empire at its height?",
             "Which war ended with the battle of {}?"],
}
WORDS = ["alpha", "bravo", "carbon", "delta", "ember", "falcon", "granite", "harbor", "indigo", "jasper",
         "kestrel", "lumen", "marble", "nickel", "onyx", "pewter", "quartz", "raven", "sable", "topaz"]


def topic_matrix(per_topic: int = 40, test_share: float = 0.5) -> Matrix:
    """Two tasks of differently worded questions: ``chem_ace`` is right on chemistry and wrong
    on history, ``hist_ace`` the reverse, ``middling`` right on every other question; answers
    recorded as letters (right: the gold 'A'), so a vote can be replayed."""
    rows = []
    for task, templates in TOPICS.items():
        for i in range(per_topic):
            question = templates[i % 3].format(WORDS[i % 20] + str(i))
            split = "test" if i >= per_topic * (1 - test_share) else "validation"

            def outcome(right: bool, wrong: str = "B") -> RecordedOutcome:
                return RecordedOutcome(correct=float(right), answer="A" if right else wrong,
                                       prompt_tokens=50, completion_tokens=5)
            rows.append(MatrixRow(
                id=f"{task}-{i}", task=task, split=split, question=question,  # type: ignore[arg-type]
                choices=["w", "x", "y", "z"], answer="A",
                outcomes={"chem_ace": outcome(task == "chem", "C"), "hist_ace": outcome(task == "hist", "D"),
                          "middling": outcome(i % 2 == 0, "B")}))
    return Matrix(rows)


@pytest.fixture()
def config(tmp_path: Path) -> SymoeConfig:
    return SymoeConfig(home=tmp_path)


def accuracy(samples: list[SampleResult]) -> dict[str, float]:
    by: dict[str, list[bool]] = defaultdict(list)
    for s in samples:
        by[s.method].append(s.correct)
    return {m: 100 * sum(v) / len(v) for m, v in by.items()}


def test_replay_scores_each_single_expert_by_its_recorded_outcomes(config: SymoeConfig) -> None:
    m = topic_matrix()
    samples, stats = replay(config, m, ["single", "best_single", "task_best", "majority"])
    acc = accuracy(samples)
    test = m.select(split="test")
    for expert, expected in test.accuracy().items():
        assert acc[f"single:{expert}"] == pytest.approx(100 * expected)
    assert acc["task_best"] == 100.0  # each task's ace on its own task
    assert acc["best_single"] == pytest.approx(100 * max(test.accuracy().values()))
    assert acc["oracle"] == 100.0
    # majority over recorded letters: the ace and middling agree on 'A' half the time; the
    # other half every expert said a different letter and the heavier expert's answer stands
    assert 50.0 <= acc["majority"] <= 100.0
    assert stats.questions == len(test) and stats.failed == 0
    assert {s.question_id for s in samples} == set(test.ids)


def test_learned_and_cluster_routers_beat_best_single_where_experts_differ_by_topic(config: SymoeConfig) -> None:
    samples, _ = replay(config, topic_matrix(), ["best_single", "task_best", "learned:knn", "learned:logreg",
                                                 "clusters"])
    acc = accuracy(samples)
    assert acc["best_single"] <= 75.0
    for router in ("learned:knn", "learned:logreg", "clusters"):
        assert acc[router] >= 95.0, (router, acc)


def test_without_a_test_split_replay_cross_fits_and_scores_every_question_once(config: SymoeConfig) -> None:
    m = Matrix([r.model_copy(update={"split": "validation"}) for r in topic_matrix().rows])
    samples, _ = replay(config, m, ["learned:knn"], folds=4)
    scored = [s.question_id for s in samples if s.method == "learned:knn"]
    assert sorted(scored) == sorted(m.ids)
    assert accuracy(samples)["learned:knn"] >= 90.0  # each fold routed by a router that never saw it


def test_a_matrix_without_recorded_answers_replays_single_routing(config: SymoeConfig) -> None:
    rows = [r.model_copy(update={"outcomes": {e: RecordedOutcome(correct=o.correct) for e, o in r.outcomes.items()}})
            for r in topic_matrix().rows]
    samples, stats = replay(config, Matrix(rows), ["single:hist_ace", "task_best"])
    acc = accuracy(samples)
    assert acc["single:hist_ace"] == 50.0 and acc["task_best"] == 100.0 and stats.failed == 0


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[SymoeConfig, Profile, list[SampleResult]]:
    config = SymoeConfig(home=tmp_path_factory.mktemp("home"))
    profile, samples, _ = profile_by_replay(config, topic_matrix(), folds=3)
    return config, profile, samples


def test_replay_under_a_given_profile_routes_every_question(built) -> None:
    config, profile, _ = built
    m = topic_matrix()
    samples, _ = replay(config, m, ["task_best"], profile=profile)
    assert len([s for s in samples if s.method == "task_best"]) == len(m)


def test_profile_by_replay_records_the_winning_router(built) -> None:
    config, profile, samples = built
    m = topic_matrix()
    acc = accuracy(samples)
    winner = profile.data["replay"]["winner"]
    assert winner is not None and winner != "oracle"
    assert acc[winner] == max(v for k, v in acc.items() if k != "oracle")
    assert profile.router == as_replayed(winner, replay_config(config, m, "middling"))
    assert set(profile.experts) == {"chem_ace", "hist_ace", "middling"}
    assert all(e.skills for e in profile.examples[:10])  # labelled without an LLM
    # the session's default router is the profile's
    base = replay_config(config, m, "middling")
    with Symoe(base, profile=profile, use_cache=False, memory_budget=0) as symoe:
        assert str(symoe.router()) == profile.router


@pytest.mark.parametrize(("router", "expected"), [
    ("symoe:k1", "symoe:k1@never[skills.source=neighbours]"),
    ("cascade", "cascade@never[skills.source=neighbours]"),
    ("clusters", "clusters@never"),
    ("clusters@auto", "clusters@auto"),
    ("symoe:k1[skills.source=llm]", "symoe:k1@never[skills.source=llm]"),
    ("budget", "budget"), ("learned:mf", "learned:mf"), ("task_best", "task_best"),
])
def test_a_profile_s_router_is_spelt_as_replay_ran_it(config: SymoeConfig, router: str, expected: str) -> None:
    """Replay routes on the labelled neighbours' skills and retrieves nothing; the router a
    profile names says so, so that a live ask decides as its replay did."""
    spelt = as_replayed(router, config)
    assert spelt == expected
    live = MethodSpec.parse(spelt, config)  # the config's own skills.source (llm) and retrieval (auto) yield
    assert live.configured(config).skills.source == ("llm" if "=llm" in expected else
                                                    "neighbours" if live.needs_skills else config.skills.source)
    assert live.retrieval == ("auto" if "@auto" in expected else "never")


def test_a_recorded_expert_asked_live_says_how_to_give_it_an_engine(config: SymoeConfig) -> None:
    base = replay_config(config, topic_matrix(), "middling")
    with Symoe(base, use_cache=False, memory_budget=0) as symoe, pytest.raises(SymoeError) as failed:
        symoe.ask("Which element has atomic number 6?", router="single:middling")
    assert "exists only in an outcome matrix" in str(failed.value) and "backend: openai" in str(failed.value)


def test_eval_matrix_cli_writes_the_reports_and_profile_build_from_matrix(tmp_path: Path, symoe_cli) -> None:
    path = write_matrix(topic_matrix(per_topic=20), tmp_path / "m.jsonl")
    env = {"SYMOE_HOME": str(tmp_path / "home")}
    proc = symoe_cli("eval", "--matrix", str(path), "--routers", "best_single,task_best,learned:knn",
                     "-o", str(tmp_path / "run"), env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert {"best_single", "task_best", "learned:knn", "oracle"} <= set(results["accuracy"])
    assert results["compared_task_best"]["learned:knn"]["reference"] == "task_best"
    assert results["args"]["scored"] == "test"
    proc = symoe_cli("profile", "build", "--from-matrix", str(path), "--folds", "3", "--routers", "task_best,clusters",
                     "-o",
                     str(tmp_path / "p.json"), env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # asked as `symoe ask` asks (no task), task_best is best_single; clusters reads the wording
    # and wins, written as replay ran it (no retrieval)
    assert json.loads((tmp_path / "p.json").read_text())["router"] == "clusters@never"
    assert "exist only in the matrix" in proc.stdout


def test_eval_matrix_replays_a_sub_pool(tmp_path: Path, symoe_cli) -> None:
    """``--experts`` replays the routers on some of the matrix's experts only: without the
    chemistry ace no router can pick it; on history the history ace is the best single expert."""
    path = write_matrix(topic_matrix(per_topic=12), tmp_path / "m.jsonl")
    proc = symoe_cli("eval", "--matrix", str(path), "--tasks", "hist", "--experts", "hist_ace,middling", "--routers",
                     "single,best_single,majority", "--log-samples", "-o", str(tmp_path / "run"),
                     env={"SYMOE_HOME": str(tmp_path / "home")})
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["args"]["experts"] == ["hist_ace", "middling"]
    assert {m for m in results["accuracy"] if m.startswith("single:")} == {"single:hist_ace", "single:middling"}
    samples = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert samples and {e for s in samples for e in s["experts"]} <= {"hist_ace", "middling"}
    best = {s["experts"][0] for s in samples if s["method"] == "best_single"}
    assert best == {"hist_ace"}


@pytest.mark.parametrize(("args", "expected"), [
    (["--matrix", "missing.jsonl"], "cannot read missing.jsonl"),
    (["--matrix", "M", "--experts", "hist_ace,geologist"], "no expert 'geologist'"),
    (["--matrix", "M", "--experts", ","], "--experts names no expert"),
    (["--experts", "hist_ace"], "give --matrix too"),
    (["--matrix", "M", "--tasks", "geology"], "has no task 'geology'"),
    (["--matrix", "M", "--folds", "1"], "--folds"),
    (["--matrix", "M", "--labelling", "llm"], "unknown --labelling 'llm'"),
    (["--matrix", "M", "--skills", "llm"], "unknown --skills 'llm'"),
])
def test_eval_matrix_bad_input_is_one_line(tmp_path: Path, symoe_cli, args: list[str], expected: str) -> None:
    path = write_matrix(topic_matrix(per_topic=4), tmp_path / "m.jsonl")
    args = [str(path) if a == "M" else a for a in args]
    proc = symoe_cli("eval", *args, "-o", str(tmp_path / "run"), env={"SYMOE_HOME": str(tmp_path / "home")})
    one_error_line(proc, expected)


def test_recorded_skills_route_the_scored_questions_on_their_rows_skills(config: SymoeConfig) -> None:
    """``--skills recorded`` (what a live ``skills.source: llm`` run sees) against the default
    neighbours' vote: the same rows, the skills each sample was routed on differ as they should."""
    rows = [r.model_copy(update={"skills": ["chemistry"] if r.task == "chem" else ["history"]})
            for r in topic_matrix(per_topic=12).rows]
    test = [r for r in rows if r.split == "test"]
    for r in test[:3]:  # three test rows whose recorded skills no neighbour would vote
        r.skills = ["law"]
    m = Matrix(rows)
    recorded, _ = replay(config, m, ["symoe:k1"], recorded_skills=True)
    voted, _ = replay(config, m, ["symoe:k1"])
    by_id = {r.id: r.skills for r in test}
    assert {s.question_id: s.skills for s in recorded if s.method == "symoe:k1"} == by_id
    voted = [s for s in voted if s.method == "symoe:k1"]
    assert len(voted) == len(test) and all(s.skills != ["law"] for s in voted)
    assert [s.skills for s in voted if s.question_id == test[5].id] == [by_id[test[5].id]]


def test_routers_shared_out_over_worker_processes_answer_as_in_one(config: SymoeConfig) -> None:
    routers = ["single", "best_single", "clusters", "learned:logreg", "majority"]
    one, _ = replay(config, topic_matrix(per_topic=12), routers, workers=1)
    two, _ = replay(config, topic_matrix(per_topic=12), routers, workers=2)
    assert [(s.method, s.question_id, s.answer, s.correct) for s in one] == \
        [(s.method, s.question_id, s.answer, s.correct) for s in two]


def test_a_named_team_votes_alone(config: SymoeConfig) -> None:
    samples, _ = replay(config, topic_matrix(per_topic=12),
                        ["majority", "majority:chem_ace+hist_ace+middling", "majority:chem_ace+middling"])
    experts = {s.method: set(s.experts) for s in samples if s.method != "oracle"}
    assert experts["majority:chem_ace+middling"] == {"chem_ace", "middling"}
    same = {(s.question_id, s.answer) for s in samples if s.method == "majority"}
    assert same == {(s.question_id, s.answer) for s in samples if s.method == "majority:chem_ace+hist_ace+middling"}


def test_a_recorded_expert_that_runs_live_keeps_its_method_s_formats(config: SymoeConfig) -> None:
    """Replay chooses among the experts live would: the default pool's program expert is
    recorded, yet no router sends it an open question."""
    live = load_config().model_copy(update={"home": config.home})
    m = Matrix([MatrixRow(id=f"q{i}", task="open", split="test" if i % 2 else "validation",  # type: ignore[arg-type]
                          question=f"Who wrote the book number {i}?", answer="someone",
                          outcomes={"qwen-1.5b-program": RecordedOutcome(correct=1.0, answer="someone"),
                                    "qwen-1.5b-direct": RecordedOutcome(correct=0.0, answer="nobody")})
                for i in range(12)])
    samples, _ = replay(live, m, ["best_single", "task_best", "learned:knn"])
    routed = {e for s in samples if s.method != "oracle" for e in s.experts}
    assert routed == {"qwen-1.5b-direct"}


def test_the_default_router_stays_within_its_cost_cap() -> None:
    """The profile's router: best replayed accuracy among routers within ``max_cost_ratio`` x
    best_single's tokens per question (the most accurate wins when it is uncapped); a winner
    that does not beat best_single beyond noise yields to the cheapest router that ties it
    (at most one question behind it)."""
    from agents.backends import Usage
    from eval.replay import matrix_default_router

    def runs(method: str, right: int, tokens: int, n: int = 40) -> list[SampleResult]:
        return [SampleResult(question_id=str(i), task="t", subject="", method=method, correct=i < right, answer=None,
                             gold="", experts=[], usage=Usage(completion_tokens=tokens)) for i in range(n)]

    samples = runs("best_single", 20, 100) + runs("cascade", 32, 400) + runs("clusters", 28, 140)
    names = ["best_single", "cascade", "clusters"]
    assert matrix_default_router(samples, names, max_cost_ratio=None) == "cascade"
    assert matrix_default_router(samples, names) == "clusters"  # 1.5x: cascade's 4x is out
    assert matrix_default_router(samples, names, max_cost_ratio=1.2) == "best_single"
    # +2 of 40 is noise: the cheapest router that ties best_single stands instead (here one
    # cheaper than best_single and 1 question behind it), not the point estimate's winner
    noisy = runs("best_single", 20, 100) + runs("clusters", 22, 140) + runs("learned:mf", 19, 60)
    assert matrix_default_router(noisy, ["best_single", "clusters", "learned:mf"]) == "learned:mf"
    # ... but not one that is worse beyond noise
    worse = runs("best_single", 20, 100) + runs("clusters", 22, 140) + runs("learned:mf", 5, 60)
    assert matrix_default_router(worse, ["best_single", "clusters", "learned:mf"]) == "best_single"
    # ... nor one more than a question behind whose interval still reaches 0 (a small matrix)
    behind = runs("best_single", 20, 100) + runs("clusters", 22, 140) + [
        s.model_copy(update={"correct": 5 <= i < 23}) for i, s in enumerate(runs("learned:mf", 0, 60))]
    assert matrix_default_router(behind, ["best_single", "clusters", "learned:mf"]) == "best_single"
    level = behind[:80] + [s.model_copy(update={"correct": 3 <= i < 22})
                           for i, s in enumerate(runs("learned:mf", 0, 60))]
    assert matrix_default_router(level, ["best_single", "clusters", "learned:mf"]) == "learned:mf"  # 1 behind: a tie


def format_matrix(per_format: int = 40) -> Matrix:
    """One task whose questions are worded alike but come in two answer formats: ``lettered``
    is right on the options and wrong on the numbers, ``numeric`` the reverse (as the direct
    and the program experts of the default pool differ)."""
    rows = []
    for fmt in ("choice", "number"):
        for i in range(per_format):
            split = "test" if i >= per_format // 2 else "validation"
            choices = ["w", "x", "y", "z"] if fmt == "choice" else None
            gold = "A" if fmt == "choice" else "42"

            def outcome(right: bool, gold: str = gold) -> RecordedOutcome:
                return RecordedOutcome(correct=float(right), answer=gold if right else "C",
                                       prompt_tokens=50, completion_tokens=5)
            rows.append(MatrixRow(
                id=f"{fmt}-{i}", task="mixed", split=split,  # type: ignore[arg-type]
                question=f"Which value fits the {WORDS[i % 20]} rule {i}?", choices=choices, answer=gold,
                outcomes={"lettered": outcome(fmt == "choice"), "numeric": outcome(fmt == "number")}))
    return Matrix(rows)


@pytest.mark.parametrize("task_known", [True, False])
def test_routers_read_the_answer_format_when_the_task_says_nothing(config: SymoeConfig, task_known: bool) -> None:
    """Where experts differ by answer format, not by task or wording, ``format_best`` and the
    learned routers that read the format (a one-hot beside the embedding) send options to the
    expert that states letters and numbers to the one that computes them, with or without the
    task (a ``symoe ask`` has none); best_single and task_best are right half the time."""
    m = format_matrix()
    assert m.question_formats()[:1] == ["choice"] and m.question_formats()[-1:] == ["number"]
    samples, _ = replay(config, m, ["best_single", "task_best", "format_best", "learned:logreg", "learned:mf"],
                        task_known=task_known)
    acc = accuracy(samples)
    assert acc["best_single"] == acc["task_best"] == 50.0
    for router in ("format_best", "learned:logreg", "learned:mf"):
        assert acc[router] >= 95.0, (router, acc)


def test_an_expert_recorded_as_failed_makes_a_router_fall_back_as_live(config: SymoeConfig) -> None:
    """Live, a router that falls back (task_best, format_best) asks its next expert when the
    first fails (a program that crashed); the matrix records the failure (``error``) and replay
    does the same: the backup's recorded answer stands, its tokens added to the failed try's.
    An expert that answered nothing readable, without failing, leaves the answer empty (not the
    replay's placeholder text) and no fallback."""
    rows = topic_matrix(per_topic=12).rows
    test = [r for r in rows if r.split == "test" and r.task == "chem"]
    crashed, silent = test[0], test[1]
    crashed.outcomes["chem_ace"] = RecordedOutcome(correct=0.0, error="program: error: ValueError",
                                                   prompt_tokens=50, completion_tokens=30)
    silent.outcomes["chem_ace"] = RecordedOutcome(correct=0.0, prompt_tokens=50, completion_tokens=30)
    samples, _ = replay(config, Matrix(rows), ["task_best", "single:chem_ace"])
    got = {(s.method, s.question_id): s for s in samples}
    fell = got["task_best", crashed.id]
    assert fell.fallback in ("hist_ace", "middling") and fell.experts == ["chem_ace"]
    assert fell.answer == crashed.outcomes[fell.fallback].answer
    assert fell.correct == (crashed.outcomes[fell.fallback].correct >= 0.5)
    assert fell.usage.completion_tokens == 30 + 5
    for method in ("task_best", "single:chem_ace"):
        assert got[method, silent.id].answer is None and got[method, silent.id].fallback is None
    assert got["single:chem_ace", crashed.id].answer is None and not got["single:chem_ace", crashed.id].correct


def test_a_logged_response_s_failure_is_recorded_in_the_matrix() -> None:
    """``symoe matrix build`` and ``matrix import symoe`` record why an expert failed (its
    method's failure, else its model's error), so replay can fall back where live did."""
    base = {"correct": False, "answer": None, "usage": {"prompt_tokens": 9, "completion_tokens": 3}}
    program = {"generation": {"text": "```python", "error": None}, "failure": "program: timed out after 10 s"}
    model = {"generation": {"text": "", "error": "llama.cpp: context overflow"}, "failure": None}
    fine = {"generation": {"text": "Answer: B", "error": None}, "failure": None, "margin": 1.5}
    assert sample_outcome({**base, "responses": [program]}).error == "program: timed out after 10 s"
    assert sample_outcome({**base, "responses": [model]}).error == "llama.cpp: context overflow"
    answered = sample_outcome({**base, "answer": "B", "responses": [fine]})
    assert answered.error is None and answered.margin == 1.5
    assert "error" not in answered.model_dump(exclude_none=True)  # older matrices' rows read and write alike


def test_eval_matrix_split_keeps_that_split_s_questions(tmp_path: Path, symoe_cli) -> None:
    """``--split`` with ``--matrix`` scores that split only (under ``--profile``, as a live run
    of the split would; without one, cross-fitted within it)."""
    path = write_matrix(topic_matrix(per_topic=12), tmp_path / "m.jsonl")
    env = {"SYMOE_HOME": str(tmp_path / "home")}
    proc = symoe_cli("eval", "--matrix", str(path), "--split", "validation", "--routers", "best_single", "--folds",
                     "3", "-o", str(tmp_path / "run"), env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["args"]["split"] == "validation" and results["args"]["scored"] == "cross-fitted (3 folds)"
    assert results["stats"]["questions"] == 12
    one_error_line(symoe_cli("eval", "--matrix", str(path), "--split", "train", "-o", str(tmp_path / "r2"), env=env),
                   "unknown split 'train'")


def test_the_profile_s_router_is_picked_as_symoe_ask_sees_a_question(config: SymoeConfig) -> None:
    """``symoe ask`` gives no task, so the replay that picks the profile's router hides it: a
    router that needs the task answers as best_single there and cannot win by it; clusters,
    which reads the wording, routes both topics right. ``task_known=True`` picks as a
    benchmark run sees questions."""
    profile, samples, _ = profile_by_replay(config, topic_matrix(), folds=3)
    acc = accuracy(samples)
    assert profile.data["replay"]["task_known"] is False
    assert acc["task_best"] == acc["best_single"] < 80.0 and acc["clusters"] >= 95.0
    assert profile.data["replay"]["winner"] != "task_best"
    _, known, _ = profile_by_replay(config, topic_matrix(), folds=3, task_known=True)
    assert accuracy(known)["task_best"] == 100.0
