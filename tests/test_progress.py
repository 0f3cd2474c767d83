"""Progress reports (``agents.progress``): one bar per stage across folds or chunks, whose size
grows to what was done when a later run needed a stage more than the first (a fallback)."""

from __future__ import annotations

import io

from rich.console import Console

from agents.progress import across, plain_lines


def test_a_stage_bigger_than_its_first_run_says_never_counts_past_its_total() -> None:
    seen: list[tuple[str, int, int]] = []
    report = across(lambda stage, n, total: seen.append((stage, n, total)), parts=3)
    for n in (2, 5, 6):  # the first fold fell back twice, the next ones more
        report("fallback: qwen", n, 2)
    done = 0
    for _, n, total in seen:
        done += n
        assert done <= total
    assert seen[-1][2] == 13 and seen[0][2] == 6


def test_plain_lines_print_done_within_the_total() -> None:
    out = io.StringIO()
    report = across(plain_lines(Console(file=out, width=200)), parts=2)
    for n in (3, 9):
        report("fallback: qwen", n, 3)
    lines = [line for line in out.getvalue().splitlines() if line]
    assert lines and all(int(line.split(": ")[2].split("/")[0]) <= int(line.split("/")[1].split(" ")[0])
                         for line in lines), lines
