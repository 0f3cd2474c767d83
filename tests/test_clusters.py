"""Cluster routing: k-means over graded validation questions, experts scored per cluster, and the
``clusters`` method through the pipeline (scripted experts; the shipped MiniLM embeds)."""

from __future__ import annotations

import numpy as np
import pytest

from agents.pool import ExpertSpec
from orchestrator.clusters import ClusterRouter, kmeans
from orchestrator.config import ClusterConfig, SymoeConfig
from orchestrator.graph import run
from orchestrator.methods import MethodContext, MethodError, MethodSpec
from orchestrator.pipeline import Pipeline
from orchestrator.profiles import ExpertProfile, Outcome, Profile, ProfiledExample, SkillCount, profiled_examples
from orchestrator.records import Query
from skills.neighbours import LabelledQuestion


def two_groups(n: int = 10) -> tuple[list[ProfiledExample], np.ndarray]:
    """Questions near axis x are solved by expert 'a', near axis y by 'b' (and 'b' is cheaper)."""
    rng = np.random.default_rng(0)
    rows, examples = [], []
    for i in range(2 * n):
        axis = i % 2
        v = np.zeros(4)
        v[axis] = 1.0
        v += rng.normal(0, 0.05, 4)
        rows.append(v / np.linalg.norm(v))
        examples.append(ProfiledExample(question=f"q{i}", task="t", correct={"a": axis == 0, "b": axis == 1},
                                        tokens={"a": 40, "b": 10}))
    return examples, np.asarray(rows, dtype=np.float32)


def test_kmeans_separates_groups_and_is_repeatable_under_a_seed() -> None:
    _, vectors = two_groups()
    first, again = kmeans(vectors, 2, seed=5), kmeans(vectors, 2, seed=5)
    assert np.array_equal(first, again)
    labels = np.argmax(vectors @ first.T, axis=1)
    assert set(labels[0::2]) != set(labels[1::2]) and len(set(labels[0::2])) == 1


def test_kmeans_gives_unit_float32_centroids_no_more_than_the_distinct_vectors_and_no_warning(capfd) -> None:
    _, vectors = two_groups(3)
    centroids = kmeans(vectors, 4, seed=0)  # 6 points, far fewer than faiss's 39 a centroid
    assert centroids.shape == (4, 4) and centroids.dtype == np.float32
    assert np.allclose(np.linalg.norm(centroids, axis=1), 1.0, atol=1e-5)
    assert kmeans(vectors, 50, seed=0).shape == (6, 4)  # more clusters asked than points
    same = np.tile(vectors[:1], (5, 1))
    assert np.allclose(kmeans(same, 3, seed=0), vectors[:1], atol=1e-5)  # one distinct point, one centroid
    assert "WARNING" not in capfd.readouterr().err


def test_each_cluster_is_sent_to_the_expert_that_was_right_on_it() -> None:
    examples, vectors = two_groups()
    router = ClusterRouter(examples, vectors, ClusterConfig(count=2, prior=2.0), seed=0)
    near_x, near_y = router.nearest(np.asarray([[1, 0, 0, 0], [0, 1, 0, 0]], dtype=np.float32))
    assert near_x.ranking(["a", "b"])[0] == "a" and near_y.ranking(["a", "b"])[0] == "b"
    assert near_x.size == near_y.size == 10
    # shrunk towards overall accuracy (50%): 10 right of 10 with 2 pseudo-questions is 11/12
    assert near_x.accuracy["a"] == pytest.approx(11 / 12, abs=1e-3)


def test_thin_clusters_lean_on_overall_accuracy_and_ties_go_to_the_cheaper_expert() -> None:
    examples = [ProfiledExample(question="q", correct={"a": True, "b": False}, tokens={"a": 5, "b": 5})]
    examples += [ProfiledExample(question=f"p{i}", correct={"a": False, "b": True}) for i in range(9)]
    vectors = np.tile(np.asarray([[1, 0]], dtype=np.float32), (10, 1))
    one = ClusterRouter(examples[:1], vectors[:1], ClusterConfig(count=1, prior=0.0)).scores[0]
    assert one.ranking(["a", "b"])[0] == "a"
    whole = ClusterRouter(examples, vectors, ClusterConfig(count=1, prior=50.0)).scores[0]
    assert whole.ranking(["a", "b"])[0] == "b"
    tied = ProfiledExample(question="t", correct={"a": True, "b": True}, tokens={"a": 90, "b": 3})
    assert ClusterRouter([tied], vectors[:1], ClusterConfig(count=1)).scores[0].ranking(["a", "b"]) == ["b", "a"]


def test_examples_without_grades_are_left_out() -> None:
    examples, vectors = two_groups(3)
    examples[0] = ProfiledExample(question="ungraded")
    router = ClusterRouter(examples, vectors, ClusterConfig(count=2))
    assert sum(c.size for c in router.scores) == 5
    assert not ClusterRouter([ProfiledExample(question="x")], vectors[:1], ClusterConfig()).ready


def test_profiled_examples_carry_each_experts_outcome() -> None:
    questions = [LabelledQuestion(question="q1", skills=["algebra"], task="t"), LabelledQuestion(question="q2")]
    outcomes = [Outcome(expert="a", question_id="1", task="t", skills=[], correct=True, tokens=7),
                Outcome(expert="b", question_id="1", task="t", skills=[], correct=False, tokens=9)]
    first, second = profiled_examples(questions, ["1", "2"], outcomes)
    assert first.correct == {"a": True, "b": False} and first.tokens == {"a": 7, "b": 9}
    assert first.skills == ["algebra"] and second.correct == {}
    profile = Profile(pool={}, annotator="a", experts={"a": ExpertProfile(), "b": ExpertProfile()},
                      examples=[first, second])
    assert profile.restricted(["b"]).examples[0].correct == {"b": False}


def test_the_clusters_method_takes_its_clusters_top_k_and_votes_when_several() -> None:
    examples, vectors = two_groups()
    router = ClusterRouter(examples, vectors, ClusterConfig(count=2))
    cluster = router.nearest(vectors[:1])[0]
    profile = Profile(pool={}, annotator="a", experts={"a": ExpertProfile(), "b": ExpertProfile()})
    ctx = MethodContext(config=SymoeConfig(), profile=profile, seed=1, clusters={"q": cluster})
    q = Query(id="q", question="anything")
    one = MethodSpec.parse("clusters", ctx.config)
    picked = one.impl.assign(ctx, q, [], one.variant)
    assert [s.expert for s in picked.slots] == ["a"] and picked.combine == "single" and "cluster" in picked.note
    two = MethodSpec.parse("clusters:k2", ctx.config)
    both = two.impl.assign(ctx, q, [], two.variant)
    assert [s.expert for s in both.slots] == ["a", "b"] and both.combine == "vote"
    assert both.weights["a"] > both.weights["b"]
    with pytest.raises(MethodError, match="clusters:kN"):
        MethodSpec.parse("clusters:fast", ctx.config)


def test_the_clusters_method_runs_through_the_pipeline_without_annotation(tmp_path) -> None:
    """The real embedder places the query near its cluster; the scripted experts answer."""
    experts = {"math": {"answers": {"train": "Answer: 120"}}, "hist": {"answers": {"train": "Answer: 7"}}}
    specs = {n: ExpertSpec(name=n, backend="fake", params=p) for n, p in experts.items()}
    config = SymoeConfig(home=tmp_path, experts=specs, default_expert="hist", retrieval={"mode": "never"},
                         clusters={"count": 2})
    math_qs = ["A train travels 60 km per hour for 2 hours. How far does it go?",
               "What is 15 percent of 80?", "A shop sells 12 apples for 3 dollars. What do 20 apples cost?"]
    history_qs = ["In which year did the Berlin Wall fall?", "Who was the first emperor of Rome?",
                  "Which empire built Machu Picchu?"]
    examples = [ProfiledExample(question=q, task="gsm8k", correct={"math": True, "hist": False}) for q in math_qs]
    examples += [ProfiledExample(question=q, task="history", correct={"math": False, "hist": True})
                 for q in history_qs]
    profile = Profile(pool={}, annotator="hist", examples=examples, experts={
        n: ExpertProfile(tasks={"t": SkillCount(right=1)}) for n in experts})
    ctx = Pipeline(config, profile=profile)
    plan = run(ctx, [Query(question="A train goes 40 km per hour for 3 hours. How far does it travel?")],
               [MethodSpec.parse("clusters", config)])[0]
    assert plan.experts == ["math"] and plan.answer == "120"
    assert plan.annotation is None and not plan.annotation_jobs
