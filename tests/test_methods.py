"""Evaluation methods: names, expansion, and the plans they make (no model runs)."""

from __future__ import annotations

from collections import Counter

import pytest

from agents.errors import SymoeError
from eval.methods import EvalQuestion, MethodContext, expand_methods, get_method, retrieval_mode
from orchestrator.config import SymoeConfig
from orchestrator.profiles import ExpertProfile, Profile, SkillCount


def make_profile() -> Profile:
    strong = ExpertProfile(skills={"algebra": SkillCount(right=20, wrong=2), "biology": SkillCount(right=9, wrong=3)},
                           tasks={"gsm8k": SkillCount(right=20, wrong=2)})
    mid = ExpertProfile(skills={"algebra": SkillCount(right=12, wrong=6), "biology": SkillCount(right=8, wrong=2)},
                        tasks={"gsm8k": SkillCount(right=12, wrong=6)})
    weak = ExpertProfile(skills={"algebra": SkillCount(right=3, wrong=10)},
                         tasks={"gsm8k": SkillCount(right=3, wrong=10)})
    return Profile(pool={"a": "x", "b": "y", "c": "z"}, annotator="a", experts={"a": strong, "b": mid, "c": weak},
                   aggregators={"a": strong, "b": mid})


@pytest.fixture
def ctx() -> MethodContext:
    config = SymoeConfig()
    return MethodContext(config=config, profile=make_profile(), seed=3)


def test_expand_methods_names_every_single_expert_and_retrieval_modes() -> None:
    config = SymoeConfig()
    names = expand_methods("single,best_single,symoe", config, retrieval=["never", "auto"])
    assert names[: len(config.experts)] == [f"single:{e}" for e in config.experts]
    assert names[-2:] == ["symoe@never", "symoe@auto"]
    assert retrieval_mode("symoe@auto") == "auto" and retrieval_mode("moa") is None


@pytest.mark.parametrize("spec", ["nonsense", "single:nobody", "symoe:k0", "symoe:fast", "symoe@sometimes"])
def test_unknown_methods_are_refused_in_one_line(spec: str) -> None:
    with pytest.raises(SymoeError) as err:
        expand_methods(spec, SymoeConfig())
    assert "\n" not in str(err.value)


def test_symoe_variants_fix_k_and_distinctness(ctx: MethodContext) -> None:
    q = EvalQuestion(id="q1", task="gsm8k", skills=["algebra"])
    fixed = get_method("symoe:k3")(ctx, q)
    distinct = get_method("symoe:k3-distinct")(ctx, q)
    assert len(fixed.slots) == 3
    # only a and b score positive on algebra: distinct-only recruits at most those two, once each
    assert sorted(s.expert for s in distinct.slots) == ["a", "b"]
    assert all(s.temperature == 0.0 for s in distinct.slots)
    # with samples allowed, a repeated expert is a sampled slot, never a second greedy call
    per = Counter((s.expert, s.temperature == 0.0) for s in fixed.slots)
    assert all(n == 1 for (_, greedy), n in per.items() if greedy)
    assert get_method("symoe:k3")(ctx, q) == fixed  # deterministic under the seed


def test_best_single_uses_validation_accuracy(ctx: MethodContext) -> None:
    plan = get_method("best_single")(ctx, EvalQuestion(id="q2", task="gsm8k"))
    assert [s.expert for s in plan.slots] == ["a"]
