"""Ten mixed questions through the CLI, as a user asks them (issue 25), on the real default pool.

Four with options, three word problems, three open factual questions
(``bench/mixed_questions.jsonl``, the questions ``bench/ask_latency.py`` also times), each asked
with ``symoe ask`` in a new process, with the default router and with ``--router
best_single``: every one is answered (exit 0, an answer on the last line, no error). Before
issue 25, best_single sent the open questions to the program expert, whose sandbox refused
``import requests``, and the user got ``Error: expert 'qwen-1.5b-program' failed``.
Slow (twenty cold processes, each loading its models); run it with ``-m real``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.real

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = [json.loads(line) for line in (ROOT / "bench" / "mixed_questions.jsonl").read_text().splitlines()]


def as_typed(row: dict) -> str:
    """The question as a user types it: options on lines of their own, 'A) ...'."""
    options = [f"{chr(65 + i)}) {c}" for i, c in enumerate(row.get("choices", []))]
    return "\n".join([row["question"], *options])


def test_the_mix_is_four_options_three_word_problems_three_open_questions() -> None:
    kinds = [row["kind"] for row in QUESTIONS]
    assert (kinds.count("options"), kinds.count("word problem"), kinds.count("open factual")) == (4, 3, 3)


@pytest.mark.parametrize("router", [None, "best_single"])
@pytest.mark.parametrize("row", QUESTIONS, ids=[row["question"][:40] for row in QUESTIONS])
def test_every_mixed_question_is_answered_through_the_cli(row: dict, router: str | None) -> None:
    cmd = [sys.executable, "-m", "orchestrator.cli", "ask", *(["--router", router] if router else []), as_typed(row)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    assert proc.returncode == 0, (router, row["question"], proc.stderr[-2000:])
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert lines and lines[-1].strip(), (router, row["question"], proc.stdout, proc.stderr[-2000:])
    assert not any(line.lower().startswith("error") for line in proc.stderr.splitlines()), proc.stderr[-2000:]
