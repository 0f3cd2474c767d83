"""The cascade through the pipeline with scripted experts (no model runs): cheap experts first,
their agreed answer stands, otherwise the routed team answers, and nothing is paid twice."""

from __future__ import annotations

import pytest

from agents.backends import TokenLogprob
from agents.pool import ExpertSpec
from orchestrator.answers import answer_margin
from orchestrator.config import CascadeConfig, SymoeConfig
from orchestrator.graph import run
from orchestrator.methods import MethodSpec, cheapest_competent, margin_first, reliable_first
from orchestrator.pipeline import Pipeline, Plan
from orchestrator.profiles import ExpertProfile, Profile, ProfiledExample, SkillCount, margin_threshold
from orchestrator.records import Query

ANNOTATE = {"Which skills": "Keywords: arithmetic"}


class WordMatcher:
    def canonical(self, keywords):
        return list(dict.fromkeys(keywords)), []


def expert(right: int, wrong: int, tokens_per_question: int) -> ExpertProfile:
    return ExpertProfile(skills={"arithmetic": SkillCount(right=right, wrong=wrong)},
                         tasks={"t": SkillCount(right=right, wrong=wrong)},
                         questions=right + wrong, tokens=tokens_per_question * (right + wrong))


def make_pipeline(tmp_path, replies: dict[str, str], fail: tuple[str, ...] = ()) -> Pipeline:
    """'cheap' and 'tiny' cost little, 'strong' is the best and dearest, 'weak' is cheap and wrong."""
    specs = {n: ExpertSpec(name=n, backend="fake", params={"answers": {**ANNOTATE, "17 * 23": r}, "fail": n in fail})
             for n, r in replies.items()}
    config = SymoeConfig(home=tmp_path, experts=specs, default_expert="strong", retrieval={"mode": "never"},
                         recruit={"k": 2, "adaptive_k": False, "allow_samples": False})
    profile = Profile(pool={}, annotator="strong", experts={
        "strong": expert(9, 1, 300), "cheap": expert(6, 4, 5), "tiny": expert(5, 5, 3), "weak": expert(1, 9, 1)})
    ctx = Pipeline(config, profile=profile)
    ctx._matcher = WordMatcher()  # type: ignore[assignment]
    return ctx


def ask(ctx: Pipeline) -> Plan:
    return run(ctx, [Query(question="What is 17 * 23?")], [MethodSpec.parse("cascade", ctx.config)])[0]


def asked(p: Plan) -> list[str]:
    return [s.step for s in p.steps if s.step.startswith(("expert:", "first:"))]


def test_cheapest_competent_skips_experts_below_the_accuracy_bar() -> None:
    profile = Profile(pool={}, annotator="a", experts={
        "strong": expert(9, 1, 300), "cheap": expert(6, 4, 5), "tiny": expert(5, 5, 3), "weak": expert(1, 9, 1)})
    assert cheapest_competent(profile, ["arithmetic"], 0.3, 2) == ["tiny", "cheap"]
    assert cheapest_competent(profile, ["arithmetic"], 0.55, 2) == ["cheap", "strong"]
    assert cheapest_competent(profile, ["unprofiled"], 0.3, 3) == ["tiny", "cheap", "strong"]  # task accuracy then


def test_agreeing_cheap_experts_answer_and_the_team_is_never_asked(tmp_path) -> None:
    ctx = make_pipeline(tmp_path, {"strong": "Answer: 391", "cheap": "Answer: 391", "tiny": "Answer: 391",
                                   "weak": "Answer: 5"})
    p = ask(ctx)
    assert p.escalated is False and p.answer == "391"
    assert asked(p) == ["expert:tiny#0", "expert:cheap#0"]


def test_disagreement_escalates_to_the_routed_team_and_a_repeated_expert_is_asked_once(tmp_path) -> None:
    ctx = make_pipeline(tmp_path, {"strong": "Answer: 391", "cheap": "Answer: 391", "tiny": "Answer: 400",
                                   "weak": "Answer: 5"})
    p = ask(ctx)
    assert p.escalated is True and p.answer == "391"
    assert [a.expert for a in p.first_answers] == ["tiny", "cheap"]
    assert set(p.experts) == {"strong", "cheap"}  # the routed team (k = 2)
    # tiny was asked in the first round only; cheap is in both rounds but asked (and counted) once
    assert sorted(asked(p)) == ["expert:cheap#0", "expert:strong#0", "first:tiny#0"]
    assert ctx.stats.generated == len(p.annotation_jobs) + 3  # the annotation samples, then tiny, cheap, strong
    reread = next(a for a in p.answers if a.expert == "cheap")
    assert reread is p.first_answers[1]  # its first reading is kept, not read (or a program run) again


def test_a_failing_cheap_expert_escalates(tmp_path) -> None:
    ctx = make_pipeline(tmp_path, {"strong": "Answer: 391", "cheap": "Answer: 391", "tiny": "Answer: 391",
                                   "weak": "Answer: 5"}, fail=("tiny",))
    p = ask(ctx)
    assert p.escalated is True and p.answer == "391" and p.error is None


def test_without_two_competent_cheap_experts_the_team_answers_at_once(tmp_path) -> None:
    ctx = make_pipeline(tmp_path, {"strong": "Answer: 391", "cheap": "Answer: 391", "tiny": "Answer: 391",
                                   "weak": "Answer: 5"})
    ctx.config.cascade.min_accuracy = 0.85
    p = ask(ctx)
    assert p.escalated is None and "routed at once" in p.assignment.note and set(p.experts) == {"strong", "cheap"}


def test_other_methods_never_escalate(tmp_path) -> None:
    ctx = make_pipeline(tmp_path, {"strong": "Answer: 391", "cheap": "Answer: 7", "tiny": "Answer: 8",
                                   "weak": "Answer: 5"})
    p = run(ctx, [Query(question="What is 17 * 23?")], [MethodSpec.parse("symoe", ctx.config)])[0]
    assert p.escalated is None and p.cascade is None


def test_cheapest_means_priced_where_every_expert_records_a_price() -> None:
    """With prices (``symoe eval --matrix --cost``, a matrix's recorded dollars) the cascade's
    cheapest is the cheapest in price, not in tokens: here 'strong' writes the most tokens but
    costs least, so it goes first; without prices, tokens decide as before."""
    def priced(right: int, wrong: int, tokens: int, usd: float) -> ExpertProfile:
        return expert(right, wrong, tokens).model_copy(update={"usd": usd * (right + wrong)})
    profile = Profile(pool={}, annotator="a", experts={
        "strong": priced(9, 1, 300, 0.1), "cheap": priced(6, 4, 5, 2.0), "tiny": priced(5, 5, 3, 3.0)})
    assert cheapest_competent(profile, ["arithmetic"], 0.3, 2) == ["strong", "cheap"]
    examples = [ProfiledExample(question=f"q{i}", correct={"tiny": True, "cheap": True, "strong": True},
                                answers={"tiny": "A", "cheap": "A", "strong": "A"}) for i in range(6)]
    calibrated = profile.model_copy(update={"examples": examples})
    assert reliable_first(calibrated, ["arithmetic"], CascadeConfig())[0] == ["cheap", "strong"]
    unpriced = calibrated.model_copy(update={"experts": {
        n: e.model_copy(update={"usd": 0.0}) for n, e in profile.experts.items()}})
    assert reliable_first(unpriced, ["arithmetic"], CascadeConfig())[0] == ["cheap", "tiny"]


def test_the_first_experts_are_the_cheapest_whose_agreement_was_right_on_validation() -> None:
    """'tiny' and 'cheap' agree on every validation question and are always wrong; 'cheap' and
    'strong' agree on half and are then right: that pair goes first, though it costs more."""
    examples = [ProfiledExample(question=f"q{i}", correct={"tiny": False, "cheap": i % 2 == 0, "strong": True},
                                answers={"tiny": "B", "cheap": "A" if i % 2 == 0 else "B", "strong": "A"})
                for i in range(12)]
    experts = {"strong": expert(9, 1, 300), "cheap": expert(6, 4, 5), "tiny": expert(5, 5, 3)}
    profile = Profile(pool={}, annotator="strong", experts=experts, examples=examples)
    assert profile.agreement(("cheap", "tiny")) == (6, 0) and profile.agreement(("cheap", "strong")) == (6, 6)
    first, why = reliable_first(profile, ["arithmetic"], CascadeConfig())
    assert first == ["cheap", "strong"] and "right on 6 of the 6" in why
    assert reliable_first(profile, ["arithmetic"], CascadeConfig(min_agreements=7))[0] == []
    assert reliable_first(profile, ["arithmetic"], CascadeConfig(min_precision=0.0))[0] == ["cheap", "tiny"]
    unrecorded = profile.model_copy(update={"examples": []})
    first, why = reliable_first(unrecorded, ["arithmetic"], CascadeConfig())
    assert first == ["tiny", "cheap"] and "uncalibrated" in why


# -- the margin signal: one cheap expert's letter, accepted when it was sure enough -----------
def test_a_margin_is_read_off_the_stated_letter_against_the_next_option() -> None:
    def tok(token: str, top: dict[str, float]) -> TokenLogprob:
        return TokenLogprob(token=token, logprob=top[token], top=top)

    said = [tok("Answer", {"Answer": -0.01, "The": -5.0}), tok(":", {":": 0.0}),
            tok(" B", {" B": -0.2, " C": -1.7, "B": -2.5, " The": -3.0})]
    assert answer_margin(said, "B") == pytest.approx(1.5)  # B over C; the other spelling of B is no rival
    lone = [tok(" B", {" B": -0.1, " The": -4.0})]
    assert answer_margin(lone, "B") == pytest.approx(3.9)  # no rival letter listed: a lower bound
    assert answer_margin(said, "D") is None and answer_margin(None, "B") is None


def test_the_margin_threshold_is_the_lowest_whose_accepted_answers_were_precise_enough() -> None:
    graded = [(3.0, True), (2.5, True), (2.0, False), (1.5, True), (1.0, False), (0.5, False), (0.2, False)]
    assert margin_threshold(graded, 0.75, 2) == (1.5, 4, 3)  # 3 of the 4 that sure were right
    assert margin_threshold(graded, 0.75, 5) is None  # no threshold keeps 75% over 5 answers
    assert margin_threshold(graded, 1.0, 2) == (2.5, 2, 2)
    assert margin_threshold([(1.0, True), (1.0, False), (0.5, True)], 1.0, 1) is None  # ties go together


def margin_pipeline(tmp_path, sure: float) -> Pipeline:
    """'tiny' answers options cheaply with log-probs; on validation it was right whenever its
    margin was at least 2, and wrong below."""
    reply = {**ANNOTATE, "Which planet": "Answer: B"}
    specs = {n: ExpertSpec(name=n, backend="fake", method="direct", params={"answers": reply, "sure": sure})
             for n in ("strong", "cheap", "tiny")}
    config = SymoeConfig(home=tmp_path, experts=specs, default_expert="strong", retrieval={"mode": "never"},
                         recruit={"k": 2, "adaptive_k": False, "allow_samples": False})
    examples = [ProfiledExample(question=f"q{i}", correct={"tiny": i < 6}, margins={"tiny": 3.0 - i * 0.25},
                                answers={"tiny": "A"}) for i in range(12)]
    profile = Profile(pool={}, annotator="strong", examples=examples, experts={
        "strong": expert(9, 1, 300), "cheap": expert(6, 4, 5), "tiny": expert(5, 5, 3)})
    ctx = Pipeline(config, profile=profile)
    ctx._matcher = WordMatcher()  # type: ignore[assignment]
    return ctx


MC = Query(question="Which planet is red?", choices=["Venus", "Mars", "Jupiter", "Saturn"])


def test_a_sure_cheap_letter_stands_and_an_unsure_one_escalates(tmp_path) -> None:
    ctx = margin_pipeline(tmp_path, sure=2.5)
    p = run(ctx, [MC], [MethodSpec.parse("cascade", ctx.config)])[0]
    assert p.assignment.accept_margin == pytest.approx(1.75)  # the lowest margin at which tiny was always right
    assert p.escalated is False and p.answer == "B" and asked(p) == ["expert:tiny#0"]
    assert p.answers[0].margin == pytest.approx(2.5)
    unsure = margin_pipeline(tmp_path, sure=0.5)
    q = run(unsure, [MC], [MethodSpec.parse("cascade", unsure.config)])[0]
    assert q.escalated is True and [a.expert for a in q.first_answers] == ["tiny"]
    assert set(q.experts) == {"strong", "cheap"}


def test_the_margin_signal_is_for_options_and_agreement_stays_for_the_rest(tmp_path) -> None:
    ctx = margin_pipeline(tmp_path, sure=2.5)
    number = run(ctx, [Query(question="What is 17 * 23?")], [MethodSpec.parse("cascade", ctx.config)])[0]
    assert len(number.assignment.slots) != 1 or number.assignment.accept_margin is None
    agreement = ctx.config.model_copy(update={"cascade": CascadeConfig(signal="agreement")})
    assert margin_first(ctx.profile, ["arithmetic"], agreement.cascade) is not None  # it would qualify...
    only = Pipeline(agreement, profile=ctx.profile)
    only._matcher = WordMatcher()  # type: ignore[assignment]
    p = run(only, [MC], [MethodSpec.parse("cascade", agreement)])[0]
    assert p.assignment.accept_margin is None  # ...but agreement was asked for
    fixed = CascadeConfig(margin=0.4)
    assert margin_first(ctx.profile, ["arithmetic"], fixed)[:2] == ("tiny", 0.4)  # type: ignore[index]
