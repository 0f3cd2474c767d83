"""The ``symoe index`` commands: build, corpus, search and info.

The index itself lives in ``retrieval.index`` (the built-in corpus in ``eval.corpus``); this
is only the typer layer over them. Every command works
on the configured index (``retrieval.index``, default ``<home>/index/corpus``, the one
``symoe ask`` searches) unless ``--index DIR`` or ``--name NAME`` (``<home>/index/NAME``) says
otherwise. A damaged index is one ``error:`` line (exit status 2) from each of them: ``info``
checks the index files against each other, ``search`` and ``build`` refuse it and say to
``--rebuild``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from agents.errors import SymoeError
from eval.corpus import build_corpus
from orchestrator.cli.common import ConfigOpt, config_from, err, out, stage_bars
from orchestrator.config import SymoeConfig
from retrieval.index import (
    CHUNKS_FILE,
    INDEX_FILE,
    META_FILE,
    BuildReport,
    build_index,
    check_index,
    default_index_dir,
    open_index,
)

app = typer.Typer(no_args_is_help=True, help="The document index for retrieval: build, search, info.")
IndexOpt = Annotated[Optional[Path], typer.Option("--index", help="index folder (default: the configured one)")]  # noqa: UP045
NameOpt = Annotated[Optional[str], typer.Option("--name", help="index <home>/index/NAME")]  # noqa: UP045
RebuildOpt = Annotated[bool, typer.Option("--rebuild", help="start from an empty index")]


def _where(config: Path | None, index: Path | None, name: str | None) -> tuple[SymoeConfig, Path]:
    cfg = config_from(config)
    if index and name:
        raise SymoeError("give --index or --name, not both")
    if index:
        return cfg, index.expanduser()
    if name:
        if not name.strip() or name in (".", "..") or "/" in name or "\\" in name or name.startswith("."):
            raise SymoeError(f"--name {name!r} must be a plain folder name inside {cfg.home / 'index'} "
                             "(no '/', no leading '.'); use --index DIR for a folder elsewhere")
        return cfg, default_index_dir(cfg.home, name)
    return cfg, cfg.retrieval.index or default_index_dir(cfg.home)


def _print_report(report: BuildReport) -> None:
    for problem in report.failed:
        kept = " (its previous version stays indexed)" if problem.kept_previous else ""
        err.print(f"skipped {problem.path}: {problem.reason}{kept}", markup=False, highlight=False, soft_wrap=True)
    out.print(f"index {report.index}: {len(report.added)} added, {len(report.updated)} updated, "
              f"{len(report.unchanged)} unchanged, {len(report.removed)} removed, {len(report.failed)} "
              f"unreadable, {report.ignored} ignored (unsupported type); {report.chunks_added} chunks "
              f"embedded, {report.chunks_total} in the index; {report.seconds:.1f} s",
              markup=False, highlight=False, soft_wrap=True)


@app.command("build")
def index_build(
    paths: Annotated[list[Path], typer.Argument(help="files or folders (.txt .md .html .jsonl ...)")],
    index: IndexOpt = None, name: NameOpt = None, rebuild: RebuildOpt = False, config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the build report as JSON")] = False,
) -> None:
    """Index files and folders; files already indexed and unchanged are skipped."""
    cfg, where = _where(config, index, name)
    with stage_bars(err) as progress:
        report = build_index(paths, where, cfg.embedding, rebuild=rebuild, progress=progress)
    if as_json:
        print(report.model_dump_json(indent=2))
    else:
        _print_report(report)


@app.command("corpus")
def index_corpus(
    index: IndexOpt = None, name: NameOpt = None, rebuild: RebuildOpt = False, config: ConfigOpt = None,
    limit: Annotated[Optional[int], typer.Option(help="only the first N passages of each source")] = None,  # noqa: UP045
) -> None:
    """Index the offline Wikipedia/science paragraphs (SQuAD, BoolQ, SciQ; ~4.6k passages)."""
    cfg, where = _where(config, index, name)
    with stage_bars(err) as progress:
        report = build_corpus(cfg.home, where, cfg.embedding, limit=limit, rebuild=rebuild, progress=progress)
    _print_report(report)


@app.command("search")
def index_search(
    query: Annotated[str, typer.Argument(help="what to look for")],
    k: Annotated[int, typer.Option("-k", help="number of hits")] = 5,
    index: IndexOpt = None, name: NameOpt = None, config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the hits as JSON")] = False,
) -> None:
    """Show the chunks most similar to a query, with their scores (cosine similarity)."""
    if not query.strip():
        raise SymoeError("the query is empty")
    if k < 1:
        raise SymoeError("-k must be at least 1")
    cfg, where = _where(config, index, name)
    hits = open_index(where, cfg.embedding).search(query, k)
    if as_json:
        print(json.dumps([h.model_dump() for h in hits], indent=2))
        return
    table = Table(title=f"{query} ({where})", show_lines=True)
    for col in ("#", "score", "title", "source", "text"):
        table.add_column(col, justify="right" if col in ("#", "score") else "left",
                         overflow="fold", ratio=4 if col == "text" else None)
    for i, hit in enumerate(hits, 1):
        text = hit.text if len(hit.text) <= 300 else hit.text[:300] + "..."
        where_in = f"{hit.source}" + (f" line {hit.line}" if hit.line else f" [{hit.start}:{hit.end}]")
        table.add_row(str(i), f"{hit.score:.3f}", hit.title, where_in, text)
    out.print(table, soft_wrap=True)


@app.command("info")
def index_info(
    index: IndexOpt = None, name: NameOpt = None, config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the metadata as JSON")] = False,
) -> None:
    """Check an index and show what it holds: embedding model, files, chunks, last update.

    A damaged index (unreadable or inconsistent files) is one error line and exit status 2."""
    _, where = _where(config, index, name)
    meta = check_index(where)
    if as_json:
        print(meta.model_dump_json(indent=2))
        return
    out.print(f"index {where}", markup=False, highlight=False, soft_wrap=True)
    out.print(f"embedding: {meta.embedding.describe()}", markup=False, highlight=False, soft_wrap=True)
    out.print(f"files: {len(meta.files)}, documents: {sum(f.documents for f in meta.files.values())}, "
              f"chunks: {meta.chunks} (at most {meta.max_words} words, overlap {meta.overlap})", soft_wrap=True)
    out.print(f"updated: {meta.updated}", soft_wrap=True)
    out.print(f"health: ok ({INDEX_FILE}, {CHUNKS_FILE} and {META_FILE} agree on {meta.chunks} chunks)", soft_wrap=True)
