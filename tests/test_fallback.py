"""Format-aware choice and fallback (issue 25), on scripted experts (no model runs).

A ``program`` expert is the best on validation here, as ``qwen-1.5b-program`` is in the
shipped profile; it cannot answer an open factual question, so no method that chooses by the
profile sends it one. When the chosen expert fails, ``best_single`` (and every routed method)
asks its next candidate and says so; a named expert (``single:NAME``, ``--model``) fails alone,
in one line naming it and why.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from agents.pool import ExpertSpec
from orchestrator.config import SymoeConfig, load_config
from orchestrator.graph import run
from orchestrator.methods import MethodSpec
from orchestrator.pipeline import Pipeline, Plan
from orchestrator.profiles import ExpertProfile, Profile, ProfiledExample, SkillCount
from orchestrator.provenance import pool_digest
from orchestrator.records import Query

FACT = "Which planet has the most moons known as of 2023?"
WORD = "A baker makes 24 muffins and sells them in boxes of 4. How many boxes does he sell?"

PROGRAM = "```python\ndef solution():\n    return 24 // 4\n```"
#: a program the sandbox refuses (it imports a module that reaches the network)
REFUSED = "```python\nimport requests\n\ndef solution():\n    return requests.get('https://x').text\n```"
SAYS = {"baker": "Answer: 6", "planet": "Answer: Saturn", "Which skills": "Keywords: astronomy"}


def embed(texts: list[str]) -> np.ndarray:
    """Stands in for MiniLM: a bag of hashed words (the same words, the same direction)."""
    rows = np.zeros((len(texts), 64), dtype=np.float32)
    for i, text in enumerate(texts):
        for word in text.lower().split():
            rows[i, int(hashlib.sha256(word.encode()).hexdigest()[:6], 16) % 64] += 1.0
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-9)


def make(tmp_path: Path, program_reply: str = PROGRAM, program_fails: bool = False) -> Pipeline:
    """'prog' (a program expert) is right on every validation question, 'cot' on two thirds,
    'direct' on a third; the default expert is 'direct'."""
    prog = {"answers": {"baker": program_reply, "planet": PROGRAM}, "fail": program_fails}
    specs = {"prog": ExpertSpec(name="prog", backend="fake", method="program", params=prog),
             "cot": ExpertSpec(name="cot", backend="fake", method="cot", params={"answers": SAYS}),
             "direct": ExpertSpec(name="direct", backend="fake", method="direct", params={"answers": SAYS})}
    config = SymoeConfig(home=tmp_path, experts=specs, default_expert="direct", retrieval={"mode": "never"},
                         clusters={"count": 1}, skills={"source": "neighbours"},
                         cascade={"min_accuracy": 0.0, "min_agreements": 1, "min_precision": 0.0})
    questions = [f"A farmer has {n} sheep and buys {n + 3} more. How many sheep now?" for n in range(6)] + \
                [f"Which river is the longest in country {n}?" for n in range(6)]
    examples = []
    for i, q in enumerate(questions):
        right = {"prog": True, "cot": i % 3 != 0, "direct": i % 3 == 0}
        examples.append(ProfiledExample(question=q, task="mix", skills=["astronomy", "arithmetic"], correct=right,
                                        answers={e: ("1" if ok else "2") for e, ok in right.items()},
                                        tokens={"prog": 200, "cot": 150, "direct": 5},
                                        prompt_tokens=dict.fromkeys(right, 50)))
    experts = {e: ExpertProfile(skills={s: SkillCount(right=r, wrong=12 - r) for s in ("astronomy", "arithmetic")},
                                tasks={"mix": SkillCount(right=r, wrong=12 - r)}, questions=12, tokens=12 * t)
               for e, r, t in (("prog", 12, 200), ("cot", 8, 150), ("direct", 4, 5))}
    profile = Profile(pool={}, annotator="direct", experts=experts, examples=examples,
                      aggregators={"cot": experts["cot"]})
    ctx = Pipeline(config, profile=profile)
    ctx.embed = embed
    return ctx


def ask(ctx: Pipeline, question: str, method: str) -> Plan:
    return run(ctx, [Query(question=question, task="mix")], [MethodSpec.parse(method, ctx.config)])[0]


ROUTERS = ["best_single", "task_best", "clusters", "cascade", "budget:1", "budget:0", "learned:knn", "symoe",
           "majority", "moa", "random_k"]


@pytest.mark.parametrize("method", ROUTERS)
def test_no_method_sends_an_open_question_to_a_program(tmp_path: Path, method: str) -> None:
    ctx = make(tmp_path)
    plan = ask(ctx, FACT, method)
    assert plan.format == "text"
    asked = {s.expert for s in plan.assignment.slots} | {a.expert for a in plan.answers}
    assert "prog" not in asked, (method, plan.assignment)
    assert plan.error is None and plan.answer == "Saturn", plan.answers


@pytest.mark.parametrize("method", ["best_single", "task_best", "budget:1"])
def test_a_word_problem_still_goes_to_the_program(tmp_path: Path, method: str) -> None:
    """The filter is by format: the program, best on validation, keeps the numbers."""
    plan = ask(make(tmp_path), WORD, method)
    assert plan.format == "number" and plan.experts == ["prog"]
    assert plan.answer == "6" and plan.fallback is None


def test_best_single_falls_back_to_its_next_candidate_when_the_sandbox_refuses(tmp_path: Path) -> None:
    plan = ask(make(tmp_path, program_reply=REFUSED), WORD, "best_single")
    assert plan.experts == ["prog"] and plan.assignment.backups[0] == "cot"
    first, fell_back = plan.answers
    assert not first.ok and first.error and first.error.startswith("program:")
    assert fell_back.fallback and fell_back.expert == "cot" and plan.fallback == "cot"
    assert plan.answer == "6" and plan.error is None
    assert [s.step for s in plan.steps if s.step != "gate"] == ["expert:prog#0", "fallback:cot"]


def test_a_failed_fallback_asks_the_default_expert(tmp_path: Path) -> None:
    """The program fails, then the next candidate fails too: the default expert answers."""
    ctx = make(tmp_path, program_fails=True)
    ctx.config.experts["cot"] = ctx.config.experts["cot"].model_copy(update={"params": {"fail": True}})
    plan = ask(ctx, WORD, "task_best")
    assert [a.expert for a in plan.answers] == ["prog", "cot", "direct"]
    assert [a.fallback for a in plan.answers] == [False, True, True]
    assert plan.fallback == "direct" and plan.answer == "6" and plan.error is None


def test_a_named_expert_fails_alone_in_one_line(tmp_path: Path) -> None:
    plan = ask(make(tmp_path, program_reply=REFUSED), WORD, "single:prog")
    assert plan.fallback is None and [a.expert for a in plan.answers] == ["prog"]
    assert plan.answer is None and plan.error is not None
    assert plan.error.startswith("expert 'prog' failed: program: ") and "\n" not in plan.error
    assert "requests" in plan.error  # why: the module the sandbox refused


def test_ask_with_model_prints_one_error_line_naming_the_expert(symoe_cli, tmp_path: Path) -> None:
    config = tmp_path / "pool.yaml"
    config.write_text(yaml.safe_dump({
        "replace_pool": True, "default_expert": "direct", "retrieval": {"mode": "never"},
        "experts": {"direct": {"backend": "fake", "method": "direct", "params": {"answers": SAYS}},
                    "prog": {"backend": "fake", "method": "program", "params": {"answers": {"baker": REFUSED}}}}}))
    proc = symoe_cli("ask", "--config", str(config), "--model", "prog", WORD,
                     env={"SYMOE_HOME": str(tmp_path / "home")})
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1 and "expert 'prog' failed: program:" in lines[0] and "requests" in lines[0], proc.stderr


def test_ask_says_on_stderr_that_another_expert_answered(symoe_cli, tmp_path: Path) -> None:
    """best_single's program fails in the sandbox: the answer is printed, and a note says who
    failed, why, and who answered instead."""
    config = tmp_path / "pool.yaml"
    config.write_text(yaml.safe_dump({
        "replace_pool": True, "default_expert": "direct", "retrieval": {"mode": "never"},
        "experts": {"direct": {"backend": "fake", "method": "direct", "params": {"answers": SAYS}},
                    "prog": {"backend": "fake", "method": "program", "params": {"answers": {"baker": REFUSED}}}}}))
    profile = tmp_path / "profile.json"
    routed = make(tmp_path).profile.restricted(["prog", "direct"])
    routed.pool = pool_digest(load_config(config))
    profile.write_text(routed.model_dump_json())
    proc = symoe_cli("ask", "--config", str(config), "--profile", str(profile), "--router", "best_single", WORD,
                     env={"SYMOE_HOME": str(tmp_path / "home")})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "6"
    assert "prog failed (program:" in proc.stderr and "direct answered instead" in proc.stderr, proc.stderr
