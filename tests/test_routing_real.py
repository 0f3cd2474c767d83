"""Skill routing on real models: annotation, a small real profile, `symoe ask --explain`."""

from __future__ import annotations

import subprocess
import sys

import pytest

from agents.cache import GenerationCache
from agents.runtime import LoadedPool
from orchestrator.config import load_config
from orchestrator.profiles import read_profile, save_profile
from orchestrator.profiling import BuildSpec, build_profile
from skills.annotate import annotate_many
from skills.vocabulary import SkillMatcher

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
    pool = LoadedPool(config.experts, config.home)
    matcher = SkillMatcher(config.embedding, config.skills.match_threshold)
    cache = GenerationCache(tmp_path / "cache.sqlite")
    anns = annotate_many(list(questions), pool.get(config.default_expert), matcher, config.skills, cache=cache)
    for ann, (question, expected) in zip(anns, questions.items(), strict=True):
        assert ann.skills, f"no skill for {question!r}: samples {ann.samples}"
        assert set(ann.skills) <= set(matcher.skills)
        assert set(ann.skills) & expected, (question, ann.skills, ann.samples)
        assert len(ann.samples) == config.skills.samples
    # cached: a second pass generates nothing
    stored = cache.count()
    annotate_many(list(questions), pool.get(config.default_expert), matcher, config.skills, cache=cache)
    assert cache.count() == stored and cache.hits >= stored
    pool.close()


def test_profile_from_a_small_real_run(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("experts:\n  qwen-coder-0.5b: null\n  gemma3-270m: null\n")
    config = load_config(path)
    spec = BuildSpec(tasks=["mmlu:4", "arc_challenge:2"], seed=0, aggregator_items=4)
    profile = build_profile(config, spec)
    assert set(profile.experts) == {"qwen-coder-1.5b", "smollm2-135m"}
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
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "ask", "--explain", "What is 17 * 23?"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "skills" in text and ("arithmetic" in text or "algebra" in text), text
    assert "recruitment" in text and "weight" in text
    assert "profile" in text and "default_profile.json" in text
    assert text.strip().splitlines()[-1].strip() == "391", text
