"""Outcome matrices (issue 23): the format, its one-line errors, the importers on small fixtures
(tests/data/matrix/), and the routers that learn from a matrix. Fast: no LLM, no embedder."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import one_error_line

from eval.learned_routers import RouterError, cross_fitted_scores, embed_texts, fold_of, routers
from eval.matrix import Matrix, MatrixError, MatrixRow, RecordedOutcome, read_matrix, write_matrix
from eval.matrix_importers import import_matrix, importers

DATA = Path(__file__).parent / "data" / "matrix"


def row(qid: str, task: str = "t", split: str = "validation", **outcomes: dict) -> MatrixRow:
    return MatrixRow(id=qid, task=task, split=split, question=f"question {qid}",  # type: ignore[arg-type]
                     outcomes={e: RecordedOutcome(**o) for e, o in outcomes.items()})


def small_matrix() -> Matrix:
    return Matrix([
        MatrixRow(id="q1", task="math", split="validation", question="2+2?", answer="4", skills=["arithmetic"],
                  outcomes={"a": RecordedOutcome(correct=1, answer="4", prompt_tokens=10, completion_tokens=2,
                                                 seconds=0.1, cost=0.001, margin=2.5),
                            "b": RecordedOutcome(correct=0, answer="5", prompt_tokens=20, completion_tokens=3)}),
        MatrixRow(id="q2", task="math", split="test", question="3*3?", answer=9,
                  outcomes={"a": RecordedOutcome(correct=0), "b": RecordedOutcome(correct=1, prompt_tokens=30)}),
        MatrixRow(id="q3", task="mc", split="test", question="Capital of Italy?", choices=["Paris", "Rome"],
                  answer="B", outcomes={"a": RecordedOutcome(correct=0.5, cost=0.003),
                                        "b": RecordedOutcome(correct=0)}),
    ])


# ---------------------------------------------------------------------- format

@pytest.mark.parametrize("name", ["m.jsonl", "m.jsonl.gz"])
def test_round_trip(tmp_path: Path, name: str) -> None:
    m = small_matrix()
    path = write_matrix(m, tmp_path / name)
    back = read_matrix(path)
    assert back.rows == m.rows and back.experts == ["a", "b"]
    if name.endswith(".gz"):
        assert path.read_bytes()[:2] == b"\x1f\x8b"
        first = path.read_bytes()
        write_matrix(back, path)
        assert path.read_bytes() == first  # the same matrix gives the same bytes (timestamp 0)
    else:  # only what was recorded is written
        first = json.loads(path.read_text().splitlines()[1])
        assert first["outcomes"]["a"] == {"correct": 0.0} and "choices" not in first


def test_matrix_summaries() -> None:
    m = small_matrix()
    assert m.tasks == ["math", "mc"] and m.splits == ["validation", "test"]
    assert m.accuracy() == pytest.approx({"a": 0.5, "b": 1 / 3})
    assert m.oracle_accuracy() == pytest.approx((1 + 1 + 0.5) / 3)
    assert m.best_single() == "a"
    assert m.mean_cost("tokens") == {"a": 12.0, "b": 26.5}
    assert m.mean_cost("usd") == pytest.approx({"a": 0.002, "b": None})
    assert m.correct().tolist() == [[1, 0], [0, 1], [0.5, 0]]
    cost = m.cost("usd")
    assert cost[0, 0] == 0.001 and np.isnan(cost[1, 0]) and np.isnan(cost[:, 1]).all()
    test = m.select(split="test")
    assert test.ids == ["q2", "q3"] and m.select(tasks=["mc"]).ids == ["q3"]
    only_b = m.select(experts=["b"])
    assert only_b.experts == ["b"] and only_b.accuracy() == {"b": pytest.approx(1 / 3)}
    assert m.counts() == {"math": {"validation": 1, "test": 1}, "mc": {"validation": 0, "test": 1}}
    assert m.task_index().tolist() == [0, 0, 1]
    with pytest.raises(MatrixError, match="no expert 'c'"):
        m.select(experts=["c"])


GOOD = {"id": "q1", "task": "t", "split": "validation", "question": "?",
        "outcomes": {"a": {"correct": 1}, "b": {"correct": 0}}}


def _with(**changes: object) -> dict:
    line = json.loads(json.dumps(GOOD))
    line.update({"id": "q2"})
    for key, value in changes.items():
        if value is None:
            line.pop(key)
        else:
            line[key] = value
    return line


BAD = [  # (second line, what the error names)
    (_with(task=None), "field 'task': missing"),
    (_with(outcomes={"a": {"correct": 1}}), "field 'outcomes.b': missing (line 1 has it"),
    (_with(outcomes={"a": {"correct": 1}, "b": {"correct": 0}, "c": {"correct": 1}}),
     "field 'outcomes.c': expert not on line 1"),
    (_with(outcomes={"a": {"correct": 1.5}, "b": {"correct": 0}}), "field 'outcomes.a.correct': 1.5 is outside 0..1"),
    (_with(outcomes={"a": {"correct": -1}, "b": {"correct": 0}}), "field 'outcomes.a.correct': -1 is outside 0..1"),
    (_with(outcomes={"a": {"answer": "x"}, "b": {"correct": 0}}), "field 'outcomes.a.correct': missing"),
    (_with(id="q1"), "field 'id': 'q1' repeats line 1"),
    (_with(split="train"), "field 'split': 'train' is not validation or test"),
    (_with(outcomes={"a": {"correct": 1, "corect": 1}, "b": {"correct": 0}}), "field 'outcomes.a.corect'"),
    (_with(outcomes={"a": {"correct": 1, "prompt_tokens": -3}, "b": {"correct": 0}}),
     "field 'outcomes.a.prompt_tokens'"),
    (_with(outcomes={}), "field 'outcomes'"),
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
]


@pytest.mark.parametrize(("second", "expected"), BAD, ids=[e for _, e in BAD])
@pytest.mark.parametrize("gz", [False, True], ids=["jsonl", "gz"])
def test_bad_input_is_one_line_naming_file_line_and_field(tmp_path: Path, second: object, expected: str,
                                                         gz: bool) -> None:
    text = json.dumps(GOOD) + "\n\n" + (second if isinstance(second, str) else json.dumps(second)) + "\n"
    path = tmp_path / ("m.jsonl.gz" if gz else "m.jsonl")
    if gz:
        import gzip

        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    with pytest.raises(MatrixError) as info:
        read_matrix(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:3: "), message  # line 3: blank lines count
    assert expected in message


def test_empty_and_unreadable_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(MatrixError, match="no questions"):
        read_matrix(empty)
    with pytest.raises(MatrixError, match="cannot read"):
        read_matrix(tmp_path / "absent.jsonl")
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(MatrixError, match="not a readable gzip file"):
        read_matrix(broken)
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(json.dumps(GOOD).encode() + b"\n\xe9\n")
    with pytest.raises(MatrixError, match=r"latin.jsonl:2: not valid UTF-8"):
        read_matrix(latin)


def test_matrix_checks_rows_built_in_code() -> None:
    with pytest.raises(MatrixError, match="field 'outcomes': expert 'b' is missing"):
        Matrix([row("q1", a={"correct": 1}, b={"correct": 0}), row("q2", a={"correct": 1})])
    with pytest.raises(MatrixError, match="field 'id': 'q1' repeats"):
        Matrix([row("q1", a={"correct": 1}), row("q1", a={"correct": 0})])


# ---------------------------------------------------------------------- importers

def test_importers_are_a_registry() -> None:
    assert {"lm-eval", "routerbench", "routellm", "symoe"} <= set(importers.names())
    with pytest.raises(MatrixError, match="--split must be validation or test"):
        import_matrix("routerbench", [DATA / "routerbench.csv"], split="train")


def test_lm_eval_import() -> None:
    result = import_matrix("lm-eval", [DATA / "lm-eval"])
    m = result.matrix
    # alpha's model_name is empty: the name comes from config.model_args' pretrained=
    assert m.experts == ["org/alpha-7b", "org/beta-8b"]
    assert m.counts() == {"arc_easy": {"validation": 3, "test": 0}, "gsm8k": {"validation": 2, "test": 0}}
    assert result.notes == ["left out 1 question(s) of task 'gsm8k' that expert 'org/beta-8b' did not answer"]
    arc = m.select(tasks=["arc_easy"])
    first = arc.rows[0]
    assert first.question == "Which gas do plants take in?" and first.choices == ["oxygen", "carbon dioxide", "helium"]
    assert first.answer == "B" and first.id.startswith("arc_easy-")
    assert first.outcomes["org/alpha-7b"].answer == "B" and first.outcomes["org/alpha-7b"].margin == pytest.approx(0.8)
    assert arc.correct().tolist() == [[1, 1], [1, 0], [0, 1]]
    # one filter per task, the first the file holds (strict-match): alpha's "[invalid]" is wrong
    gsm = m.select(tasks=["gsm8k"])
    assert gsm.correct().tolist() == [[1, 0], [0, 1]]
    assert [r.outcomes["org/alpha-7b"].answer for r in gsm] == ["5", "[invalid]"]


def _copy_lm_eval(tmp_path: Path) -> Path:
    target = tmp_path / "lm-eval"
    shutil.copytree(DATA / "lm-eval", target)
    return target


def test_lm_eval_metric_oriented_by_higher_is_better(tmp_path: Path) -> None:
    folder = _copy_lm_eval(tmp_path)
    for results in folder.rglob("results_*.json"):
        data = json.loads(results.read_text())
        data["higher_is_better"]["arc_easy"]["acc"] = False
        results.write_text(json.dumps(data))
    m = import_matrix("lm-eval", [folder]).matrix.select(tasks=["arc_easy"])
    assert m.correct().tolist() == [[0, 0], [0, 1], [1, 0]]


def test_lm_eval_bad_input(tmp_path: Path) -> None:
    folder = _copy_lm_eval(tmp_path)
    results = next((folder / "org__beta").glob("results_*.json"))
    results.unlink()
    with pytest.raises(MatrixError, match=f"samples_arc_easy_.*: no {results.name} beside it"):
        import_matrix("lm-eval", [folder])
    folder = _copy_lm_eval(tmp_path / "2")
    samples = next((folder / "org__alpha").glob("samples_arc_easy_*.jsonl"))
    lines = samples.read_text().splitlines()
    bad = json.loads(lines[1])
    bad["acc"] = 35.0
    samples.write_text("\n".join([lines[0], json.dumps(bad), *lines[2:]]) + "\n")
    with pytest.raises(MatrixError) as info:
        import_matrix("lm-eval", [folder])
    assert str(info.value).startswith(f"{samples}:2: field 'acc': 35.0 is outside 0..1")
    with pytest.raises(MatrixError, match="no lm-eval samples_"):
        import_matrix("lm-eval", [DATA / "symoe"])


def test_routerbench_import() -> None:
    m = import_matrix("routerbench", [DATA / "routerbench.csv"], split="test").matrix
    assert m.experts == ["small", "big"] and m.tasks == ["mmlu", "gsm8k"] and m.splits == ["test"]
    assert m.ids == ["mmlu.anatomy.1", "mmlu.anatomy.2", "gsm8k.1", "gsm8k.2"]
    assert m.correct().tolist() == [[1, 1], [0, 1], [0, 0], [1, 1]]
    assert m.mean_cost("usd") == pytest.approx({"small": 1.5e-5, "big": 6.5e-4})
    assert m.rows[1].outcomes["big"].answer == "B"


def test_routerbench_bad_score_names_file_line_and_column(tmp_path: Path) -> None:
    with (DATA / "routerbench.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    rows[1]["big"] = "7"
    path = tmp_path / "rb.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(MatrixError) as info:
        import_matrix("routerbench", [path])
    # the second row starts on line 5: the first row's prompt holds two line breaks
    assert str(info.value).startswith(f"{path}:5: field 'big': 7.0 is outside 0..1"), info.value
    no_prompt = tmp_path / "np.csv"
    no_prompt.write_text("question,a,b\nx,1,0\n")
    with pytest.raises(MatrixError, match=r"np.csv:1: field 'prompt': missing"):
        import_matrix("routerbench", [no_prompt])


def test_routellm_import() -> None:
    result = import_matrix("routellm", [DATA / "routellm" / "evals"])
    m = result.matrix
    assert m.experts == ["mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"]
    assert m.counts() == {"mmlu": {"validation": 2, "test": 0}, "gsm8k": {"validation": 2, "test": 0}}
    assert any("1 prompt(s) of task 'mmlu'" in n and "contaminated" in n for n in result.notes)
    nucleus = m.rows[0]  # roman numerals inside the stem are not options
    assert nucleus.question.endswith("II. Protein") and nucleus.choices == ["I only", "II only", "I and II", "neither"]
    gsm = m.select(tasks=["gsm8k"])
    assert [r.answer for r in gsm] == ["5", "24"]
    assert [r.outcomes["mistralai/Mixtral-8x7B-Instruct-v0.1"].answer for r in gsm] == ["5", "20"]
    assert [r.outcomes["gpt-4-1106-preview"].answer for r in gsm] == ["5", "24"]
    assert m.correct().tolist() == [[1, 1], [0, 1], [1, 1], [0, 1]]


def test_symoe_import(tmp_path: Path) -> None:
    result = import_matrix("symoe", [DATA / "symoe"], home=tmp_path)
    m = result.matrix
    assert m.experts == ["a", "b"] and m.ids == ["toy-1", "toy-2", "toy-3"]  # the "symoe" method's row is not an expert
    by_id = {r.id: r for r in m}
    assert by_id["toy-3"].split == "test"  # the question's own split
    assert by_id["toy-2"].choices == ["Paris", "Rome"] and by_id["toy-2"].answer == "A"
    b = by_id["toy-2"].outcomes["b"]
    assert (b.correct, b.answer, b.prompt_tokens, b.completion_tokens, b.seconds, b.margin) == (1, "A", 80, 3, 0.5, 1.5)
    assert m.correct().tolist() == [[1, 0], [0, 1], [1, 1]]
    assert import_matrix("symoe", [DATA / "symoe"], split="validation", home=tmp_path).matrix.splits == ["validation"]


def test_symoe_import_needs_the_questions(tmp_path: Path) -> None:
    with pytest.raises(MatrixError, match=r"task 'toy'.*symoe data prepare toy"):
        import_matrix("symoe", [DATA / "symoe" / "samples.jsonl"], home=tmp_path)


def _cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``symoe ARGS`` in this process (the console script's ``main``): exit code, stdout, stderr."""
    from orchestrator.cli import main

    monkeypatch.setattr("sys.argv", ["symoe", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def test_cli_import_and_show(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "rb.jsonl.gz"
    code, stdout, stderr = _cli(monkeypatch, capsys, "matrix", "import", "routerbench", str(DATA / "routerbench.csv"),
                                "--output", str(output))
    assert code == 0, stderr
    assert "4 questions x 2 experts" in stdout and read_matrix(output).experts == ["small", "big"]
    code, stdout, stderr = _cli(monkeypatch, capsys, "matrix", "show", str(output))
    assert code == 0, stderr
    assert "oracle" in stdout and "75.0" in stdout and "$0.00065" in stdout
    code, stdout, _ = _cli(monkeypatch, capsys, "matrix", "show", str(output), "--json")
    assert json.loads(stdout)["tasks"]["all"]["accuracy"] == {"small": 0.5, "big": 0.75}
    code, _, stderr = _cli(monkeypatch, capsys, "matrix", "import", "routerbnch", "x", "-o", str(output))
    assert code == 2 and stderr.count("\n") == 1 and "did you mean 'routerbench'" in stderr
    code, _, stderr = _cli(monkeypatch, capsys, "matrix", "import", "lm-eval", str(DATA / "lm-eval"), "-o",
                           str(tmp_path / "l.jsonl"))
    assert code == 0 and "note: left out 1 question(s) of task 'gsm8k'" in stderr


def test_cli_bad_matrix_is_one_error_line(tmp_path: Path, symoe_cli) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(GOOD) + "\n" + json.dumps(_with(split="train")) + "\n")
    one_error_line(symoe_cli("matrix", "show", str(bad)), f"{bad}:2: field 'split': 'train' is not validation or test")


# ---------------------------------------------------------------------- routers

def synthetic(n: int = 900, dims: int = 16, seed: int = 0) -> tuple[Matrix, np.ndarray, np.ndarray]:
    """Three clusters of questions; expert j is right 90% of the time in cluster j, 40% elsewhere
    (expert 0 a little better overall), so the best expert per cluster is known."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, dims)) * 3
    cluster = rng.integers(0, 3, n)
    x = (centres[cluster] + rng.normal(size=(n, dims))).astype(np.float32)
    p = np.full((n, 3), 0.4)
    p[np.arange(n), cluster] = 0.9
    p[:, 0] += 0.05
    correct = (rng.random((n, 3)) < p).astype(float)
    rows = [MatrixRow(id=f"q{i}", task=f"task{cluster[i] % 2}", split="validation", question=f"q{i}",
                      outcomes={f"e{j}": RecordedOutcome(correct=correct[i, j]) for j in range(3)})
            for i in range(n)]
    return Matrix(rows), x, cluster


@pytest.mark.parametrize("name", ["knn", "logreg", "mlp", "mf"])
def test_routers_beat_best_single_when_experts_differ_by_cluster(name: str) -> None:
    m, x, cluster = synthetic()
    y = m.correct()
    best_single = y.mean(axis=0).max()
    oracle_by_cluster = y[np.arange(len(y)), cluster].mean()
    scores = cross_fitted_scores(lambda: routers.get(name)(seed=0), m, x, folds=5, seed=0)
    chosen = scores.argmax(axis=1)
    routed = y[np.arange(len(y)), chosen].mean()
    assert (chosen == cluster).mean() > 0.9, name
    assert routed > best_single + 0.2 and routed > oracle_by_cluster - 0.05, (name, routed, best_single)


def test_router_fit_score_contract() -> None:
    m, x, cluster = synthetic(n=300)
    for name in routers.names():
        router = routers.get(name)(seed=1)
        with pytest.raises(RouterError, match="before fit"):
            router.score(x)
        assert router.fit(Matrix(m.rows), x) is router
        s = router.score(x[:7], tasks=["task0"] * 7)
        assert s.shape == (7, 3) and np.all((s >= 0) & (s <= 1)), name
        assert router.score(x[:0]).shape == (0, 3)
        assert router.route(x[:5]).shape == (5,)
        with pytest.raises(RouterError, match="embeddings of shape"):
            router.fit(m, x[:10])
    assert not routers.get("knn")().uses_task and routers.get("logreg")().uses_task


def test_router_cost_trade_off_and_constant_experts() -> None:
    m, x, _ = synthetic(n=200)
    # an expert that is always right and one always wrong: scored as such, no model fitted for them
    rows = [r.model_copy(update={"outcomes": {**r.outcomes, "always": RecordedOutcome(correct=1),
                                              "never": RecordedOutcome(correct=0)}}) for r in m.rows]
    wide = Matrix(rows)
    for name in routers.names():
        s = routers.get(name)(seed=0).fit(wide, x).score(x[:10])
        assert np.all(s[:, 3] > 0.9) and np.all(s[:, 4] < 0.1), name
    router = routers.get("knn")().fit(wide, x)
    assert set(router.route(x[:10]).tolist()) == {3}
    costs = np.array([1.0, 1.0, 1.0, 100.0, 1.0])
    assert 3 not in set(router.route(x[:10], costs=costs, cost_weight=0.01).tolist())


def test_folds_are_seeded_and_stable() -> None:
    ids = [f"q{i}" for i in range(200)]
    a = fold_of(ids, 5, seed=3)
    assert a.tolist() == fold_of(list(reversed(ids)), 5, seed=3)[::-1].tolist()
    assert set(a.tolist()) == set(range(5)) and a.tolist() != fold_of(ids, 5, seed=4).tolist()


def test_embeddings_are_cached_by_text(tmp_path: Path) -> None:
    from agents.embedder import EmbeddingConfig

    calls: list[list[str]] = []

    def fake(texts: list[str], config: EmbeddingConfig) -> np.ndarray:
        calls.append(list(texts))
        return np.array([[len(t), 1.0, 0.0] for t in texts], dtype=np.float32)

    config = EmbeddingConfig(package=None, path=tmp_path / "model")  # never loaded: the encoder is fake
    first = embed_texts(["a", "bb", "a"], config, tmp_path, encoder=fake)
    assert calls == [["a", "bb"]] and first[:, 0].tolist() == [1, 2, 1]
    second = embed_texts(["bb", "ccc", "a"], config, tmp_path, encoder=fake)
    assert calls[1:] == [["ccc"]] and second[:, 0].tolist() == [2, 3, 1]
    assert embed_texts([], config, tmp_path, encoder=fake).shape[0] == 0 and len(calls) == 2
    cache = next((tmp_path / "embeddings").glob("questions-*.npz"))
    cache.write_bytes(b"damaged")  # a damaged cache is rebuilt, never fatal
    assert embed_texts(["a"], config, tmp_path, encoder=fake)[0, 0] == 1 and calls[-1] == ["a"]


def test_routers_learn_partial_credit() -> None:
    m, x, cluster = synthetic(n=300)
    rng = np.random.default_rng(1)
    rows = [r.model_copy(update={"outcomes": {"half": RecordedOutcome(correct=round(float(rng.uniform(0.6, 0.9)), 2)),
                                              "low": RecordedOutcome(correct=round(float(rng.uniform(0.1, 0.4)), 2))}})
            for r in m.rows]
    partial = Matrix(rows)
    for name in routers.names():
        s = routers.get(name)(seed=0).fit(partial, x).score(x[:20])
        assert np.all(s[:, 0] > s[:, 1]), name
