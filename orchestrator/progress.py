"""Progress for long stages: one bar per named stage, with counts, elapsed time and ETA; in a
log file (stderr not a terminal) a plain line per stage every 10% instead of redrawn bars."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

StageReport = Callable[[str, int, int], None]  # (stage, done increment, stage total)


@contextmanager
def stage_bars(console: Console | None = None) -> Iterator[StageReport]:
    """Yields ``report(stage, n, total)``: the first call for a stage adds its bar."""
    console = console or Console(stderr=True)
    if not console.is_terminal:
        yield plain_lines(console)
        return
    bars: dict[str, int] = {}
    with Progress("{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=console) as progress:
        def report(stage: str, n: int, total: int) -> None:
            if stage not in bars:
                bars[stage] = progress.add_task(stage, total=total)
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
