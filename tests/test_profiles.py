"""Profiles: counting, the JSON file, and one-line errors for missing/corrupt/other-pool files."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from orchestrator.config import load_config
from orchestrator.profiles import (
    ExpertProfile,
    Outcome,
    Profile,
    ProfiledExample,
    ProfileError,
    SkillCount,
    load_profile,
    profile_from_outcomes,
    read_profile,
    save_profile,
)
from orchestrator.provenance import pool_digest


def test_counts_follow_the_method():
    outcomes = [
        Outcome(expert="a", question_id="1", task="t", skills=["algebra", "logic"], correct=True),
        Outcome(expert="a", question_id="2", task="t", skills=["algebra"], correct=False),
        Outcome(expert="b", question_id="1", task="t", skills=["algebra", "logic"], correct=False),
    ]
    profiles = profile_from_outcomes(outcomes, ["a", "b", "c"])
    assert profiles["a"].skills["algebra"] == SkillCount(right=1, wrong=1)
    assert profiles["a"].score("logic") == 1 and profiles["b"].score("logic") == -1
    assert profiles["a"].global_competence == 1 and profiles["b"].global_competence == -2
    assert profiles["c"].global_competence == 0 and profiles["a"].tasks["t"].n == 2


def _profile_for(config) -> Profile:
    return Profile(pool=pool_digest(config), annotator=config.default_expert,
                   experts={n: ExpertProfile(skills={"algebra": SkillCount(right=1)}) for n in config.experts})


def test_roundtrip_and_pool_check(tmp_path):
    config = load_config()
    path = tmp_path / "p.json"
    save_profile(_profile_for(config), path)
    loaded, where = load_profile(config, path)
    assert where == path and set(loaded.experts) == set(config.routing_pool)
    other = json.loads(path.read_text())
    other["pool"]["qwen-1.5b-cot"] = "llamacpp:cc324af070c2ecbf"  # the model, but not its method
    path.write_text(json.dumps(other))
    with pytest.raises(ProfileError, match="built for another pool.*symoe profile build"):
        load_profile(config, path)


@pytest.mark.parametrize("content,message", [
    ("{not json", "is corrupt"),
    ('{"format": "something-else"}', "is corrupt"),
    ('{"format": "symoe-profile", "version": 99}', "is corrupt"),
    ('{"format": "symoe-profile", "version": 1, "pool": {}}', "is corrupt"),
])
def test_corrupt_files_are_one_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ProfileError, match=message):
        read_profile(path)


@pytest.mark.parametrize("kind", ["missing", "corrupt", "other-pool"])
def test_cli_says_what_to_run(tmp_path, kind):
    path = tmp_path / "profile.json"
    if kind == "corrupt":
        path.write_text("{oops")
    elif kind == "other-pool":
        save_profile(Profile(pool={"someone-else": "llamacpp:1"}, annotator="x",
                             experts={"someone-else": ExpertProfile()}), path)
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "ask", "--profile", str(path), "What is 2+2?"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "symoe profile build" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_agreement_counts_the_questions_where_every_expert_stated_one_answer() -> None:
    """``Profile.agreement`` (array operations over ``AnswerTable``) counts what its definition
    says, on random profiles: the questions where each expert was graded and stated the same
    answer, and on how many of them the first was right (an ungraded, silent or unknown expert
    never agrees)."""
    import itertools
    import random

    rng = random.Random(0)
    for trial in range(200):
        experts = [f"e{i}" for i in range(rng.randint(1, 4))]
        examples = []
        for q in range(rng.randint(0, 25)):
            answers = {e: a for e in experts if (a := rng.choice(["A", "B", None])) is not None}
            examples.append(ProfiledExample(question=f"q{q}", answers=answers,
                                            correct={e: rng.random() < 0.5 for e in experts if rng.random() < 0.8}))
        profile = Profile(pool={}, annotator="a", experts={}, examples=examples)
        for size in (1, 2, 3):
            for group in itertools.combinations([*experts, "unknown"], size):
                agreed = [x for x in examples if all(e in x.correct for e in group) and x.agreed(group) is not None]
                assert profile.agreement(group) == (len(agreed), sum(x.correct[group[0]] for x in agreed)), trial
