"""Recruitment properties over random profiles (hypothesis)."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.config import RecruitConfig
from orchestrator.profiles import ExpertProfile, SkillCount
from orchestrator.recruit import adaptive_k, draw_slots, recruit, recruit_weights

SKILLS = ["algebra", "biology", "law", "history", "physics"]
EXPERTS = ["e1", "e2", "e3", "e4"]

counts = st.builds(lambda r, w: SkillCount(right=r, wrong=w), st.integers(0, 30), st.integers(0, 30))
profiles_st = st.fixed_dictionaries(
    {e: st.builds(ExpertProfile, skills=st.dictionaries(st.sampled_from(SKILLS), counts, min_size=1))
     for e in EXPERTS})
skills_st = st.lists(st.sampled_from(SKILLS), min_size=0, max_size=3, unique=True)


@settings(max_examples=200, deadline=None)
@given(profiles_st, skills_st, st.integers(0, 10_000), st.booleans())
def test_deterministic_under_seed(profiles, skills, seed, allow):
    config = RecruitConfig(allow_samples=allow)
    assert recruit(skills, profiles, config, seed) == recruit(skills, profiles, config, seed)


@settings(max_examples=200, deadline=None)
@given(profiles_st, skills_st, st.integers(0, 10_000), st.booleans(), st.integers(1, 6))
def test_never_recruits_zero_weight_and_no_repeated_greedy(profiles, skills, seed, allow, k):
    config = RecruitConfig(allow_samples=allow)
    rec = recruit(skills, profiles, config, seed, k=k)
    positive = [m for m, w in rec.weights.items() if w > 0]
    assert positive, "some expert always has positive weight"
    for slot in rec.slots:
        assert rec.weights[slot.expert] > 0
    per_expert = Counter(s.expert for s in rec.slots)
    for expert, n in per_expert.items():
        mine = [s for s in rec.slots if s.expert == expert]
        assert sorted(s.sample for s in mine) == list(range(n))
        greedy = [s for s in mine if s.temperature == 0]
        assert len(greedy) == 1, "exactly one greedy call per expert"
        assert len({s.seed for s in mine}) == n, "extra samples use distinct seeds"
        assert all(s.temperature > 0 for s in mine if s.sample > 0)
    if not allow:
        assert len(per_expert) == len(rec.slots) == min(k, len(positive))
    assert sum(r.slots for r in rec.recruits) == len(rec.slots)


@settings(max_examples=30, deadline=None)
@given(profiles_st, skills_st)
def test_slot_frequencies_follow_weights(profiles, skills):
    weights, *_ = recruit_weights(skills, profiles, 0.5)
    draws = Counter()
    trials = 3000
    for seed in range(trials):
        for slot in draw_slots(weights, 1, seed, allow_samples=True, sample_temperature=0.7):
            draws[slot.expert] += 1
    for expert, w in weights.items():
        assert abs(draws[expert] / trials - w) < 0.04, (expert, draws[expert] / trials, w)


def test_weights_follow_the_profile():
    strong = ExpertProfile(skills={"algebra": SkillCount(right=20, wrong=2), "law": SkillCount(right=1, wrong=9)})
    lawyer = ExpertProfile(skills={"algebra": SkillCount(right=2, wrong=18), "law": SkillCount(right=9, wrong=1)})
    weights, local, _, _ = recruit_weights(["algebra"], {"strong": strong, "lawyer": lawyer}, 0.5)
    assert weights["strong"] == 1.0 and weights["lawyer"] == 0.0
    weights, *_ = recruit_weights(["law"], {"strong": strong, "lawyer": lawyer}, 0.5)
    assert weights["lawyer"] > 0.99


def test_no_known_skill_falls_back_to_global_strength():
    a = ExpertProfile(skills={"algebra": SkillCount(right=10, wrong=0)})
    b = ExpertProfile(skills={"algebra": SkillCount(right=2, wrong=8)})
    weights, _, strengths, reason = recruit_weights(["astrology"], {"a": a, "b": b}, 0.5)
    assert weights == strengths and weights["a"] > weights["b"] > 0
    assert "global" in reason


def test_no_positive_score_recruits_only_the_least_wrong():
    """None scores positive on the skills: only the experts of the highest local score are
    drawn (by global strength), not every expert shifted positive (a costly team no better
    than its best member)."""
    direct = ExpertProfile(skills={"history": SkillCount(right=1, wrong=2), "algebra": SkillCount(right=1, wrong=5)})
    program = ExpertProfile(skills={"history": SkillCount(right=0, wrong=3), "algebra": SkillCount(right=9, wrong=1)})
    cot = ExpertProfile(skills={"history": SkillCount(right=1, wrong=2), "algebra": SkillCount(right=5, wrong=1)})
    profiles = {"direct": direct, "program": program, "cot": cot}
    weights, local, strengths, reason = recruit_weights(["history"], profiles, 0.5)
    assert local == {"direct": -1.0, "program": -3.0, "cot": -1.0}
    assert weights["program"] == 0.0
    assert weights["direct"] > 0 and weights["cot"] > 0
    assert weights["cot"] / weights["direct"] == pytest.approx(strengths["cot"] / strengths["direct"])
    assert "least wrong" in reason and "-1" in reason
    slots = recruit(["history"], profiles, RecruitConfig(k=3, adaptive_k=False, allow_samples=False), seed=0).slots
    assert "program" not in {s.expert for s in slots}


def test_adaptive_k():
    config = RecruitConfig(min_k=1, max_k=4, dominance=0.8)
    assert adaptive_k({"a": 0.9, "b": 0.1}, config) == 1
    assert adaptive_k({"a": 0.25, "b": 0.25, "c": 0.25, "d": 0.25}, config) == 4
    assert adaptive_k({"a": 0.5, "b": 0.5, "c": 0.0}, config) == 2
    assert adaptive_k({"a": 0.9, "b": 0.1}, RecruitConfig(adaptive_k=False, k=3)) == 3
