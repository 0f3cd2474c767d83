"""The one session object, ``Symoe``, with scripted (fake) experts: ``route`` decides without the
experts answering, ``ask_many`` runs several routers in one batch, the one answer record, the
old names' deprecation, and that session setup exists once in the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agents.errors import SymoeError
from agents.pool import ExpertSpec
from orchestrator import RouteDecision, Symoe
from orchestrator.config import SymoeConfig
from orchestrator.profiles import ExpertProfile, Profile, SkillCount
from orchestrator.provenance import pool_digest
from orchestrator.records import Query

ROOT = Path(__file__).resolve().parents[1]
ANNOTATE = {"Which skills": "Keywords: arithmetic, multiplication"}


class WordMatcher:
    """Stands in for the embedding matcher: keywords are their own skills."""

    def canonical(self, keywords):
        return list(dict.fromkeys(keywords)), []


def session(tmp_path: Path, answers: dict[str, str], scores: dict[str, int], k: int = 2) -> Symoe:
    specs = {name: ExpertSpec(name=name, backend="fake", method="cot" if name == "c" else "standard",
                              params={"answers": {**ANNOTATE, "17 * 23": answers[name]}}) for name in scores}
    config = SymoeConfig(home=tmp_path, experts=specs, default_expert=next(iter(specs)),
                         recruit={"k": k, "adaptive_k": False, "allow_samples": False}, retrieval={"mode": "never"})
    profile = Profile(pool=pool_digest(config), annotator=config.default_expert,
                      experts={n: ExpertProfile(skills={"arithmetic": SkillCount(right=max(s, 0), wrong=max(-s, 0))},
                                                tasks={"t": SkillCount(right=max(s, 0), wrong=max(-s, 0))})
                               for n, s in scores.items()})
    path = tmp_path / "profile.json"
    path.write_text(profile.model_dump_json())
    symoe = Symoe(config, profile=path, cache_path=tmp_path / "cache.sqlite", memory_budget=2**30)
    symoe.pipeline._matcher = WordMatcher()  # type: ignore[assignment]
    return symoe


def test_route_decides_without_the_experts_answering(tmp_path):
    with session(tmp_path, {"a": "Answer: 391", "b": "Answer: 391", "c": "Answer: 7"},
                 {"a": 9, "b": 5, "c": -9}) as symoe:
        decision = symoe.route("What is 17 * 23?")
        assert isinstance(decision, RouteDecision)
        assert decision.router == "symoe" and decision.routed and decision.format == "number"
        assert decision.skills == ["arithmetic", "multiplication"]
        assert [e.expert for e in decision.experts][0] == "a" and len(decision.experts) <= 2
        assert all(e.method == "standard" for e in decision.experts)
        weights = [e.weight for e in decision.experts]
        assert all(w is not None and w > 0 for w in weights) and weights == sorted(weights, reverse=True)
        assert decision.reason and decision.retrieval is not None and not decision.retrieval.retrieved
        assert [s.step for s in decision.steps] == ["annotate", "gate"]
        annotated = symoe.pipeline.stats.generated
        assert annotated == symoe.config.skills.samples  # the annotator's samples, nothing else
        result = symoe.ask("What is 17 * 23?")
        assert result.answer == "391"
        assert sorted(result.experts) == sorted(e.expert for e in decision.experts)  # ask follows the decision
        assert symoe.pipeline.stats.from_cache >= annotated  # the annotation route made was reused


def test_route_of_one_expert_runs_nothing(tmp_path):
    with session(tmp_path, {"a": "Answer: 391", "b": "Answer: 391", "c": "Answer: 7"},
                 {"a": 9, "b": 5, "c": -9}) as symoe:
        decision = symoe.route(Query(question="What is 17 * 23?"), "single:c")
        assert [(e.expert, e.method, e.slots) for e in decision.experts] == [("c", "cot", 1)]
        assert not decision.routed and decision.combine == "single" and decision.skills == []
        assert symoe.pipeline.stats.needed == 0
        with pytest.raises(SymoeError, match="unknown"):
            symoe.route("What is 17 * 23?", "no-such-router")


def test_ask_many_runs_every_router_over_one_batch(tmp_path):
    with session(tmp_path, {"a": "Answer: 391", "b": "Answer: 391", "c": "Answer: 7"},
                 {"a": 9, "b": 5, "c": -9}) as symoe:
        queries = [Query(question="What is 17 * 23?", id="q1"), Query(question="What is 17 * 23 again?", id="q2")]
        results = symoe.ask_many(queries, routers=["single:a", "single:c", "majority"])
        assert [(r.method, r.query_id) for r in results] == [
            ("single:a", "q1"), ("single:a", "q2"), ("single:c", "q1"), ("single:c", "q2"),
            ("majority", "q1"), ("majority", "q2")]
        assert [r.answer for r in results[:4]] == ["391", "391", "7", "7"]
        assert all(r.extracted and r.succeeded >= 1 and r.failed == 0 for r in results)
        assert sorted(symoe.loads()) == ["a", "b", "c"]  # each model loaded once for the whole batch
        with pytest.raises(SymoeError, match="give routers, or one of"):
            symoe.ask_many(queries, routers=["single:a"], model="a")


def test_the_record_every_face_attaches(tmp_path):
    with session(tmp_path, {"a": "Answer: 391", "b": "Answer: 391", "c": "Answer: 7"},
                 {"a": 9, "b": 5, "c": -9}) as symoe:
        record = symoe.ask("What is 17 * 23?").record()
    assert record["method"] == "symoe" and record["answer"] == "391" and record["format"] == "number"
    assert record["experts"] and set(record["weights"]) >= set(record["experts"])
    assert {s["step"] for s in record["steps"]} >= {"annotate", "gate"}
    assert record["failed_experts"] == [] and record["retrieval"]["retrieved"] is False


def test_old_names_work_with_a_deprecation_line(tmp_path):
    with session(tmp_path, {"a": "Answer: 391", "b": "Answer: 391", "c": "Answer: 7"},
                 {"a": 9, "b": 5, "c": -9}) as symoe:
        with pytest.warns(FutureWarning, match=r"ask\(method=...\) is deprecated.*ask\(router=...\)"):
            result = symoe.ask("What is 17 * 23?", method="single:c")
        assert result.method == "single:c" and result.answer == "7"


# -- session setup and the answer record exist once ------------------------------------------
SETUP = re.compile(r"\b(Pipeline|GenerationCache|LoadedPool)\(")
RECORD = re.compile(r"(?<!class )\bAskResult(\.model_construct)?\(")
#: where building these is the job: the session, the pipeline's own default pool, the audio
#: team's pool (no query pipeline), `symoe cache` (a cache file, exported or imported: no
#: session) and the executor-level batching bench
ALLOWED_SETUP = {"orchestrator/session.py", "orchestrator/pipeline.py", "orchestrator/cli/compose.py",
                 "orchestrator/cli/cache.py", "bench/batching.py"}


def sources() -> list[Path]:
    return [p for folder in ("orchestrator", "eval", "bench", "examples") for p in (ROOT / folder).rglob("*.py")]


def test_session_setup_and_the_answer_record_are_built_in_one_place():
    setup = sorted(str(p.relative_to(ROOT)) for p in sources() if SETUP.search(p.read_text()))
    assert set(setup) <= ALLOWED_SETUP, setup
    record = sorted(str(p.relative_to(ROOT)) for p in sources() if RECORD.search(p.read_text()))
    assert record == ["orchestrator/session.py"], record


def test_the_chat_model_goes_through_the_session(tmp_path):
    from orchestrator.chat_model import SymoeChatModel

    symoe = session(tmp_path, {"a": "Answer: 391", "b": "Answer: 391", "c": "Answer: 7"}, {"a": 9, "b": 5, "c": -9})
    symoe.close()
    llm = SymoeChatModel(config=symoe.config, router="single:c")
    try:
        reply = llm.invoke("What is 17 * 23?")
        assert reply.content.endswith("Answer: 7")
        assert reply.response_metadata["symoe"] == {**reply.response_metadata["symoe"], "method": "single:c",
                                                    "answer": "7", "experts": ["c"]}
        streamed = "".join(chunk.content for chunk in llm.stream("What is 17 * 23?"))
        assert streamed.strip() == reply.content.strip()
    finally:
        llm.close()
    with pytest.warns(FutureWarning, match="strategy"):
        assert SymoeChatModel(config=symoe.config, strategy="majority").router == "majority"
