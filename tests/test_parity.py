"""Parity: ``Symoe.ask`` one question at a time and ``evaluate`` over the same questions run
the one pipeline, so they give identical answers, recruited experts, aggregation decisions,
fallbacks and retrieval decisions.

With scripted (fake) experts over 24 questions (multiple choice, numeric, free text; one
expert fails every call; a real MiniLM index so the gate decides both ways), and with the
real models: the two smallest on one question (the face ``make test`` runs) and the default
pool on one question per answer format (``-m real``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.embedder import EmbeddingConfig
from agents.pool import ExpertSpec
from eval.datasets import Question, load_split, load_task
from eval.runner import EvalArgs, evaluate
from orchestrator import Symoe
from orchestrator.config import SymoeConfig, load_config
from orchestrator.profiles import ExpertProfile, Profile, SkillCount, save_profile
from orchestrator.provenance import pool_digest
from retrieval.index import build_index

DOCS = [
    ("Paris", "Paris is the capital and largest city of France, on the river Seine."),
    ("Mount Everest", "Mount Everest is Earth's highest mountain above sea level, in the Himalayas."),
    ("Photosynthesis", "Photosynthesis is the process by which plants use sunlight to make sugar from CO2."),
    ("Napoleon", "Napoleon Bonaparte was a French military leader who became emperor in 1804."),
]

# (question, choices, gold answer, annotated keywords)
QUESTIONS: list[tuple[str, list[str], str, str]] = [
    ("What is 17 * 23?", [], "391", "arithmetic, multiplication"),
    ("What is 12 + 30?", [], "42", "arithmetic"),
    ("How many legs do 3 spiders have?", [], "24", "arithmetic, biology"),
    ("What is 144 / 12?", [], "12", "arithmetic, algebra"),
    ("Solve for x: 2x + 4 = 10. What is x?", [], "3", "algebra"),
    ("How much is 15% of 200?", [], "30", "arithmetic, word problems"),
    ("What is the capital of France?", [], "Paris", "geography"),
    ("Which is the highest mountain on Earth?", [], "Mount Everest", "geography, earth and space science"),
    ("In which year did Napoleon become emperor?", [], "1804", "history"),
    ("Who wrote Hamlet?", [], "William Shakespeare", "literature"),
    ("What gas do plants take in for photosynthesis?", [], "carbon dioxide", "biology, chemistry"),
    ("What is the chemical symbol of gold?", [], "Au", "chemistry"),
    ("Which river flows through Paris?", ["Thames", "Seine", "Danube", "Rhine"], "B", "geography"),
    ("Which planet is known as the red planet?", ["Venus", "Mars", "Jupiter", "Saturn"], "B", "astronomy"),
    ("What do plants make in photosynthesis?", ["Sugar", "Salt", "Iron", "Oil"], "A", "biology"),
    ("Which is a noble gas?", ["Oxygen", "Neon", "Nitrogen", "Hydrogen"], "B", "chemistry"),
    ("Which organ pumps blood?", ["Liver", "Lung", "Heart", "Kidney"], "C", "anatomy and physiology, biology"),
    ("Who was the first US president?", ["Lincoln", "Washington", "Adams", "Jefferson"], "B", "history"),
    ("Which number is prime?", ["4", "6", "9", "7"], "D", "number theory, arithmetic"),
    ("What is the square root of 81?", ["7", "8", "9", "10"], "C", "arithmetic"),
    ("Which language is spoken in Brazil?", ["Spanish", "Portuguese", "French", "English"], "B", "geography"),
    ("Which ocean is the largest?", ["Atlantic", "Indian", "Arctic", "Pacific"], "D", "geography"),
    ("What is H2O?", ["Salt", "Water", "Sugar", "Air"], "B", "chemistry"),
    ("Which empire did Napoleon rule?", ["Roman", "French", "Ottoman", "British"], "B", "history"),
]

# who answers what: alpha is right, beta right on even questions, delta right on multiples of 3,
# gamma fails every call
EXPERTS = ("alpha", "beta", "gamma", "delta")


def reply(expert: str, i: int, gold: str, choices: list[str]) -> str:
    right = expert == "alpha" or (expert == "beta" and i % 2 == 0) or (expert == "delta" and i % 3 == 0)
    if right:
        return f"Answer: {gold}"
    if choices:
        return f"Answer: {'A' if gold != 'A' else 'C'}"
    return f"Answer: {gold}0" if gold.isdigit() else "Answer: I am not sure"


def fake_pool() -> dict[str, ExpertSpec]:
    pool = {}
    for expert in EXPERTS:
        answers: dict[str, str] = {}
        for i, (q, choices, gold, keywords) in enumerate(QUESTIONS):
            answers[f"Question: {q}\n\nWhich skills"] = f"Keywords: {keywords}"
            answers[f"Question:\n{q}"] = f"Answer: {gold}" if expert == "alpha" else reply(expert, i + 1, gold, choices)
            answers[q] = reply(expert, i, gold, choices)
        pool[expert] = ExpertSpec(name=expert, backend="fake", params={"answers": answers,
                                                                       "fail": expert == "gamma"})
    return pool


def fake_profile(config: SymoeConfig) -> Profile:
    def counts(right: int, wrong: int) -> SkillCount:
        return SkillCount(right=right, wrong=wrong)

    skills = {
        "alpha": {"arithmetic": counts(9, 3), "geography": counts(4, 4), "history": counts(2, 6),
                  "chemistry": counts(6, 2), "biology": counts(5, 3)},
        "beta": {"arithmetic": counts(8, 4), "geography": counts(6, 2), "history": counts(7, 1),
                 "chemistry": counts(3, 5), "biology": counts(5, 3)},
        "gamma": {"arithmetic": counts(2, 8), "geography": counts(5, 3), "history": counts(8, 1),
                  "chemistry": counts(7, 1), "biology": counts(2, 6)},
        "delta": {"arithmetic": counts(5, 5), "geography": counts(5, 3), "history": counts(3, 5),
                  "chemistry": counts(6, 2), "biology": counts(6, 2)},
    }
    experts = {e: ExpertProfile(skills=s, tasks={"parity": counts(sum(c.right for c in s.values()),
                                                                  sum(c.wrong for c in s.values()))})
               for e, s in skills.items()}
    return Profile(pool=pool_digest(config), annotator="alpha", experts=experts,
                   aggregators={"alpha": ExpertProfile(tasks={"parity": counts(8, 2)}),
                                "beta": ExpertProfile(tasks={"parity": counts(5, 5)}),
                                "gamma": ExpertProfile(tasks={"parity": counts(2, 8)}),
                                "delta": ExpertProfile(tasks={"parity": counts(4, 6)})})


def decisions(result_answer: str | None, experts: list[str], aggregated: bool, aggregator: str | None,
              fallback: str | None, retrieved: bool | None, reason: str | None) -> dict[str, object]:
    return {"answer": result_answer, "experts": experts, "aggregated": aggregated, "aggregator": aggregator,
            "fallback": fallback, "retrieved": retrieved, "retrieval_reason": reason}


def ask_each(config: SymoeConfig, questions: list[Question], cache: Path | None = None) -> dict[str, dict[str, object]]:
    out = {}
    with Symoe(config, cache_path=cache) as symoe:
        for q in questions:
            r = symoe.ask(q.question, choices=q.choices, format=q.answer_format, task=q.task)
            out[q.id] = decisions(r.answer, r.experts, r.aggregated, r.aggregator, r.fallback,
                                  r.retrieval.retrieved if r.retrieval else None,
                                  r.retrieval.reason if r.retrieval else None)
    return out


def evaluated(config: SymoeConfig, task: Path, out: Path) -> tuple[dict[str, dict[str, object]], list]:
    args = EvalArgs(tasks=[str(task)], methods=["symoe"], split="test", output=out, seed=config.seed)
    questions = load_task(task)
    samples, _ = evaluate(config, args, questions=questions)
    return {s.question_id: decisions(s.answer, s.experts, s.aggregated, s.aggregator, s.fallback,
                                     s.retrieved if s.retrieval_reason else None, s.retrieval_reason)
            for s in samples}, samples


@pytest.fixture(scope="module")
def fake_setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[SymoeConfig, Path, list[Question]]:
    root = tmp_path_factory.mktemp("parity")
    (root / "docs.jsonl").write_text("".join(json.dumps({"id": t, "title": t, "text": x}) + "\n" for t, x in DOCS))
    build_index([root / "docs.jsonl"], root / "index", EmbeddingConfig())
    config = SymoeConfig(home=root / "home", experts=fake_pool(), default_expert="alpha", replace_pool=True,
                         recruit={"profile": root / "profile.json"},
                         retrieval={"mode": "auto", "index": root / "index"})
    save_profile(fake_profile(config), root / "profile.json")
    questions = [Question(id=f"parity-{i}", question=q, choices=c, answer=a, task="parity")
                 for i, (q, c, a, _) in enumerate(QUESTIONS)]
    task = root / "parity.jsonl"
    task.write_text("".join(q.model_dump_json() + "\n" for q in questions))
    return config, task, questions


def test_ask_and_evaluate_agree_with_scripted_experts(fake_setup, tmp_path: Path) -> None:
    config, task, questions = fake_setup
    one_by_one = ask_each(config, questions)
    batch, samples = evaluated(config, task, tmp_path / "eval")
    assert batch == one_by_one
    # the cases the parity is about all occur
    rows = list(batch.values())
    assert len(rows) >= 20
    assert any(len(r["experts"]) == 1 for r in rows) and any(len(r["experts"]) > 1 for r in rows)  # type: ignore[arg-type]
    assert any(r["aggregated"] for r in rows) and any(not r["aggregated"] for r in rows)
    assert any("gamma" in r["experts"] for r in rows), "the failing expert is recruited somewhere"  # type: ignore[operator]
    assert any(r["retrieved"] for r in rows) and any(r["retrieved"] is False for r in rows)
    assert all(s.skills for s in samples), "every question was annotated"
    assert sum(s.correct for s in samples) >= 16


def test_every_recruited_expert_failing_falls_back_in_both(fake_setup, tmp_path: Path) -> None:
    """A question only the failing expert is recruited for: both paths fall back to the default."""
    config, task, questions = fake_setup
    only_gamma = config.model_copy(update={"recruit": config.recruit.model_copy(update={"k": 1, "adaptive_k": False})})
    profile = fake_profile(config)
    for name in ("alpha", "beta", "delta"):
        profile.experts[name] = ExpertProfile(skills={"history": SkillCount(right=0, wrong=9)},
                                              tasks={"parity": SkillCount(right=0, wrong=9)})
    path = tmp_path / "profile.json"
    save_profile(profile, path)
    only_gamma = only_gamma.model_copy(update={"recruit": only_gamma.recruit.model_copy(update={"profile": path})})
    history = [q for q in questions if "Napoleon" in q.question or "president" in q.question]
    sub = tmp_path / "history.jsonl"
    sub.write_text("".join(q.model_dump_json() + "\n" for q in history))
    one_by_one = ask_each(only_gamma, history)
    batch, _ = evaluated(only_gamma, sub, tmp_path / "eval")
    assert batch == one_by_one
    assert all(r["experts"] == ["gamma"] and r["fallback"] == "alpha" for r in batch.values()), batch


@pytest.mark.real
@pytest.mark.face
def test_ask_and_evaluate_agree_on_the_two_smallest_real_models(tmp_path: Path) -> None:
    """The parity face in ``make test``: one real ARC question routed (annotated, recruited, maybe
    aggregated, gated) over SmolLM2-135M and Gemma-270M with a profile that ranks them, each path
    with a cache of its own; the default pool's method experts take minutes a question (below)."""
    profile = tmp_path / "profile.json"
    path = tmp_path / "config.yaml"
    path.write_text("default_expert: smollm2-135m\nexperts:\n  qwen-coder-1.5b: null\n  qwen-coder-0.5b: null\n"
                    "  smollm2-135m: {routed: true}\n  gemma3-270m: {routed: true}\n"
                    f"recruit:\n  profile: {profile}\n")
    config = load_config(path)
    counts = {"smollm2-135m": SkillCount(right=6, wrong=4), "gemma3-270m": SkillCount(right=5, wrong=5)}
    save_profile(Profile(pool=pool_digest(config), annotator="smollm2-135m",
                         experts={n: ExpertProfile(skills={"science reasoning": c}, tasks={"arc_challenge": c})
                                  for n, c in counts.items()},
                         aggregators={n: ExpertProfile(tasks={"arc_challenge": c}) for n, c in counts.items()}),
                 profile)
    questions = load_split("arc_challenge", "test", limit=1, seed=3)
    task = tmp_path / "real1.jsonl"
    task.write_text("".join(q.model_dump_json() + "\n" for q in questions))
    one_by_one = ask_each(config, questions, cache=tmp_path / "ask.sqlite")
    batch, _ = evaluated(config, task, tmp_path / "eval")
    assert batch == one_by_one


@pytest.mark.real
@pytest.mark.parametrize("task", ["arc_challenge", "gsm8k", "nq_open"])
def test_ask_and_evaluate_agree_on_the_real_default_pool(task: str, tmp_path: Path) -> None:
    """A real test question of each answer format (ARC's letters, GSM8K's number, NQ-open's
    text), one per test, on the default pool and profile, each path with a cache of its own (so
    both generate everything). One question each: the method pool's chains of thought and
    programs make each routed question several generations (four took 310 s of CI's time; the
    ARC question alone took 517 s on a loaded 2-core machine, so ``make test``'s face is above)."""
    config = load_config()
    questions = load_split(task, "test", limit=1, seed=3)
    path = tmp_path / "real1.jsonl"
    path.write_text("".join(q.model_dump_json() + "\n" for q in questions))
    one_by_one = ask_each(config, questions, cache=tmp_path / "ask.sqlite")
    batch, _ = evaluated(config, path, tmp_path / "eval")
    assert batch == one_by_one
