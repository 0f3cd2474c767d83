"""The cost/quality knob: options scored per cluster, the choice at a quality, the vote replayed
on recorded answers, the calibration to a token target, per-method settings and sweeps, and
the ``budget`` method through the pipeline (scripted experts; the shipped MiniLM embeds)."""

from __future__ import annotations

import numpy as np
import pytest

from agents.pool import ExpertSpec
from eval.budget import calibrate_quality, quality_curve
from eval.report import short_label
from orchestrator.clusters import ClusterRouter, ClusterScore, RoutingOption, vote_correct
from orchestrator.config import ClusterConfig, SymoeConfig
from orchestrator.graph import run
from orchestrator.methods import MethodContext, MethodError, MethodSpec, budget_quality, expand_methods
from orchestrator.pipeline import Pipeline
from orchestrator.profiles import BudgetCalibration, ExpertProfile, Profile, ProfiledExample, SkillCount
from orchestrator.records import Query


def example(question: str, right: dict[str, bool], answers: dict[str, str | None],
            cost: dict[str, int]) -> ProfiledExample:
    return ProfiledExample(question=question, task="t", correct=right, answers=answers,
                           tokens={e: c // 2 for e, c in cost.items()},
                           prompt_tokens={e: c - c // 2 for e, c in cost.items()})


def profile_of(examples: list[ProfiledExample], experts: list[str]) -> Profile:
    return Profile(pool={}, annotator=experts[0], examples=examples,
                   experts={e: ExpertProfile(tasks={"t": SkillCount(right=1)}) for e in experts})


def three_experts(n: int = 30) -> tuple[list[ProfiledExample], np.ndarray]:
    """'cheap' is right a third of the time for 100 tokens, 'good' two thirds for 300, 'dear' on
    the same two thirds for 900; a wrong answer is always 'B'."""
    rng = np.random.default_rng(1)
    rows, examples = [], []
    for i in range(n):
        v = np.ones(3) + rng.normal(0, 0.01, 3)
        rows.append(v / np.linalg.norm(v))
        right = {"cheap": i % 3 == 0, "good": i % 3 != 2, "dear": i % 3 != 2}
        answers = {e: "A" if ok else "B" for e, ok in right.items()}
        examples.append(example(f"q{i}", right, answers, {"cheap": 100, "good": 300, "dear": 900}))
    return examples, np.asarray(rows, dtype=np.float32)


def test_quality_zero_takes_the_cheapest_option_and_one_the_most_accurate() -> None:
    options = [RoutingOption(experts=["cheap"], accuracy=0.3, tokens=100),
               RoutingOption(experts=["good"], accuracy=0.6, tokens=300),
               RoutingOption(experts=["good", "dear", "cheap"], accuracy=0.8, tokens=1300)]
    score = ClusterScore(cluster=0, size=9, accuracy={}, tokens={}, options=options, cost_scale=1300)
    assert score.choose(0.0).experts == ["cheap"]
    assert score.choose(1.0).experts == ["good", "dear", "cheap"]
    assert score.choose(0.7).experts == ["good"]  # 0.7*0.6 - 0.3*300/1300 beats both ends
    assert score.choose(1.0, ["cheap", "good"]).experts == ["good"]  # a vote needs all its experts
    assert score.choose(1.0, ["nobody"]) is None
    tie = ClusterScore(cluster=0, size=1, accuracy={}, tokens={}, cost_scale=10, options=[
        RoutingOption(experts=["x"], accuracy=0.5, tokens=9), RoutingOption(experts=["y"], accuracy=0.5, tokens=3)])
    assert tie.choose(1.0).experts == ["y"]  # equal accuracy: the cheaper


def test_a_vote_is_replayed_on_the_recorded_answers_by_the_majority_rule() -> None:
    x = example("q", {"a": True, "b": False, "c": False}, {"a": "A", "b": "B", "c": "B"}, {})
    assert not vote_correct(x, ["a", "b", "c"], {"a": 0.9})  # two agreeing wrong answers outvote one right
    y = example("q", {"a": True, "b": False, "c": False}, {"a": "A", "b": "B", "c": "C"}, {})
    assert vote_correct(y, ["a", "b", "c"], {"a": 0.9, "b": 0.1, "c": 0.1})  # all differ: the heaviest
    assert not vote_correct(y, ["a", "b", "c"], {"a": 0.1, "b": 0.9, "c": 0.1})
    z = example("q", {"a": True, "b": False, "c": False}, {"a": "A", "b": None, "c": None}, {})
    assert vote_correct(z, ["a", "b", "c"], {})  # experts that stated nothing do not vote


def test_clusters_offer_each_expert_and_votes_of_their_top_experts_with_costs() -> None:
    examples, vectors = three_experts()
    router = ClusterRouter(examples, vectors, ClusterConfig(count=1, prior=0.0), teams=3)
    (cluster,) = router.scores
    by_team = {tuple(o.experts): o for o in cluster.options}
    assert by_team[("cheap",)].tokens == 100 and by_team[("dear",)].tokens == 900
    team = next(o for o in cluster.options if len(o.experts) == 3)
    assert team.tokens == 1300 and team.accuracy == pytest.approx(2 / 3, abs=1e-3)
    assert cluster.cost_scale == 1300
    alone = ClusterRouter(examples, vectors, ClusterConfig(count=1), teams=1).scores[0]
    assert all(len(o.experts) == 1 for o in alone.options)
    unanswered = [e.model_copy(update={"answers": {}}) for e in examples]
    assert all(len(o.experts) == 1 for o in ClusterRouter(unanswered, vectors, ClusterConfig(count=1),
                                                          teams=3).scores[0].options)


def test_the_curve_runs_from_the_cheapest_to_the_dearest_and_calibration_meets_the_target() -> None:
    examples, vectors = three_experts()
    profile = profile_of(examples, ["cheap", "good", "dear"])
    config = SymoeConfig(clusters={"count": 1})
    curve = quality_curve(profile, config, folds=3, vectors=vectors)
    assert curve[0].quality == 0.0 and curve[-1].quality == 1.0
    assert curve[0].tokens_per_question == 100 and curve[-1].tokens_per_question == 300  # dear: no better
    assert curve[0].accuracy == pytest.approx(33.3, abs=0.1) and curve[-1].accuracy == pytest.approx(66.7, abs=0.1)
    assert [p.tokens_per_question for p in curve] == sorted(p.tokens_per_question for p in curve)
    fit = calibrate_quality(profile, config, target=300, folds=3, vectors=vectors)
    assert fit.predicted_tokens_per_question == 300 and fit.folds == 3
    assert fit.quality == max(p.quality for p in curve if p.tokens_per_question == 300)  # the best at that cost


def test_calibration_refuses_a_profile_it_cannot_replay() -> None:
    examples, vectors = three_experts(6)
    with pytest.raises(Exception, match="at least 10"):
        quality_curve(profile_of(examples, ["cheap"]), SymoeConfig(), folds=5, vectors=vectors)
    old = [e.model_copy(update={"prompt_tokens": {}}) for e in three_experts()[0]]
    with pytest.raises(Exception, match="prompt tokens"):
        quality_curve(profile_of(old, ["cheap"]), SymoeConfig(), folds=5)


def test_the_quality_comes_from_the_name_then_the_config_then_the_calibration() -> None:
    calibrated = profile_of([], ["a"]).model_copy(update={"budget": BudgetCalibration(
        quality=0.4, target_tokens_per_question=200, predicted_tokens_per_question=190, predicted_accuracy=40,
        folds=5)})
    ctx = MethodContext(config=SymoeConfig(), profile=calibrated, seed=0)
    assert budget_quality(ctx, "0.9") == (0.9, "named")
    assert budget_quality(ctx, None)[0] == 0.4 and "200 tokens" in budget_quality(ctx, None)[1]
    ctx.config = SymoeConfig(budget={"quality": 0.1})
    assert budget_quality(ctx, None) == (0.1, "budget.quality")
    assert budget_quality(MethodContext(config=SymoeConfig(), profile=profile_of([], ["a"]), seed=0), None) == \
        (1.0, "default")
    for bad in ("1.5", "-0.1", "nan", "fast"):
        with pytest.raises(MethodError, match="budget:Q"):
            MethodSpec.parse(f"budget:{bad}", SymoeConfig())


def test_method_names_carry_settings_for_that_method_alone() -> None:
    config = SymoeConfig()
    spec = MethodSpec.parse("budget[budget.quality=0.25;clusters.count=4]", config)
    assert str(spec) == "budget[budget.quality=0.25;clusters.count=4]" and spec.retrieval == "never"
    tuned = spec.configured(config)
    assert tuned.budget.quality == 0.25 and tuned.clusters.count == 4 and config.budget.quality is None
    assert str(MethodSpec.parse("symoe@never[recruit.k=2]", config)) == "symoe@never[recruit.k=2]"
    for name, message in [("budget[seed=3]", "does not read 'seed'"),
                          ("symoe[budget.quality=1]", "does not read"),
                          ("budget[budget.quality=2]", "allowed: from 0 to 1"),
                          ("budget[budget.speed=2]", "unknown setting"),
                          ("budget[budget.quality]", "KEY=VALUE"),
                          ("budget[budget.quality=1", "brackets at the end"),
                          ("budget[clusters.k=2]", "does not read 'clusters.k'")]:
        with pytest.raises(MethodError, match=message.replace("[", r"\[")):
            MethodSpec.parse(name, config)


def test_a_sweep_runs_each_method_that_reads_the_key_once_per_value() -> None:
    config = SymoeConfig()
    names = [str(m) for m in expand_methods("best_single,budget,clusters", config,
                                            sweep=[("budget.quality", ["0", "1"]), ("clusters.count", ["3", "6"])])]
    assert names == ["best_single",
                     "budget[budget.quality=0;clusters.count=3]", "budget[budget.quality=0;clusters.count=6]",
                     "budget[budget.quality=1;clusters.count=3]", "budget[budget.quality=1;clusters.count=6]",
                     "clusters[clusters.count=3]", "clusters[clusters.count=6]"]
    with pytest.raises(MethodError, match="read by: budget"):
        expand_methods("symoe", config, sweep=[("budget.quality", ["0"])])


def test_the_budget_method_runs_through_the_pipeline_and_the_knob_moves_the_cost(tmp_path) -> None:
    """Arithmetic questions: 'cheap' is right on none, 'dear' on all; at quality 0 the cheap
    expert answers, at 1 the dear one, each at its own settings in one run."""
    experts = {"cheap": {"answers": {"train": "Answer: 7"}}, "dear": {"answers": {"train": "Answer: 120"}}}
    specs = {n: ExpertSpec(name=n, backend="fake", params=p) for n, p in experts.items()}
    config = SymoeConfig(home=tmp_path, experts=specs, default_expert="dear", clusters={"count": 1})
    questions = ["A train travels 60 km per hour for 2 hours. How far does it go?", "What is 15 percent of 80?",
                 "A shop sells 12 apples for 3 dollars. What do 20 apples cost?"]
    examples = [example(q, {"cheap": False, "dear": True}, {"cheap": "1", "dear": "2"}, {"cheap": 10, "dear": 500})
                for q in questions]
    ctx = Pipeline(config, profile=profile_of(examples, ["cheap", "dear"]))
    low, high = run(ctx, [Query(question="A train goes 40 km per hour for 3 hours. How far does it travel?")],
                    [MethodSpec.parse("budget[budget.quality=0]", config), MethodSpec.parse("budget:1", config)])
    assert low.experts == ["cheap"] and low.answer == "7" and "quality 0" in low.assignment.note
    assert high.experts == ["dear"] and high.answer == "120"
    assert low.retrieval is not None and not low.retrieval.retrieved  # budget does not retrieve by default
    assert low.annotation is None and not low.annotation_jobs


def sure_cheap(n: int = 30) -> tuple[list[ProfiledExample], np.ndarray]:
    """three_experts, with 'good' at 600 tokens and 'cheap' sure (margin 2) exactly where it was right."""
    examples, vectors = three_experts(n)
    for i, x in enumerate(examples):
        x.margins = {"cheap": 2.0 if i % 3 == 0 else 0.5}
        x.tokens["good"] = x.prompt_tokens["good"] = 300
    return examples, vectors


def test_a_cheap_sure_letter_first_is_an_option_replayed_on_its_recorded_margins() -> None:
    examples, vectors = sure_cheap()
    (cluster,) = ClusterRouter(examples, vectors, ClusterConfig(count=1, prior=0.0), teams=1, sure_first=True).scores
    sure = next(o for o in cluster.options if o.first == "cheap" and o.experts == ["good"])
    assert sure.accept_margin == 2.0  # the lowest margin at which cheap was as right as the best expert
    assert sure.accuracy == pytest.approx(2 / 3, abs=1e-3)  # its sure third, then good's
    assert sure.tokens == pytest.approx(100 + 600 * 2 / 3, abs=0.1)  # cheap always, good for the unsure
    assert sure.replay(examples[0], {}) == (100, True) and sure.replay(examples[1], {}) == (700, True)
    assert cluster.choose(1.0).first == "cheap"  # as accurate as good alone, and cheaper
    (plain,) = ClusterRouter(examples, vectors, ClusterConfig(count=1, prior=0.0), teams=1).scores
    assert not any(o.first for o in plain.options)


def test_budget_runs_a_sure_first_option_as_a_cascade(tmp_path) -> None:
    """Options: 'cheap' answers with a scripted margin; sure, it stands; unsure, 'good' answers."""
    examples, _ = sure_cheap(15)
    for x in examples:
        x.question = f"Which planet is the {x.question} one? Options follow."
    reply = {"Which planet": "Answer: A"}
    query = Query(question="Which planet is red?", choices=["Mars", "Venus"])

    def ask(sure: float):
        specs = {n: ExpertSpec(name=n, backend="fake", method="direct", params={"answers": reply, "sure": sure})
                 for n in ("cheap", "good", "dear")}
        config = SymoeConfig(home=tmp_path, experts=specs, default_expert="good", clusters={"count": 1})
        ctx = Pipeline(config, profile=profile_of(examples, ["cheap", "good", "dear"]))
        return run(ctx, [query], [MethodSpec.parse("budget:1", config)])[0]

    sure, unsure = ask(3.0), ask(0.1)
    assert sure.assignment.accept_margin == 2.0 and "cheap if its letter's margin is >= 2.00" in sure.assignment.note
    assert sure.escalated is False and sure.experts == ["cheap"]
    assert unsure.escalated is True and unsure.experts == ["good"] and unsure.first_answers[0].expert == "cheap"


def test_calibrate_writes_the_fitted_quality_where_budget_reads_it(symoe_cli, tmp_path) -> None:
    """On the shipped profile (no model runs): the written profile carries the quality whose
    cross-fitted cost is nearest the target, and the budget method then runs at it."""
    env = {"SYMOE_HOME": str(tmp_path / "home")}
    done = symoe_cli("profile", "calibrate", "--target-tokens-per-question", "200", "--plot",
                     str(tmp_path / "curve.png"), env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    written = tmp_path / "home" / "profiles" / "profile.json"  # the shipped profile is never overwritten
    fit = Profile.model_validate_json(written.read_text()).budget
    assert fit is not None and fit.target_tokens_per_question == 200
    assert abs(fit.predicted_tokens_per_question - 200) <= 0.15 * 200
    assert fit.predicted_tokens_per_question == min((p.tokens_per_question for p in fit.curve),
                                                    key=lambda t: abs(t - 200))
    assert (tmp_path / "curve.png").stat().st_size > 10_000 and f"quality {fit.quality:g} written" in done.stdout
    ctx = MethodContext(config=SymoeConfig(home=tmp_path / "home"), seed=0,
                        profile=Profile.model_validate_json(written.read_text()))
    assert budget_quality(ctx, None) == (fit.quality, "calibrated for 200 tokens/question")


def test_plot_labels_drop_the_section_a_method_owns() -> None:
    assert short_label("budget[budget.quality=0.33]") == "budget[quality=0.33]"
    assert short_label("clusters@never[clusters.count=3;budget.team=5]") == "clusters@never[count=3;budget.team=5]"
    assert short_label("single:qwen-1.5b-direct") == "single:qwen-1.5b-direct"
