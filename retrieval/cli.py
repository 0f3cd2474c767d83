"""The ``symoe index`` commands: build, corpus, search and info.

``register(app)`` attaches them to the main CLI (``orchestrator.cli._register``). The index
itself lives in ``retrieval.index``; this is only the typer layer over it. Every command works
on the configured index (``retrieval.index``, default ``<home>/index/corpus``, the one
``symoe ask`` searches) unless ``--index DIR`` or ``--name NAME`` (``<home>/index/NAME``) says
otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from agents.errors import SymoeError
from orchestrator.config import SymoeConfig, load_config
from retrieval.index import BuildReport, default_index_dir

index_app = typer.Typer(no_args_is_help=True, help="The document index for retrieval: build, search, info.")

out = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML or TOML config file")]  # noqa: UP045
IndexOpt = Annotated[Optional[Path], typer.Option("--index", help="index folder (default: the configured one)")]  # noqa: UP045
NameOpt = Annotated[Optional[str], typer.Option("--name", help="index <home>/index/NAME")]  # noqa: UP045
RebuildOpt = Annotated[bool, typer.Option("--rebuild", help="start from an empty index")]


def register(app: typer.Typer) -> None:
    app.add_typer(index_app, name="index")


def _where(config: Path | None, index: Path | None, name: str | None) -> tuple[SymoeConfig, Path]:
    cfg = load_config(config)
    if index and name:
        raise SymoeError("give --index or --name, not both")
    if index:
        return cfg, index.expanduser()
    if name:
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


@index_app.command("build")
def index_build(
    paths: Annotated[list[Path], typer.Argument(help="files or folders (.txt .md .html .jsonl ...)")],
    index: IndexOpt = None, name: NameOpt = None, rebuild: RebuildOpt = False, config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the build report as JSON")] = False,
) -> None:
    """Index files and folders; files already indexed and unchanged are skipped."""
    from orchestrator.progress import stage_bars
    from retrieval.index import build_index

    cfg, where = _where(config, index, name)
    with stage_bars(err) as progress:
        report = build_index(paths, where, cfg.embedding, rebuild=rebuild, progress=progress)
    if as_json:
        print(report.model_dump_json(indent=2))
    else:
        _print_report(report)


@index_app.command("corpus")
def index_corpus(
    index: IndexOpt = None, name: NameOpt = None, rebuild: RebuildOpt = False, config: ConfigOpt = None,
    limit: Annotated[Optional[int], typer.Option(help="only the first N passages of each source")] = None,  # noqa: UP045
) -> None:
    """Index the offline Wikipedia/science paragraphs (SQuAD, BoolQ, SciQ; ~4.6k passages)."""
    from orchestrator.progress import stage_bars
    from retrieval.corpus import build_corpus

    cfg, where = _where(config, index, name)
    with stage_bars(err) as progress:
        report = build_corpus(cfg.home, where, cfg.embedding, limit=limit, rebuild=rebuild, progress=progress)
    _print_report(report)


@index_app.command("search")
def index_search(
    query: Annotated[str, typer.Argument(help="what to look for")],
    k: Annotated[int, typer.Option("-k", help="number of hits")] = 5,
    index: IndexOpt = None, name: NameOpt = None, config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the hits as JSON")] = False,
) -> None:
    """Show the chunks most similar to a query, with their scores (cosine similarity)."""
    from retrieval.index import open_index

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


@index_app.command("info")
def index_info(
    index: IndexOpt = None, name: NameOpt = None, config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the metadata as JSON")] = False,
) -> None:
    """Show what an index holds: embedding model, files, chunks, last update."""
    from retrieval.index import read_meta

    _, where = _where(config, index, name)
    meta = read_meta(where)
    if as_json:
        print(meta.model_dump_json(indent=2))
        return
    out.print(f"index {where}", markup=False, highlight=False, soft_wrap=True)
    out.print(f"embedding: {meta.embedding.describe()}", markup=False, highlight=False, soft_wrap=True)
    out.print(f"files: {len(meta.files)}, documents: {sum(f.documents for f in meta.files.values())}, "
              f"chunks: {meta.chunks} (at most {meta.max_words} words, overlap {meta.overlap})", soft_wrap=True)
    out.print(f"updated: {meta.updated}", soft_wrap=True)
