"""Replay speed (issue 23) without a second copy of any rule: usages summed field by field
give what ``+`` gives, a cluster build's recorded answers, acceptances and votes read once
give what reading them each time gives, the answer stage builds a request that several
routers' plans ask once (and hashes it once), a replay pauses the garbage collector only
while it runs, and cross-fitted splits shared out whole over several processes answer as one
process does, in the same order. No LLM (the shipped
MiniLM embeds the small matrices)."""

from __future__ import annotations

import gc
from pathlib import Path

from test_replay import topic_matrix

from agents.backends import Usage
from agents.pool import ExpertSpec
from eval.replay import SplitTime, collector_paused, replay, split_processes, split_shares
from orchestrator.clusters import ReplayMemo, RoutingOption, recorded_answer, vote_correct
from orchestrator.config import SymoeConfig
from orchestrator.graph import run
from orchestrator.methods import MethodSpec
from orchestrator.pipeline import Pipeline
from orchestrator.profiles import ExpertProfile, Profile, ProfiledExample, SkillCount
from orchestrator.records import Query


def test_usage_total_is_the_sum_by_plus() -> None:
    usages = [Usage(prompt_tokens=p, completion_tokens=c, seconds=s)
              for p, c, s in [(3, 4, 0.1), (0, 7, 0.2), (11, 0, 0.3), (5, 5, 1e-9)]]
    by_plus = Usage()
    for u in usages:
        by_plus = by_plus + u
    assert Usage.total(usages) == by_plus  # seconds added in the same order: the same float
    assert Usage.total([]) == Usage()


def test_recorded_answers_read_through_a_memo_vote_as_without_it() -> None:
    examples = [ProfiledExample(question=f"q{i}", task="t", correct={"a": i % 2 == 0, "b": i % 3 == 0, "c": True},
                                answers={"a": "A" if i % 2 == 0 else "B", "b": "A" if i % 3 == 0 else "C",
                                         "c": "A" if i % 5 else None},
                                margins={"a": 0.5 * i}, tokens={"a": 1, "b": 2, "c": 3})
                for i in range(30)]
    memo = ReplayMemo()
    for x in examples:
        for weights in ({}, {"b": 0.9}, {"a": 0.2, "c": 0.1}, {"a": 0.2, "b": 0.2, "c": 0.2}):
            for team in (["a", "b", "c"], ["c", "b"], ["a"]):
                assert vote_correct(x, team, weights, memo) == vote_correct(x, team, weights)
        for first, margin in (("a", 2.0), ("a", 0.0), ("c", 1.0)):
            sure = RoutingOption(experts=["b", "c"], accuracy=0, tokens=0, first=first, accept_margin=margin)
            assert sure.replay(x, {"b": 0.5}, memo) == sure.replay(x, {"b": 0.5})
            assert sure.sure(x, memo) == sure.sure(x)
    assert recorded_answer(examples[0], "a", memo) is recorded_answer(examples[0], "a", memo)  # built once
    # a vote is counted once per voters, weights and stated answers, whatever the example
    assert len(memo.votes) < 4 * 3 * len(examples) and len(memo.answers) <= 3 * len(examples)


def test_a_replay_pauses_the_collector_and_puts_it_back() -> None:
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()  # a caller's own choice stands
    finally:
        gc.enable()


def test_routers_asking_the_same_slot_share_one_request(tmp_path: Path) -> None:
    experts = {e: ExpertSpec(name=e, backend="fake", method="standard") for e in ("x", "y")}
    config = SymoeConfig(home=tmp_path, experts=experts, default_expert="x")
    profile = Profile(pool={}, annotator="x", experts={e: ExpertProfile(tasks={"t": SkillCount(right=1)})
                                                       for e in experts})
    pipeline = Pipeline(config, cache=None, profile=profile)
    keys = []
    pipeline.job_key = lambda job, key=pipeline.job_key: keys.append(job.request) or key(job)  # type: ignore[method-assign]
    queries = [Query(question="What is 2 + 3?", id="q1"), Query(question="Name a colour.", id="q2")]
    specs = [MethodSpec.parse(r, config) for r in ("single:x", "majority:x+y", "single:y")]
    plans = run(pipeline, queries, specs, seed=0)
    by = {(str(p.method), p.query.id): p for p in plans}
    for q in ("q1", "q2"):
        single, vote = by["single:x", q], by["majority:x+y", q]
        x_vote = next(j for j in vote.answer_jobs if j.model == "x")
        assert single.answer_jobs[0].request is x_vote.request  # built once, asked by both routers
        assert single.answer_jobs[0] is not x_vote  # each plan keeps its own job
        assert single.answer_jobs[0].generation == x_vote.generation
    # the first turns hashed once each: two per query (x's, shared by two routers, and y's)
    assert sum(len(r.messages) == 2 for r in keys) == 4


def test_splits_are_shared_out_whole_the_first_process_taking_the_most() -> None:
    # 5 folds on 2 cores: 3 processes (2, 2, 1), so no core runs a last fold alone
    assert [split_processes(5, 2), split_processes(4, 2), split_processes(3, 2), split_processes(2, 2)] == [3, 2, 3, 2]
    assert [split_processes(5, 1), split_processes(1, 4), split_processes(10, 4), split_processes(5, 8)] == [1, 1, 5, 5]
    assert split_shares(5, 2) == [(0, 3), (3, 5)]
    assert split_shares(5, 3) == [(0, 2), (2, 4), (4, 5)]
    assert split_shares(2, 2) == [(0, 1), (1, 2)]
    assert split_shares(4, 1) == [(0, 4)]


def test_cross_fitted_splits_over_several_processes_answer_as_one_in_the_same_order(tmp_path: Path) -> None:
    config = SymoeConfig(home=tmp_path)
    matrix = topic_matrix(per_topic=10, test_share=0.0)  # every row validation: cross-fitted folds
    routers = ["single", "best_single", "clusters", "learned:knn", "majority"]
    alone: list[SplitTime] = []
    shared: list[SplitTime] = []
    one, one_stats = replay(config, matrix, routers, folds=3, workers=1, timeline=alone)
    two, two_stats = replay(config, matrix, routers, folds=3, workers=2, timeline=shared)  # 3 processes
    assert [(s.method, s.question_id, s.answer, s.correct, s.usage) for s in one] == \
        [(s.method, s.question_id, s.answer, s.correct, s.usage) for s in two]
    assert (one_stats.generations_needed, one_stats.failed) == (two_stats.generations_needed, two_stats.failed)
    # every split replayed once, by this process (0) or by one of the two workers (1, 2: each
    # takes the next fold when free, so one may take both)
    assert [(t.process, t.split) for t in alone] == [(0, 1), (0, 2), (0, 3)]
    assert sorted(t.split for t in shared) == [1, 2, 3] and (shared[0].process, shared[0].split) == (0, 1)
    assert {t.process for t in shared} <= {0, 1, 2}
