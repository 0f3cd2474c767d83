"""``symoe cache export|import``: the generation cache as content-addressed, append-only
JSONL.gz shards (``agents.cache_shards``), to commit, share or carry to a fresh machine.
See docs/cache.md."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from agents.cache import GenerationCache
from agents.cache_shards import MAX_BYTES, ExportReport, export_shards, import_shards, shard_files
from agents.errors import SymoeError
from orchestrator.cli.common import ConfigOpt, config_from, err, one_line, out
from orchestrator.session import default_cache_path

app = typer.Typer(no_args_is_help=True, help="The generation cache as shard files: export, import.")

CacheOpt = Annotated[Path | None, typer.Option(
    "--cache", help="the SQLite generation cache (default <home>/cache/generations.sqlite; an eval run's "
                    "generations.sqlite exports that run)")]
#: how many conflict and damage lines are printed (the counts cover all)
SHOWN = 20


def parse_time(option: str, value: str | None) -> float | None:
    """An ISO date or time as epoch seconds (a time without a zone is UTC)."""
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise SymoeError(f"{option} must be an ISO date or time (2025-06-30 or 2025-06-30T14:00:00+02:00), "
                         f"not {value!r}") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _table(title: str, counts: list[tuple[str, int]]) -> None:
    table = Table(title=title, title_justify="left")
    table.add_column("")
    table.add_column("count", justify="right")
    for name, value in counts:
        table.add_row(name, str(value))
    out.print(table)


def _note(text: str) -> None:
    err.print(f"note: {one_line(text)}", markup=False, highlight=False, emoji=False, soft_wrap=True)


def export_from(path: Path, output: Path, **select: Any) -> ExportReport:
    """Export the rows of the cache at ``path`` (``select``: experts, since, until, max_bytes) as new shards."""
    if not path.is_file():
        raise SymoeError(f"no generation cache at {path}; give --cache PATH (an eval run's generations.sqlite, "
                         "say)")
    store = GenerationCache(path)
    try:
        return export_shards(store, output, **select)
    finally:
        store.close()


@app.command("export")
def cache_export(
    output: Annotated[Path, typer.Option("--output", "-o", help="the shard folder (e.g. data/generations); "
                                         "shards already there are kept, only new rows are written")],
    cache: CacheOpt = None,
    expert: Annotated[list[str] | None, typer.Option("--expert", help="only this model's rows (repeatable)")] = None,
    since: Annotated[str | None, typer.Option(help="only rows stored at or after this ISO time (UTC unless "
                                              "it says)")] = None,
    until: Annotated[str | None, typer.Option(help="only rows stored before this ISO time")] = None,
    max_bytes: Annotated[int, typer.Option(help="the largest shard in bytes, compressed")] = MAX_BYTES,
    config: ConfigOpt = None,
) -> None:
    """Write the generation cache's rows as new content-addressed JSONL.gz shards."""
    start, end = parse_time("--since", since), parse_time("--until", until)
    if start is not None and end is not None and start >= end:
        raise SymoeError(f"--since ({since}) must be before --until ({until})")
    if max_bytes < 256:
        raise SymoeError(f"--max-bytes must be at least 256, not {max_bytes}")
    path = cache if cache is not None else default_cache_path(config_from(config))
    report = export_from(path, output, experts=set(expert) if expert else None, since=start, until=end,
                         max_bytes=max_bytes)
    _table(f"export {path} -> {output}", [
        ("rows selected", report.selected), ("written", report.written),
        ("already in the folder (skipped)", report.already_in_folder),
        ("unreadable in the cache (skipped)", report.unreadable), ("new shards", len(report.shards)),
        ("bytes written", report.bytes_written)])
    for shard in report.shards:
        out.print(str(shard), markup=False, highlight=False, soft_wrap=True)
    if report.differing:
        _note(f"{report.differing} rows hold another generation in {output} than in the cache; the folder's are "
              "kept (shards are never rewritten)")


@app.command("import")
def cache_import(
    paths: Annotated[list[Path], typer.Argument(help="shard folders or .jsonl.gz shard files")],
    cache: CacheOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Add the shards' rows that the generation cache lacks (checked; a different stored value is kept).

    Exit status 1 when a shard or row was damaged (the rest is imported), 0 otherwise."""
    files = shard_files(paths)  # a missing path is one line before the cache is opened
    if not files:
        raise SymoeError(f"no .jsonl.gz shards in {', '.join(map(str, paths))}")
    path = cache if cache is not None else default_cache_path(config_from(config))
    store = GenerationCache(path)
    try:
        report = import_shards(store, files)
    finally:
        store.close()
    _table(f"import -> {path}", [
        ("files", report.files), ("rows read", report.rows_read), ("added", report.added),
        ("already present", report.present), ("conflicts (the stored one kept)", len(report.conflicts)),
        ("bad rows", len(report.bad_rows)), ("bad files (refused whole)", len(report.bad_files))])
    for line in report.bad_files[:SHOWN]:
        _note(line)
    for line in report.bad_rows[:SHOWN]:
        _note(f"bad row {line}")
    for key, file in report.conflicts[:SHOWN]:
        _note(f"conflict: {file} holds another generation for key {key}; the stored one is kept")
    hidden = max(0, len(report.bad_files) - SHOWN) + max(0, len(report.bad_rows) - SHOWN) + \
        max(0, len(report.conflicts) - SHOWN)
    if hidden:
        _note(f"{hidden} more lines like these not shown")
    if report.bad_files or report.bad_rows:
        raise typer.Exit(1)
