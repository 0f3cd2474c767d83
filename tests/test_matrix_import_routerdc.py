"""The ``routerdc`` importer: RouterDC-style ``{question, scores}`` JSON (RouterDC's and
ulab-uiuc/LLMRouter's files), with LLMRouter's query files for the task, gold and choices."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval.matrix import MatrixError, read_matrix, write_matrix
from eval.matrix_importers import import_matrix, importers

MODELS = ("qwen2.5-7b-instruct", "gemma-2-9b-it", "llama-3.1-8b-instruct")


def scores(*values: float) -> dict[str, float]:
    return dict(zip(MODELS, values, strict=True))


def write_llmrouter(root: Path) -> tuple[Path, Path]:
    """A small copy of LLMRouter's layout: dcrouter_preprocessed/{train,test}.json and query files."""
    scored, queries = root / "dcrouter_preprocessed", root / "query_data"
    scored.mkdir(parents=True)
    queries.mkdir()
    train = [
        {"question": "Which gas do plants take in?", "scores": scores(1.0, 0.0, 1.0)},
        {"question": "Natalia sold 48 clips. How many in all?", "scores": scores(0.0, 1.0, 0.9)},
        {"question": "who sings i've got to be me", "scores": scores(0.5, 0.25, 0.0)},
        {"question": "What is $1+1$?", "scores": scores(1.0, 1.0, 0.0)},
        {"question": "def add(a, b):", "scores": scores(0.0, 0.0, 1.0)},
    ]
    test = [
        {"question": "Which gas do plants take in?", "scores": scores(0.0, 0.0, 1.0)},  # repeated, other scores
        {"question": "Which planet is red?", "scores": scores(1.0, 1.0, 1.0)},
    ]
    (scored / "train.json").write_text(json.dumps(train))
    (scored / "test.json").write_text(json.dumps(test))
    lines = [
        {"task_name": "arc_challenge", "query": "Which gas do plants take in?", "metric": "em_mc", "ground_truth": "2",
         "choices": "{'text': ['oxygen', 'carbon dioxide'], 'label': ['1', '2']}"},
        {"task_name": "mmlu", "query": "Which gas do plants take in?", "metric": "em_mc", "ground_truth": "B",
         "choices": "['oxygen', 'carbon dioxide']"},  # the same text under a second task: the first is kept
        {"task_name": "gsm8k", "query": "Natalia sold 48 clips. How many in all?", "metric": "GSM8K",
         "ground_truth": "She sold 48 + 24 = 72.\n#### 72", "choices": None},
        {"task_name": "natural_qa", "query": "who sings i've got to be me", "metric": "f1_score",
         "ground_truth": "Sammy Davis, Jr", "choices": None},
        {"task_name": "math", "query": "What is $1+1$?", "metric": "MATH",
         "ground_truth": "We add: $1+1=\\boxed{2}$.", "choices": None},
        {"task_name": "mbpp", "query": "def add(a, b):", "metric": "code_eval",
         "ground_truth": "['assert add(1, 2) == 3']", "choices": "['assert add(1, 2) == 3']"},
        {"task_name": "openbook_qa", "query": "Which planet is red?", "metric": "em_mc", "ground_truth": "A",
         "choices": "{'text': ['Mars', 'Venus', 'Earth'], 'label': ['A', 'B', 'C']}"},
    ]
    (queries / "default_query_train.jsonl").write_text("\n".join(json.dumps(d) for d in lines) + "\n")
    return scored, queries


def test_routerdc_is_registered() -> None:
    assert "routerdc" in importers.names()


def test_llmrouter_import(tmp_path: Path) -> None:
    scored, queries = write_llmrouter(tmp_path)
    result = import_matrix("routerdc", [scored / "train.json", scored / "test.json", queries])
    m = result.matrix
    assert m.experts == list(MODELS)
    assert [r.task for r in m.rows] == ["arc_challenge", "gsm8k", "natural_qa", "math", "mbpp", "openbook_qa"]
    assert {r.split for r in m.rows} == {"validation"}
    arc, gsm, nq, math, mbpp, obqa = m.rows
    # choices from a dict of texts and labels; a numeric label becomes its letter
    assert arc.choices == ["oxygen", "carbon dioxide"] and arc.answer == "B"
    assert gsm.answer == "72" and gsm.choices is None
    assert nq.answer == "Sammy Davis, Jr"
    assert math.answer == "2"  # the last \boxed{} of a solution
    assert mbpp.answer is None and mbpp.choices is None  # code: tests are not choices
    assert obqa.choices == ["Mars", "Venus", "Earth"] and obqa.answer == "A"
    # partial credit is kept; the repeated question keeps its first (train) record
    assert m.correct().tolist()[0] == [1.0, 0.0, 1.0]
    assert m.correct().tolist()[2] == [0.5, 0.25, 0.0]
    assert len({r.id for r in m.rows}) == len(m.rows)
    assert any("1 repeated question text(s)" in n and "1 of them recorded other scores" in n for n in result.notes)
    assert any("1 question text(s) appear under two tasks" in n for n in result.notes)
    # the written file reads back the same
    write_matrix(m, tmp_path / "m.jsonl.gz")
    assert read_matrix(tmp_path / "m.jsonl.gz").correct().tolist() == m.correct().tolist()


def test_routerdc_without_query_files_takes_the_stem_and_split(tmp_path: Path) -> None:
    path = tmp_path / "gsm8k-test.json"
    path.write_text(json.dumps([{"question": "2+2?", "scores": {"a": 1, "b": 0}},
                                {"question": "3+3?", "scores": {"a": 0.3, "b": 0.8}}]))
    m = import_matrix("routerdc", [path], split="test").matrix
    assert [r.task for r in m.rows] == ["gsm8k-test", "gsm8k-test"]
    assert {r.split for r in m.rows} == {"test"}
    assert m.correct().tolist() == [[1.0, 0.0], [0.3, 0.8]]


def test_routerdc_bad_input_names_file_item_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"question": "q", "scores": {"a": 1}}, {"question": "r", "scores": {"a": 1.5}}]))
    with pytest.raises(MatrixError, match=r"bad.json: item 1: field 'scores.a': 1.5 is outside 0..1"):
        import_matrix("routerdc", [bad])
    bad.write_text(json.dumps([{"scores": {"a": 1}}]))
    with pytest.raises(MatrixError, match=r"bad.json: item 0: field 'question': missing"):
        import_matrix("routerdc", [bad])
    bad.write_text(json.dumps({"question": "q"}))
    with pytest.raises(MatrixError, match=r"not a RouterDC score file"):
        import_matrix("routerdc", [bad])
    bad.write_text("[{")
    with pytest.raises(MatrixError, match=r"cannot read .*bad.json"):
        import_matrix("routerdc", [bad])
    query = tmp_path / "q.jsonl"
    query.write_text(json.dumps({"query": "q"}) + "\n")
    bad.write_text(json.dumps([{"question": "q", "scores": {"a": 1}}]))
    with pytest.raises(MatrixError, match=r"q.jsonl:1: field 'task_name': missing"):
        import_matrix("routerdc", [bad, query])
    with pytest.raises(MatrixError, match=r"no RouterDC score files"):
        import_matrix("routerdc", [query])
    # two experts with uneven coverage: only questions every expert answered are kept, with a note
    bad.write_text(json.dumps([{"question": "q", "scores": {"a": 1, "b": 0}}, {"question": "r", "scores": {"a": 1}}]))
    result = import_matrix("routerdc", [bad])
    assert len(result.matrix.rows) == 1 and any("did not answer" in n for n in result.notes)
