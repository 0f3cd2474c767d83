"""Methods: names parsed once into MethodSpec, expansion, and the assignments they make (no model runs)."""

from __future__ import annotations

from collections import Counter

import pytest

from agents.errors import SymoeError
from orchestrator.config import SymoeConfig
from orchestrator.methods import MethodContext, MethodSpec, expand_methods
from orchestrator.profiles import ExpertProfile, Profile, SkillCount
from orchestrator.records import Query


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


def assign(ctx: MethodContext, name: str, q: Query, skills: list[str] | None = None):
    spec = MethodSpec.parse(name, ctx.config)
    return spec.impl.assign(ctx, q, skills or [], spec.variant)


def test_expand_methods_names_every_single_expert_and_retrieval_modes() -> None:
    config = SymoeConfig()
    names = [str(m) for m in expand_methods("single,best_single,symoe", config, retrieval=["never", "auto"])]
    assert names[: len(config.routing_pool)] == [f"single:{e}" for e in config.routing_pool]
    assert names[-2:] == ["symoe@never", "symoe@auto"]


@pytest.mark.parametrize("name", ["symoe", "symoe@never", "symoe:k3-distinct@always", "single:qwen-coder-0.5b",
                                  "moa@auto", "best_single"])
def test_method_names_are_parsed_once_and_printed_back(name: str) -> None:
    spec = MethodSpec.parse(name, SymoeConfig())
    assert str(spec) == name
    assert spec.needs_skills == (spec.base == "symoe") and spec.impl.routed == (spec.base == "symoe")


def test_retrieval_follows_the_config_for_routed_methods_only() -> None:
    config = SymoeConfig(retrieval={"mode": "always"})
    assert MethodSpec.parse("symoe", config).retrieval == "always"
    assert MethodSpec.parse("symoe@never", config).retrieval == "never"
    assert MethodSpec.parse("moa", config).retrieval == "never" and not MethodSpec.parse("moa", config).retrieves


@pytest.mark.parametrize("spec", ["nonsense", "single:nobody", "symoe:k0", "symoe:k17", "symoe:fast",
                                  "symoe@sometimes", "moa:x", ""])
def test_unknown_methods_are_refused_in_one_line(spec: str) -> None:
    with pytest.raises(SymoeError) as err:
        expand_methods(spec, SymoeConfig())
    assert "\n" not in str(err.value)


def test_a_near_miss_gets_a_suggestion() -> None:
    with pytest.raises(SymoeError, match="did you mean 'majority'"):
        MethodSpec.parse("majorty", SymoeConfig())


def test_symoe_variants_fix_k_and_distinctness(ctx: MethodContext) -> None:
    q = Query(id="q1", question="x", task="gsm8k")
    fixed = assign(ctx, "symoe:k3", q, ["algebra"])
    distinct = assign(ctx, "symoe:k3-distinct", q, ["algebra"])
    assert len(fixed.slots) == 3
    # only a and b score positive on algebra: distinct-only recruits at most those two, once each
    assert sorted(s.expert for s in distinct.slots) == ["a", "b"]
    assert all(s.temperature == 0.0 for s in distinct.slots)
    # with samples allowed, a repeated expert is a sampled slot, never a second greedy call
    per = Counter((s.expert, s.temperature == 0.0) for s in fixed.slots)
    assert all(n == 1 for (_, greedy), n in per.items() if greedy)
    assert assign(ctx, "symoe:k3", q, ["algebra"]) == fixed  # deterministic under the seed
    assert fixed.recruitment is not None and fixed.recruitment.k == 3


def test_best_single_uses_validation_accuracy(ctx: MethodContext) -> None:
    plan = assign(ctx, "best_single", Query(id="q2", question="x", task="gsm8k"))
    assert [s.expert for s in plan.slots] == ["a"]


def test_format_best_takes_the_cheapest_expert_within_a_standard_error_of_the_best_on_the_format() -> None:
    """``ranked_on_format``: on validation questions of the query's format, the cheapest
    expert whose accuracy is within one standard error of the best answers first (a
    two-question difference in fifty is noise); a clearly better expert keeps its place; a
    format the profile never graded falls back to overall accuracy."""
    from orchestrator.methods import ranked_on_format
    from orchestrator.profiles import ExpertProfile, Profile, ProfiledExample, SkillCount

    def profile(dear_right: int) -> Profile:
        examples = [ProfiledExample(question=f"q{i}", task="t", format="number",
                                    correct={"dear": i < dear_right, "cheap": i < 20, "poor": i < 5},
                                    tokens={"dear": 400, "cheap": 100, "poor": 10})
                    for i in range(50)]
        return Profile(pool={}, annotator="dear", examples=examples,
                       experts={e: ExpertProfile(tasks={"t": SkillCount(right=r, wrong=50 - r)})
                                for e, r in (("dear", dear_right), ("cheap", 20), ("poor", 5))})

    assert ranked_on_format(profile(22), "number") == ["cheap", "dear", "poor"]  # 44% vs 40%: a tie, cheaper wins
    assert ranked_on_format(profile(40), "number") == ["dear", "cheap", "poor"]  # 80% vs 40%: the best stands
    assert ranked_on_format(profile(22), "choice") == ["dear", "cheap", "poor"]  # no choice graded: overall
