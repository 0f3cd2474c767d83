"""Skills from neighbours (``skills.source``): labelled validation questions vote, with the
shipped MiniLM embedder for real; the annotator LLM is a scripted (fake) model here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agents.embedder import EmbeddingConfig
from agents.errors import SymoeError
from agents.pool import ExpertSpec
from orchestrator.config import SymoeConfig
from orchestrator.pipeline import Pipeline, annotate
from orchestrator.profiles import ExpertProfile, Profile, ProfiledExample
from orchestrator.records import Query
from skills.neighbours import LabelledQuestion, NeighbourSkills, confident, nearest

EXAMPLES = [
    LabelledQuestion(question="A baker sells 12 loaves a day for 3 dollars each. How much money in a week?",
                     skills=["arithmetic", "word problems"]),
    LabelledQuestion(question="Tom has 5 boxes of 8 pencils and gives away 9. How many pencils are left?",
                     skills=["arithmetic", "word problems"]),
    LabelledQuestion(question="A car travels 60 miles per hour for 2.5 hours. How far does it go?",
                     skills=["arithmetic", "physics"]),
    LabelledQuestion(question="Who was the first emperor of Rome?", skills=["history"]),
    LabelledQuestion(question="In which year did the French Revolution begin?", skills=["history"]),
    LabelledQuestion(question="Which treaty ended the First World War?", skills=["history", "politics and government"]),
]


@pytest.fixture(scope="module")
def voter() -> NeighbourSkills:
    return NeighbourSkills(EXAMPLES, EmbeddingConfig(), k=3, share=0.4)


def test_a_word_problem_and_a_history_question_get_their_neighbours_skills(voter: NeighbourSkills):
    math, past = voter.vote(["Sara buys 4 packs of 6 eggs and breaks 3. How many eggs does she have?",
                             "Who led the Roman legions across the Rubicon?"])
    assert math.skills[:2] == ["arithmetic", "word problems"] and math.agreement == 1.0
    assert past.skills[0] == "history" and "arithmetic" not in past.skills
    assert math.nearest > 0.5 and math.neighbours[0] in (0, 1)


def test_leave_one_out_never_votes_with_the_question_itself(voter: NeighbourSkills):
    [vote] = voter.vote([EXAMPLES[3].question], exclude=[3])
    assert 3 not in vote.neighbours and vote.skills[0] == "history"


def test_a_far_question_is_not_confident(voter: NeighbourSkills):
    [far] = voter.vote(["Describe the smell of rain on hot asphalt in a short poem."])
    [near] = voter.vote(["Bob has 7 bags of 3 apples and eats 4. How many apples remain?"])
    assert confident(near, 0.35, 0.6) and not confident(far, 0.35, 0.6)


def _pipeline(tmp_path: Path, source: str, examples: list[LabelledQuestion] = EXAMPLES) -> Pipeline:
    annotator = ExpertSpec(backend="fake", params={"answers": {"Which skills": "Keywords: poetry, literature"}})
    config = SymoeConfig(home=tmp_path, experts={"a": annotator}, default_expert="a",
                         skills={"source": source, "neighbours": 3})
    profile = Profile(pool={}, annotator="a", experts={"a": ExpertProfile()},
                      examples=[ProfiledExample(**e.model_dump()) for e in examples])
    return Pipeline(config, profile=profile)


def test_neighbours_need_no_llm_call_and_hybrid_asks_it_only_for_far_questions(tmp_path: Path):
    near = Query(question="Ann has 6 bags of 4 marbles and loses 5. How many marbles are left?")
    far = Query(question="Write a haiku about the colour of the autumn sea.")
    ctx = _pipeline(tmp_path, "neighbours")
    got = annotate(ctx, [near, far], seed=0)
    assert ctx.stats.needed == 0  # no annotator job at all
    assert got[near.id][0].skills[:2] == ["arithmetic", "word problems"] and got[near.id][0].source == "neighbours"
    assert got[near.id][1] == []
    hybrid = _pipeline(tmp_path, "hybrid")
    got = annotate(hybrid, [near, far], seed=0)
    assert got[near.id][0].source == "neighbours" and got[far.id][0].source == "llm"
    assert hybrid.stats.needed == 5  # the annotator's five samples, for the far question only
    assert len(got[far.id][1]) == 5


def test_a_profile_without_labelled_questions_is_one_line_saying_to_rebuild(tmp_path: Path):
    ctx = _pipeline(tmp_path, "neighbours", examples=[])
    with pytest.raises(SymoeError, match="rebuild it with `symoe profile build`"):
        annotate(ctx, [Query(question="What is 2 + 2?")], seed=0)


def test_a_router_s_own_skills_source_annotates_once_per_source(tmp_path: Path):
    """``symoe:k1[skills.source=neighbours]`` beside plain ``symoe:k1`` (the config's ``llm``):
    one plan stage, the LLM's five samples for the plain router only, the neighbours' vote for
    the other, and a caller's own skills (``Query.skills``) for both, with no annotation."""
    from orchestrator.methods import MethodSpec
    from orchestrator.pipeline import plan

    ctx = _pipeline(tmp_path, "llm")
    specs = [MethodSpec.parse(r, ctx.config) for r in ("symoe:k1", "symoe:k1[skills.source=neighbours]")]
    q = Query(question="Ann has 6 bags of 4 marbles and loses 5. How many marbles are left?")
    llm, voted = plan(ctx, [q], specs, seed=0)
    assert llm.annotation.source == "llm" and len(llm.annotation_jobs) == 5
    assert voted.annotation.source == "neighbours" and voted.annotation_jobs == []
    assert voted.skills[:2] == ["arithmetic", "word problems"]
    given = Query(question=q.question, skills=["history"])
    plans = plan(ctx, [given], specs, seed=0)
    assert [(p.annotation.source, p.skills, p.annotation_jobs) for p in plans] == [("given", ["history"], [])] * 2
    with pytest.raises(SymoeError, match="does not read 'skills.source'"):
        MethodSpec.parse("learned:knn[skills.source=neighbours]", ctx.config)


def test_ask_s_skills_option_beats_the_profile_router_s_own_source(tmp_path: Path):
    """The shipped profile's router says ``[skills.source=neighbours]``; ``symoe ask --skills llm``
    replaces that setting (``MethodSpec.with_setting``, as the CLI does), and the LLM annotates."""
    from orchestrator.methods import MethodSpec
    from orchestrator.pipeline import plan

    ctx = _pipeline(tmp_path, "neighbours")
    spec = MethodSpec.parse("symoe:k1@never[skills.source=neighbours]", ctx.config)
    asked = spec.with_setting("skills.source", "llm")
    assert str(asked) == "symoe:k1@never[skills.source=llm]"
    q = Query(question="Ann has 6 bags of 4 marbles and loses 5. How many marbles are left?")
    voted, llm = plan(ctx, [q], [spec, asked], seed=0)
    assert voted.annotation.source == "neighbours" and llm.annotation.source == "llm"


def test_the_profile_s_questions_are_embedded_once_per_machine_not_per_process(tmp_path: Path):
    """Many texts (a profile's questions: neighbours, clusters, learned routers) go through the
    on-disk embedding cache, so a new process (a cold ``symoe ask``) reads them; a query's few
    texts are encoded directly."""
    import numpy as np

    texts = [f"Question number {i} about the history of {w}?" for i, w in enumerate(["Rome", "Paris"] * 10)]
    first = _pipeline(tmp_path, "neighbours")
    vectors = first.embed(texts)
    cache = list((tmp_path / "embeddings").glob("questions-*.npz"))
    assert len(cache) == 1
    with np.load(cache[0]) as stored:
        assert len(stored["keys"]) == len(set(texts))
    again = _pipeline(tmp_path, "neighbours").embed(texts)  # as a new process would
    assert np.allclose(vectors, again, atol=1e-6)
    first.embed(["A new question?", "Another new one?"])  # few: encoded now, not written to the cache
    with np.load(cache[0]) as stored:
        assert len(stored["keys"]) == len(set(texts))


def test_nearest_is_the_head_of_a_stable_descending_sort() -> None:
    """The partition that finds a vote's neighbours picks what sorting every similarity would:
    the ``k`` largest, largest first, ties (many, in coarse similarities) to the lower position."""
    rng = np.random.default_rng(0)
    for trial in range(3000):
        n, k = int(rng.integers(1, 30)), int(rng.integers(1, 10))
        sims = rng.integers(-2, 3, n) / 2 if trial % 2 else rng.normal(size=n)
        if trial % 5 == 0:
            sims[rng.integers(0, n)] = -np.inf  # a left-out example
        assert nearest(sims, k).tolist() == np.argsort(-sims, kind="stable")[:k].tolist()
