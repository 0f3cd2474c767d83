"""Control flow of the query graph with scripted (fake) experts: no model runs here.

These tests check routing logic and degradation only; real-model behaviour is tested in
test_routing_real.py.
"""

from __future__ import annotations

import pytest

from agents.errors import SymoeError
from agents.pool import ExpertSpec
from agents.runtime import LoadedPool
from orchestrator.config import SymoeConfig
from orchestrator.graph import Router
from orchestrator.profiles import ExpertProfile, Profile, SkillCount


class WordMatcher:
    """Stands in for the embedding matcher: keywords are their own skills."""

    def canonical(self, keywords):
        return list(dict.fromkeys(keywords)), []


def make_router(tmp_path, experts: dict[str, dict], scores: dict[str, int], k: int = 3) -> Router:
    specs = {name: ExpertSpec(name=name, backend="fake", params=params) for name, params in experts.items()}
    config = SymoeConfig(home=tmp_path, experts=specs, default_expert=next(iter(specs)),
                         router={"k": k, "adaptive_k": False, "allow_samples": False})
    profile = Profile(pool={}, annotator=config.default_expert,
                      experts={n: ExpertProfile(skills={"arithmetic": SkillCount(right=max(s, 0), wrong=max(-s, 0))},
                                                tasks={"t": SkillCount(right=max(s, 0), wrong=max(-s, 0))})
                               for n, s in scores.items()})
    router = Router(config, LoadedPool(config.experts, tmp_path), profile)
    router._matcher = WordMatcher()  # type: ignore[assignment]
    return router


ANNOTATE = {"Which skills": "Keywords: arithmetic, multiplication"}


def test_agreeing_experts_skip_aggregation(tmp_path):
    experts = {n: {"answers": {**ANNOTATE, "17 * 23": "17*23 = 391\nAnswer: 391"}} for n in ("a", "b", "c")}
    router = make_router(tmp_path, experts, {"a": 5, "b": 4, "c": 3})
    state = router.run("What is 17 * 23?")
    assert state["annotation"].skills == ["arithmetic", "multiplication"]
    assert state["fmt"] == "number"
    assert state["answer"] == "391"
    assert state["aggregated"] is False and state["aggregator"] is None
    assert sorted(a.expert for a in state["expert_answers"]) == ["a", "b", "c"]


def test_disagreement_is_synthesised_by_the_best_aggregator(tmp_path):
    experts = {
        "a": {"answers": {**ANNOTATE, "Responses from other models": "Answer: 391", "17 * 23": "Answer: 391"}},
        "b": {"answers": {**ANNOTATE, "Responses from other models": "Answer: 7", "17 * 23": "Answer: 381"}},
        "c": {"answers": {**ANNOTATE, "Responses from other models": "Answer: 8", "17 * 23": "Answer: 411"}},
    }
    router = make_router(tmp_path, experts, {"a": 5, "b": 4, "c": 3})
    state = router.run("What is 17 * 23?")
    assert state["aggregated"] and state["aggregator"] == "a"
    assert state["answer"] == "391"


def test_a_failing_expert_degrades_but_does_not_lose_the_query(tmp_path):
    experts = {
        "a": {"answers": {**ANNOTATE, "17 * 23": "Answer: 391"}},
        "b": {"answers": ANNOTATE, "fail": True},
        "c": {"answers": {**ANNOTATE, "17 * 23": "Answer: 391"}},
    }
    router = make_router(tmp_path, experts, {"a": 5, "b": 4, "c": 3})
    state = router.run("What is 17 * 23?")
    errors = [a for a in state["expert_answers"] if a.error]
    assert [a.expert for a in errors] == ["b"]
    assert state["answer"] == "391"


def test_all_recruited_fail_then_default_expert_answers(tmp_path):
    experts = {
        "d": {"answers": {**ANNOTATE, "17 * 23": "Answer: 391"}},
        "b": {"fail": True},
        "c": {"fail_load": True},
    }
    router = make_router(tmp_path, experts, {"d": -50, "b": 9, "c": 9}, k=2)
    state = router.run("What is 17 * 23?")
    assert state["answer"] == "391"
    assert state["expert_answers"][-1].expert == "d"


def test_everything_failing_is_one_clear_error(tmp_path):
    experts = {"a": {"answers": ANNOTATE, "fail": True}, "b": {"fail": True}}
    router = make_router(tmp_path, experts, {"a": 1, "b": 1}, k=2)
    with pytest.raises(SymoeError, match="every recruited expert failed"):
        router.run("What is 17 * 23?")


def test_aggregator_failure_falls_back_to_majority(tmp_path):
    experts = {
        "a": {"answers": {**ANNOTATE, "17 * 23": "Answer: 391"}},
        "b": {"answers": {**ANNOTATE, "17 * 23": "Answer: 391"}},
        "c": {"answers": {**ANNOTATE, "17 * 23": "Answer: 7"}},
        "agg": {"answers": ANNOTATE, "fail": True},
    }
    router = make_router(tmp_path, experts, {"a": 5, "b": 5, "c": 5, "agg": -9})
    router.profile.aggregators = {"agg": ExpertProfile(tasks={"t": SkillCount(right=9)})}
    state = router.run("What is 17 * 23?")
    assert state["aggregated"] is False
    assert state["answer"] == "391"
