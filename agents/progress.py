"""The progress callback every long stage reports through, ``report(stage, done, total)``,
and its two renderings: rich bars on a terminal, a plain line every 10% in a log file.

``done`` is the increment since the last call for that stage; ``total`` the stage's size.
Library code only calls the callback; the CLI and the bench scripts choose the rendering.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

StageReport = Callable[[str, int, int], None]


def ignore(stage: str, done: int, total: int) -> None:
    """A ``StageReport`` that reports nothing."""


def across(progress: StageReport, parts: int) -> StageReport:
    """One bar per stage over ``parts`` runs of the same stages (folds, chunks): a stage's size
    is its first run's times ``parts``, grown to what was done where the runs differ (a
    fallback stage that the first run needed less than the others)."""
    totals: dict[str, int] = {}
    done: dict[str, int] = {}

    def report(stage: str, n: int, total: int) -> None:
        done[stage] = done.get(stage, 0) + n
        totals[stage] = max(totals.get(stage, total * parts), done[stage])
        progress(stage, n, totals[stage])
    return report


@contextmanager
def stage_bars(console: Console | None = None) -> Iterator[StageReport]:
    """Yields ``report(stage, n, total)``: the first call for a stage adds its bar. In a log file
    (stderr not a terminal) a plain line per stage every 10% instead of redrawn bars."""
    console = console or Console(stderr=True)
    if not console.is_terminal:
        yield plain_lines(console)
        return
    bars: dict[str, int] = {}
    sizes: dict[str, int] = {}
    with Progress("{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=console) as progress:
        def report(stage: str, n: int, total: int) -> None:
            if stage not in bars:
                bars[stage] = progress.add_task(stage, total=total)
                sizes[stage] = total
            elif total > sizes[stage]:  # a stage found bigger than first thought (``across``)
                progress.update(bars[stage], total=total)  # type: ignore[arg-type]
                sizes[stage] = total
            progress.advance(bars[stage], n)  # type: ignore[arg-type]

        yield report


def plain_lines(console: Console) -> StageReport:
    """``report`` that prints "stage: done/total (elapsed, ETA)" at every tenth of a stage."""
    state: dict[str, tuple[int, float, int]] = {}  # stage -> (done, start, last tenth printed)

    def report(stage: str, n: int, total: int) -> None:
        done, start, last = state.get(stage, (0, time.monotonic(), -1))
        done += n
        tenth = 10 * done // total if total else 10
        if tenth > last:
            elapsed = time.monotonic() - start
            eta = elapsed / done * (total - done) if done else 0.0
            console.print(f"{stage}: {done}/{total} ({elapsed:.0f} s elapsed, ETA {eta:.0f} s)",
                          highlight=False, soft_wrap=True)
            last = tenth
        state[stage] = (done, start, last)

    return report
