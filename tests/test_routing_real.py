"""Skill routing on real models: annotation, a small real profile, `symoe ask --explain`."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from agents.cache import GenerationCache
from eval.profiling import BuildSpec, build_profile
from orchestrator.config import load_config
from orchestrator.pipeline import Pipeline, annotate
from orchestrator.profiles import read_profile, save_profile
from orchestrator.records import Query

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def config():
    return load_config()


def test_annotation_names_canonical_skills_in_three_domains(config, tmp_path):
    questions = {
        "What is 17 * 23?": {"arithmetic", "algebra", "word problems"},
        "Which organ produces insulin in the human body?": {"anatomy and physiology", "medicine", "biology"},
        "Which of the following is a reason to exclude hearsay evidence in court?": {"law"},
        "Who was the first president of the United States?": {"history", "politics and government"},
    }
    cache = GenerationCache(tmp_path / "cache.sqlite")
    ctx = Pipeline(config, cache=cache)
    queries = [Query(question=q) for q in questions]
    anns = annotate(ctx, queries, seed=0)
    for query, (question, expected) in zip(queries, questions.items(), strict=True):
        ann, jobs = anns[query.id]
        assert ann.skills, f"no skill for {question!r}: samples {ann.samples}"
        assert set(ann.skills) <= set(ctx.matcher.skills)
        assert set(ann.skills) & expected, (question, ann.skills, ann.samples)
        assert len(ann.samples) == config.skills.samples == len(jobs)
        assert all(j.usage.completion_tokens > 0 for j in jobs), "every sample's real cost is recorded"
    # cached: a second pass generates nothing
    stored, generated = cache.count(), ctx.stats.generated
    again = annotate(ctx, queries, seed=0)
    assert cache.count() == stored and ctx.stats.generated == generated
    assert all(j.cached for _, jobs in again.values() for j in jobs)
    ctx.close()


def test_profile_from_a_small_real_run(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("experts:\n  qwen-coder-0.5b: null\n  gemma3-270m: null\n  qwen-1.5b-cot: null\n"
                    "  qwen-1.5b-program: null\n  smollm2-135m: {routed: true}\n")
    config = load_config(path)
    spec = BuildSpec(tasks=["mmlu:4", "arc_challenge:2"], seed=0, aggregator_items=4)
    profile = build_profile(config, spec)
    assert set(profile.experts) == {"qwen-1.5b-direct", "smollm2-135m"}
    for name, prof in profile.experts.items():
        assert sum(c.n for c in prof.tasks.values()) == 6, name
        assert prof.skills, f"{name} has no skill counts"
        for count in prof.skills.values():
            assert count.right + count.wrong == count.n >= 1
    assert profile.data["questions"] == 6
    out = tmp_path / "profile.json"
    save_profile(profile, out)
    again = read_profile(out)
    assert again.experts == profile.experts and again.pool == profile.pool


def test_ask_explain_routes_a_math_question():
    """Skill routing's explanation (``--router symoe``: the LLM names the skills, experts are
    recruited on them); the default router is the profile's, chosen by replay (below)."""
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "ask", "--explain", "--router", "symoe",
                           "What is 17 * 23?"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "skills" in text and ("arithmetic" in text or "algebra" in text), text
    assert "recruitment" in text and "weight" in text
    assert "profile" in text and "default_profile.json" in text
    assert text.strip().splitlines()[-1].strip() == "391", text


@pytest.mark.parametrize(("question", "methods", "answer"), [
    ("A baker makes 24 muffins and sells them in boxes of 4. Each box costs 3 dollars. "
     "How much money does the baker make?", ("program",), "18"),
    ("In which year did the Berlin Wall fall?", ("direct", "cot"), "1989"),
])
def test_explain_shows_a_word_problem_going_to_a_reasoning_expert_and_history_to_a_direct_answer(
        question: str, methods: tuple[str, ...], answer: str) -> None:
    """The default router (the shipped profile's, chosen by replay on the default-pool matrix:
    ``format_best`` at 712 questions, picked with each question's task unknown) sends the word
    problem to the program expert (on the matrix's validation numbers the most accurate, 51/107
    against chain of thought's 45/107, at 222 tokens a question against 540) and the history
    question to a cheap answer of
    a few tokens (a direct answer, or the 1.5B's chain of thought, the best on validation's
    open-text questions, which answers it in 7 tokens; a program cannot answer free text);
    ``--explain`` gives the reason (the router's record, scores, or skills and weights)."""
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "ask", "--explain", "--retrieval", "never",
                           question], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    answered = [line for line in text.splitlines() if "qwen-" in line and any(f" {m} " in line for m in methods)]
    assert answered, text  # the expert that answered, with its method shown
    assert "routing:" in text or ("local score" in text and "global strength" in text), text  # the reason
    assert text.strip().splitlines()[-1].strip() == answer, text
    if answer == "1989":  # cheap: a short answer, not a worked one
        assert int(re.search(r"(\d+) completion tokens", text).group(1)) <= 32, text  # type: ignore[union-attr]
