"""Control flow of the query pipeline with scripted (fake) experts: no model runs here.

These tests check routing logic and degradation only; real-model behaviour is tested in
test_routing_real.py and test_parity.py.
"""

from __future__ import annotations

from agents.pool import ExpertSpec
from orchestrator.config import SymoeConfig
from orchestrator.graph import run
from orchestrator.methods import MethodSpec
from orchestrator.pipeline import Pipeline, Plan
from orchestrator.profiles import ExpertProfile, Profile, SkillCount
from orchestrator.records import Query


class WordMatcher:
    """Stands in for the embedding matcher: keywords are their own skills."""

    def canonical(self, keywords):
        return list(dict.fromkeys(keywords)), []


def make_pipeline(tmp_path, experts: dict[str, dict], scores: dict[str, int], k: int = 3) -> Pipeline:
    specs = {name: ExpertSpec(name=name, backend="fake", params=params) for name, params in experts.items()}
    config = SymoeConfig(home=tmp_path, experts=specs, default_expert=next(iter(specs)),
                         recruit={"k": k, "adaptive_k": False, "allow_samples": False}, retrieval={"mode": "never"})
    profile = Profile(pool={}, annotator=config.default_expert,
                      experts={n: ExpertProfile(skills={"arithmetic": SkillCount(right=max(s, 0), wrong=max(-s, 0))},
                                                tasks={"t": SkillCount(right=max(s, 0), wrong=max(-s, 0))})
                               for n, s in scores.items()})
    ctx = Pipeline(config, profile=profile)
    ctx._matcher = WordMatcher()  # type: ignore[assignment]
    return ctx


def ask(ctx: Pipeline, question: str) -> Plan:
    return run(ctx, [Query(question=question)], [MethodSpec.parse("symoe", ctx.config)])[0]


ANNOTATE = {"Which skills": "Keywords: arithmetic, multiplication"}


def test_agreeing_experts_skip_aggregation(tmp_path):
    experts = {n: {"answers": {**ANNOTATE, "17 * 23": "17*23 = 391\nAnswer: 391"}} for n in ("a", "b", "c")}
    ctx = make_pipeline(tmp_path, experts, {"a": 5, "b": 4, "c": 3})
    state = ask(ctx, "What is 17 * 23?")
    assert state.skills == ["arithmetic", "multiplication"]
    assert state.format == "number"
    assert state.answer == "391"
    assert state.aggregated is False and state.aggregator is None
    assert sorted(a.expert for a in state.answers) == ["a", "b", "c"]


def test_disagreement_is_synthesised_by_the_best_aggregator(tmp_path):
    experts = {
        "a": {"answers": {**ANNOTATE, "Responses from other models": "Answer: 391", "17 * 23": "Answer: 391"}},
        "b": {"answers": {**ANNOTATE, "Responses from other models": "Answer: 7", "17 * 23": "Answer: 381"}},
        "c": {"answers": {**ANNOTATE, "Responses from other models": "Answer: 8", "17 * 23": "Answer: 411"}},
    }
    ctx = make_pipeline(tmp_path, experts, {"a": 5, "b": 4, "c": 3})
    state = ask(ctx, "What is 17 * 23?")
    assert state.aggregated and state.aggregator == "a"
    assert state.answer == "391"


def test_a_failing_expert_degrades_but_does_not_lose_the_query(tmp_path):
    experts = {
        "a": {"answers": {**ANNOTATE, "17 * 23": "Answer: 391"}},
        "b": {"answers": ANNOTATE, "fail": True},
        "c": {"answers": {**ANNOTATE, "17 * 23": "Answer: 391"}},
    }
    ctx = make_pipeline(tmp_path, experts, {"a": 5, "b": 4, "c": 3})
    state = ask(ctx, "What is 17 * 23?")
    errors = [a for a in state.answers if a.error]
    assert [a.expert for a in errors] == ["b"]
    assert state.answer == "391"


def test_all_recruited_fail_then_default_expert_answers(tmp_path):
    experts = {
        "d": {"answers": {**ANNOTATE, "17 * 23": "Answer: 391"}},
        "b": {"fail": True},
        "c": {"fail_load": True},
    }
    ctx = make_pipeline(tmp_path, experts, {"d": -50, "b": 9, "c": 9}, k=2)
    state = ask(ctx, "What is 17 * 23?")
    assert state.answer == "391"
    assert state.answers[-1].expert == "d" and state.answers[-1].fallback and state.fallback == "d"


def test_everything_failing_is_recorded_on_the_plan(tmp_path):
    experts = {"a": {"answers": ANNOTATE, "fail": True}, "b": {"fail": True}}
    ctx = make_pipeline(tmp_path, experts, {"a": 1, "b": 1}, k=2)
    state = ask(ctx, "What is 17 * 23?")
    assert state.error is not None and "every recruited expert failed" in state.error
    assert state.answer is None


def test_aggregator_failure_falls_back_to_majority(tmp_path):
    experts = {
        "a": {"answers": {**ANNOTATE, "17 * 23": "Answer: 391"}},
        "b": {"answers": {**ANNOTATE, "17 * 23": "Answer: 391"}},
        "c": {"answers": {**ANNOTATE, "17 * 23": "Answer: 7"}},
        "agg": {"answers": ANNOTATE, "fail": True},
    }
    ctx = make_pipeline(tmp_path, experts, {"a": 5, "b": 5, "c": 5, "agg": -9})
    ctx.profile.aggregators = {"agg": ExpertProfile(tasks={"t": SkillCount(right=9)})}
    state = ask(ctx, "What is 17 * 23?")
    assert state.aggregated is False
    assert state.answer == "391"


def test_the_answer_record_validates(tmp_path):
    """``ask_result`` constructs the record from the plan's typed parts without validating them
    again: what it makes must be what validation would make, for an agreeing team, a
    synthesised disagreement and a failing expert."""
    from orchestrator.records import AskResult
    from orchestrator.session import ask_result

    cases = [
        ({n: {"answers": {**ANNOTATE, "17 * 23": "Answer: 391"}} for n in ("a", "b")}, "What is 17 * 23?"),
        ({"a": {"answers": {**ANNOTATE, "Responses from other models": "Answer: 391", "17 * 23": "Answer: 391"}},
          "b": {"answers": {**ANNOTATE, "17 * 23": "Answer: 381"}}}, "What is 17 * 23?"),
        ({"a": {"answers": {**ANNOTATE, "17 * 23": "Answer: 391"}}, "b": {"fail": True}}, "What is 17 * 23?"),
    ]
    for experts, question in cases:
        ctx = make_pipeline(tmp_path, experts, {n: 5 - i for i, n in enumerate(experts)})
        record = ask_result(ask(ctx, question), 0.5, ctx)
        again = AskResult.model_validate(record.model_dump())
        assert again == record
        assert AskResult.model_validate_json(record.model_dump_json()) == again
        assert record.answer == "391" and record.expert_answers
