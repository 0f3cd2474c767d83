"""The retrieval gate: calibration by grid search, where a gate is loaded from, and (real) its
decisions on real questions with the real index, embeddings and llama.cpp draft log-probs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.backends import Generation, TokenLogprob
from agents.embedder import EmbeddingConfig
from agents.errors import SymoeError
from eval.calibration import CalibrationRow, calibrate, evaluate_gate
from orchestrator import Symoe, load_config
from orchestrator.answers import is_correct
from orchestrator.gate import (
    GateModel,
    default_gate_path,
    draft_confidence,
    file_digest,
    gate_mismatch,
    load_gate,
    save_gate,
)
from orchestrator.provenance import pool_digest
from orchestrator.records import GateFeatures
from retrieval.index import build_index


def row(retrieval: float, draft: float, never: bool, always: bool, task: str = "t") -> CalibrationRow:
    return CalibrationRow(features=GateFeatures(profile_strength=0.5, draft_confidence=draft,
                                                retrieval_score=retrieval),
                          correct_never=never, correct_always=always, task=task)


def test_calibration_retrieves_only_where_it_helps() -> None:
    # corpus questions: high retrieval score, right only with the passages;
    # the rest: low score, right without retrieval and sometimes hurt by it
    rows = ([row(0.7 + i / 100, 0.2, False, True, "squad") for i in range(10)]
            + [row(0.3 + i / 100, 0.8, True, i % 2 == 0, "mmlu") for i in range(10)])
    gate = calibrate(rows, tolerance=0.5)
    acc, rate = evaluate_gate(gate, rows)
    assert acc == 100.0 and rate == 50.0
    assert gate.calibrated["accuracy_always"] == 75.0 and gate.calibrated["accuracy_never"] == 50.0
    assert gate.calibrated["tasks"] == ["mmlu", "squad"]


def test_calibration_prefers_fewer_retrievals_within_tolerance() -> None:
    # retrieval never changes the outcome: the cheapest gate retrieves nothing
    rows = [row(i / 20, 0.5, i % 3 == 0, i % 3 == 0) for i in range(20)]
    gate = calibrate(rows, tolerance=0.0)
    assert evaluate_gate(gate, rows)[1] == 0.0


def test_draft_confidence_is_the_top1_top2_margin() -> None:
    import math

    sure = TokenLogprob(token="A", logprob=math.log(0.9), top={"A": math.log(0.9), "B": math.log(0.05)})
    unsure = TokenLogprob(token="A", logprob=math.log(0.5), top={"A": math.log(0.5), "B": math.log(0.4)})
    gen = Generation(text="A", model="m", token_logprobs=[sure, unsure])
    assert draft_confidence(gen) == pytest.approx(((0.9 - 0.05) + (0.5 - 0.4)) / 2)
    assert draft_confidence(Generation(text="A", model="m")) == 0.0


def test_gate_loading_order(tmp_path: Path) -> None:
    mine = GateModel(threshold=0.123)
    save_gate(mine, tmp_path / "mine.json")
    assert load_gate(tmp_path / "mine.json", tmp_path).threshold == 0.123
    save_gate(GateModel(threshold=0.456), tmp_path / "gate.json")  # <home>/gate.json
    assert load_gate(None, tmp_path).threshold == 0.456
    shipped = load_gate(None, tmp_path / "nowhere")
    assert shipped == GateModel.model_validate(json.loads(default_gate_path().read_text()))
    assert shipped.calibrated.get("rows", 0) >= 100, "the shipped gate is calibrated on validation data"


def test_a_gate_says_in_one_line_when_the_pool_or_profile_it_was_calibrated_for_differs(tmp_path: Path) -> None:
    config = load_config()
    pool = {n: d for n, d in pool_digest(config).items() if n in config.routing_pool}
    profile = tmp_path / "p.json"
    profile.write_text("{}")
    where = tmp_path / "gate.json"
    assert gate_mismatch(GateModel(pool=pool, profile=file_digest(profile)), where, pool, profile) is None
    other = {**pool, next(iter(pool)): "llamacpp:0000000000000000"}
    said = gate_mismatch(GateModel(pool=other), where, pool, profile)
    assert said is not None and "calibrated for another pool" in said and "\n" not in said
    assert "symoe profile gate" in said
    profile.write_text('{"changed": 1}')
    assert "another profile" in (gate_mismatch(GateModel(pool=pool, profile="0" * 16), where, pool, profile) or "")
    assert "records no pool" in (gate_mismatch(GateModel(), where, pool, None) or "")
    # the shipped gate was calibrated on the previous four-model pool, and says so
    shipped = load_gate(None, tmp_path)
    assert "were not in it" in (gate_mismatch(shipped, default_gate_path(), pool, None) or "")


def test_a_damaged_or_missing_gate_file_is_one_clear_error(tmp_path: Path) -> None:
    broken = tmp_path / "gate.json"
    broken.write_text('{"w_retrieval": ')
    with pytest.raises(SymoeError, match="retrieval gate .* is unreadable") as err:
        load_gate(None, tmp_path)
    assert "\n" not in str(err.value)
    with pytest.raises(SymoeError, match="no retrieval gate at"):
        load_gate(tmp_path / "missing.json", tmp_path / "elsewhere")


# ---------------------------------------------------------------- real: index, embeddings, llama.cpp draft


N_SQUAD = 6


@pytest.fixture(scope="module")
def squad_index(tmp_path_factory: pytest.TempPathFactory, squad_with_passages) -> tuple[Path, list]:
    """A small real index: the gold paragraphs of 6 SQuAD questions among 30 other passages."""
    questions, passages = squad_with_passages(N_SQUAD)
    seen = {q.passage_id for q in questions}
    others = [p for p in passages.values() if p.id not in seen][:30]
    root = tmp_path_factory.mktemp("docs")
    (root / "docs.jsonl").write_text("".join(
        json.dumps({"id": p.id, "title": p.title, "text": p.text}) + "\n"
        for p in [*(passages[q.passage_id] for q in questions), *others]))
    index_dir = root / "index"
    build_index([root / "docs.jsonl"], index_dir, EmbeddingConfig())
    return index_dir, questions


@pytest.mark.real
def test_gate_retrieves_for_corpus_questions_and_not_for_arithmetic(squad_index) -> None:
    """The shipped gate on real questions. It is measured at about 80% retrieval on SQuAD test
    questions (README), so it must retrieve for most of these, and never for arithmetic."""
    index_dir, questions = squad_index
    config = load_config()
    config.retrieval.index = index_dir
    retrieved = found = right = 0
    with Symoe(config) as symoe:
        sums = symoe.ask("What is 17 * 23?", retrieval="auto")
        assert sums.retrieval is not None and not sums.retrieval.retrieved, sums.retrieval
        assert "gate score" in sums.retrieval.reason and sums.answer == "391"
        for q in questions:
            decision = symoe.ask(q.question, retrieval="auto").retrieval
            assert decision is not None and "gate score" in decision.reason
            retrieved += decision.retrieved
        forced = [symoe.ask(q.question, retrieval="always") for q in questions[:3]]
        never = symoe.ask(questions[0].question, retrieval="never")
    assert retrieved >= N_SQUAD // 2 + 1, f"the gate retrieved for {retrieved}/{N_SQUAD} SQuAD questions"
    for q, result in zip(questions, forced, strict=False):
        decision = result.retrieval
        assert decision is not None and decision.retrieved and decision.passages
        found += any(p.text.strip()[:60] in (q.context or "") for p in decision.passages)
        right += is_correct(result.answer, q.answer, "text", q.aliases)
    assert never.retrieval is not None and not never.retrieval.retrieved
    assert found >= 2, f"the gold paragraph was among the passages for {found}/3 questions"
    assert right >= 2, f"{right}/3 SQuAD questions answered from the retrieved passages"


def test_an_ask_the_gate_did_not_decide_says_nothing_of_it(tmp_path: Path, symoe_cli) -> None:
    """A named expert retrieves nothing, so a gate calibrated for another pool goes unmentioned
    (a routed ask on the default pool prints the one line; ``gate_mismatch`` is tested above)."""
    gate = tmp_path / "gate.json"
    save_gate(GateModel(pool={"someone-else": "llamacpp:0000000000000000"}, threshold=10.0), gate)
    config = tmp_path / "c.yaml"
    config.write_text(f"replace_pool: true\ndefault_expert: a\nretrieval: {{mode: auto, gate: {gate}}}\n"
                      "experts:\n  a: {backend: fake, params: {default: 'Answer: 4'}}\n")
    proc = symoe_cli("ask", "--model", "a", "What is 2 + 2?", "-c", str(config), env={"SYMOE_HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "4" and "retrieval gate" not in proc.stderr


@pytest.mark.real
def test_a_routed_ask_on_the_default_pool_says_its_gate_was_calibrated_for_another_pool(symoe_cli) -> None:
    proc = symoe_cli("ask", "--router", "clusters", "Which river flows through Paris?")
    assert proc.returncode == 0, proc.stderr
    said = [line for line in proc.stderr.splitlines() if line.startswith("warning: retrieval gate")]
    assert len(said) == 1 and "calibrated for another pool" in said[0] and "symoe profile gate" in said[0]
