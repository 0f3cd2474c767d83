"""Answer extraction on real expert outputs (recorded from the default pool) and edge cases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.prompts import strip_reasoning
from orchestrator.answers import detect_format, extract, is_correct, split_inline_choices

REAL = [json.loads(line) for line in (Path(__file__).parent / "data" / "real_outputs.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("row", REAL, ids=[f"{r['expert']}-{i}" for i, r in enumerate(REAL)])
def test_extracts_real_outputs(row):
    """Outputs of the four default experts, with the answer a reader sees in each (checked by hand)."""
    assert extract(row["text"], row["fmt"], len(row["choices"]), row["choices"]) == row["expected"]


@pytest.mark.parametrize("text,expected", [
    ("Answer: C\nBecause...", "C"),
    ("The correct answer is (B).", "B"),
    ("**Answer: D**", "D"),
    ("I Think It Is A Hard One. No idea.", None),  # never a stray capital letter
    ("Answer: E", None),  # not among four options
    ("<think>maybe A</think>\nAnswer: B", "B"),
])
def test_choice_edge_cases(text, expected):
    assert extract(text, "choice", 4) == expected


@pytest.mark.parametrize("text,expected", [
    ("so 1,234 apples.\nAnswer: 1,234", "1234"),
    ("The answer is $18.00 in total", "18"),
    ("x = \\boxed{42}", "42"),
    ("no numbers here", None),
    ("Answer: -3.5", "-3.5"),
])
def test_number_edge_cases(text, expected):
    assert extract(text, "number") == expected


def test_text_and_grading():
    assert extract("Answer: Paris.", "text") == "Paris"
    assert is_correct("The capital is Paris", "Paris", "text")
    assert not is_correct("Lyon", "Paris", "text")
    assert is_correct("1234", "1,234", "number")
    assert is_correct("b", "B", "choice")
    assert is_correct("JFK", "John F. Kennedy", "text", aliases=["JFK"])


def test_formats_and_inline_choices():
    stem, choices = split_inline_choices("Which is a mammal?\nA) Shark\nB) Whale\nC) Trout")
    assert stem == "Which is a mammal?" and choices == ["Shark", "Whale", "Trout"]
    assert detect_format("What is 17 * 23?", []) == "number"
    assert detect_format("Who wrote Hamlet?", []) == "text"
    assert detect_format("Q", ["a", "b"]) == "choice"
    assert strip_reasoning("<think>long</think> final") == "final"
