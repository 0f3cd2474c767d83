"""symoe and lm-evaluation-harness, both ways, on 10 GSM8K test questions exported offline:
lm-eval's ``local-chat-completions`` against a real ``symoe serve``, and the ``symoe`` model
through ``symoe lm-eval``; the two score the same (one pipeline, one cache).

The method is one expert, the 1.5B's program (``model=`` an expert name on the server,
``router=single:...`` through the model): both faces hand the method's name to the same
pipeline, so a routed method adds nothing these faces own, only minutes (routed ``symoe``
took 722 s of CI's 90 minutes here; ask/eval parity of routing is tests/test_parity.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_server_real import start, stop

from agents.errors import SymoeError
from agents.paths import default_home
from eval.lm_eval_task import write_task

pytest.importorskip("lm_eval", reason="needs the lm-eval extra: pip install -e '.[lm-eval]'")


def scores(out: Path, task: str) -> dict:
    files = sorted(out.rglob("results_*.json"))
    assert files, f"no results under {out}"
    return json.loads(files[-1].read_text())["results"][task]


def replies(out: Path, task: str) -> list[str]:
    files = sorted(out.rglob(f"samples_{task}_*.jsonl"))
    assert files, f"no samples under {out}"
    rows = sorted((json.loads(line) for line in files[-1].read_text().splitlines()), key=lambda r: r["doc_id"])
    return [r["resps"][0][0] for r in rows]


def test_export_writes_an_offline_task(tmp_path: Path) -> None:
    path, n = write_task("gsm8k", tmp_path, default_home(), limit=3)
    assert n == 3 and path.name == "symoe_gsm8k.yaml" and (tmp_path / "symoe_gsm8k.jsonl").exists()
    rows = [json.loads(line) for line in (tmp_path / "symoe_gsm8k.jsonl").read_text().splitlines()]
    assert all(r["answer"].replace(",", "").lstrip("-").isdigit() for r in rows)


def test_loglikelihood_is_refused_in_one_line() -> None:
    from orchestrator.harness import SymoeLM

    with pytest.raises(SymoeError, match="generation only") as err:
        SymoeLM().loglikelihood([])
    assert "\n" not in str(err.value)


EXPERT = "qwen-1.5b-program"


@pytest.mark.real
@pytest.mark.face
def test_lm_eval_one_question_through_the_symoe_model(tmp_path: Path) -> None:
    """lm-eval's face in ``make test``: one GSM8K question through ``symoe lm-eval`` on the
    smallest real model; lm-eval scores the reply it got (both ways on 10 questions: below)."""
    write_task("gsm8k", tmp_path / "tasks", default_home(), limit=1)
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "lm-eval", "--model", "symoe",
                           "--model_args", "router=single:smollm2-135m", "--tasks", "symoe_gsm8k",
                           "--include_path", str(tmp_path / "tasks"), "--limit", "1", "--log_samples",
                           "--output_path", str(tmp_path / "model")], capture_output=True, text=True, env=env,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (reply,) = replies(tmp_path / "model", "symoe_gsm8k")
    assert reply.strip(), "an empty reply"
    assert scores(tmp_path / "model", "symoe_gsm8k")["exact_match,last-answer"] in (0.0, 1.0)


@pytest.mark.real
def test_lm_eval_against_the_server_and_through_the_symoe_model(tmp_path: Path) -> None:
    write_task("gsm8k", tmp_path / "tasks", default_home(), limit=10)
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    common = ["--tasks", "symoe_gsm8k", "--include_path", str(tmp_path / "tasks"), "--limit", "10", "--log_samples"]
    proc, url, _ = start(tmp_path)
    try:
        served = subprocess.run(
            [sys.executable, "-m", "lm_eval", "--model", "local-chat-completions", "--model_args",
             f"model={EXPERT},base_url={url}/v1/chat/completions,num_concurrent=1,max_retries=1,"
             "tokenized_requests=False,timeout=600", "--apply_chat_template", *common,
             "--output_path", str(tmp_path / "served")], capture_output=True, text=True, env=env, timeout=3000)
    finally:
        stop(proc)
    assert served.returncode == 0, served.stderr[-3000:]
    through = subprocess.run([sys.executable, "-m", "orchestrator.cli", "lm-eval", "--model", "symoe",
                              "--model_args", f"router=single:{EXPERT}", *common,
                              "--output_path", str(tmp_path / "model")],
                             capture_output=True, text=True, env=env, timeout=3000)
    assert through.returncode == 0, through.stderr[-3000:]
    a, b = scores(tmp_path / "served", "symoe_gsm8k"), scores(tmp_path / "model", "symoe_gsm8k")
    # the same replies, not only the same score: lm-eval's API models send seed 1234, as the symoe model uses
    assert replies(tmp_path / "served", "symoe_gsm8k") == replies(tmp_path / "model", "symoe_gsm8k")
    assert a["exact_match,last-answer"] == b["exact_match,last-answer"]
    assert a["exact_match,last-answer"] >= 0.2, a
