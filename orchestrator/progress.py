"""Progress bars for long stages: one bar per named stage, with counts, elapsed time and ETA."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

StageReport = Callable[[str, int, int], None]  # (stage, done increment, stage total)


@contextmanager
def stage_bars(console: Console | None = None) -> Iterator[StageReport]:
    """Yields ``report(stage, n, total)``: the first call for a stage adds its bar."""
    bars: dict[str, int] = {}
    with Progress("{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=console or Console(stderr=True)) as progress:
        def report(stage: str, n: int, total: int) -> None:
            if stage not in bars:
                bars[stage] = progress.add_task(stage, total=total)
            progress.advance(bars[stage], n)  # type: ignore[arg-type]

        yield report
