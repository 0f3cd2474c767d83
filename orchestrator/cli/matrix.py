"""``symoe matrix import|show``: outcome matrices (which expert answered which question, rightly
or not, at what cost) from lm-eval logs, RouterBench-style CSVs, RouteLLM's records or symoe's
own samples; and a table of one. The format and importers live in ``eval.matrix`` and
``eval.matrix_importers``; see docs/matrix.md."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from agents.errors import SymoeError
from eval.datasets import task_and_limit
from eval.matrix import Matrix, read_matrix, write_matrix
from eval.matrix_build import build_matrix
from eval.matrix_importers import import_matrix, importers
from orchestrator.cli.cache import export_from
from orchestrator.cli.common import (
    BulkOpt,
    ConfigOpt,
    check_range,
    check_writable,
    comma_list,
    config_from,
    err,
    one_line,
    out,
    sigterm_interrupts,
    stage_bars,
)
from orchestrator.config import MAX_SEED
from orchestrator.session import default_cache_path

app = typer.Typer(no_args_is_help=True, help="Outcome matrices: build one by generating, import recorded outcomes, "
                                             "show one.")


@app.command("import")
def matrix_import(
    kind: Annotated[str, typer.Argument(help=f"what the files are: {', '.join(importers.names())}")],
    paths: Annotated[list[Path], typer.Argument(help="files or folders to import")],
    output: Annotated[Path, typer.Option("--output", "-o", help="the matrix file to write (.jsonl or .jsonl.gz)")],
    split: Annotated[str | None, typer.Option(help="split of questions whose file gives none: validation or test "
                                              "(default: validation)")] = None,
    config: ConfigOpt = None,
) -> None:
    """Convert recorded outcomes into one outcome matrix file."""
    if split is not None and split not in ("validation", "test"):
        raise SymoeError(f"--split must be validation or test, not {split!r}")
    importers.get(kind)  # an unknown kind is one line before any file is read
    home = config_from(config).home if kind == "symoe" else None
    result = import_matrix(kind, list(paths), split=split, home=home)
    for note in result.notes:
        err.print(f"note: {one_line(note)}", markup=False, highlight=False, soft_wrap=True)
    write_matrix(result.matrix, output)
    m = result.matrix
    out.print(f"wrote {output}: {len(m)} questions x {len(m.experts)} experts "
              f"(tasks: {', '.join(m.tasks)}; splits: {', '.join(m.splits)})", markup=False, highlight=False,
              soft_wrap=True)


@app.command("build")
def matrix_build(
    output: Annotated[Path, typer.Option("--output", "-o", help="the matrix file to write (.jsonl or .jsonl.gz)")],
    tasks: Annotated[str, typer.Option(help="comma-separated tasks; task:N limits one task")
    ] = "mmlu,arc_challenge,medmcqa,gsm8k,math,nq_open",
    limit: Annotated[int | None, typer.Option(help="questions per task and split (at least 1)")] = None,
    splits: Annotated[str, typer.Option(help="the splits to generate: validation, test or both; split:N "
                                             "gives a split its own limit (validation:100,test:67)")
    ] = "validation,test",
    time_budget: Annotated[float | None, typer.Option(
        help="minutes: start no chunk of questions after this; re-run to continue")] = None,
    chunk: Annotated[int, typer.Option(help="questions generated together (1-1000)")] = 10,
    export: Annotated[Path | None, typer.Option(
        help="then write the generations this run made as shards into this folder (e.g. data/generations)")] = None,
    seed: Annotated[int, typer.Option(help="seed for data and sampling")] = 0,
    skills: Annotated[bool, typer.Option(help="label each question's skills with the annotator (an LLM call per "
                                              "question, cached), as profile build does")] = True,
    bulk: BulkOpt = 8,
    config: ConfigOpt = None,
) -> None:
    """Generate every routed expert's answers for a matrix, in resumable pieces (the cache keeps them)."""
    check_range("--limit", limit, 1, 100_000)
    check_range("--chunk", chunk, 1, 1000)
    check_range("--time-budget", time_budget, 0.1, 10_000.0, " (minutes)")
    check_range("--seed", seed, 0, MAX_SEED)
    check_range("--bulk", bulk, 1, 64)
    split_list = comma_list(splits)
    split_names = [task_and_limit(entry, limit) for entry in split_list]
    if not split_list or any(s not in ("validation", "test") or n == 0 for s, n in split_names) \
            or len({s for s, _ in split_names}) < len(split_names):
        raise SymoeError(f"--splits {splits!r}: give validation, test or both, each once and N of at least 1 "
                         "(validation:100,test:67)")
    task_list = comma_list(tasks)
    if not task_list:
        raise SymoeError("no task given; e.g. --tasks mmlu:50,gsm8k:20")
    cfg = config_from(config).model_copy(update={"seed": seed}).with_bulk(bulk)
    earlier = read_matrix(output) if output.exists() else None  # its rows are kept: a re-run goes on from them
    check_writable(output.parent)  # before hours of generation, not after
    started = time.time()
    with stage_bars(err) as report, sigterm_interrupts():
        matrix, done = build_matrix(cfg, task_list, split_list, limit=limit, seed=seed, chunk=chunk,
                                    budget_s=time_budget * 60 if time_budget is not None else None, progress=report,
                                    skills=skills, done=earlier)
    write_matrix(matrix, output)
    left = done.questions - done.done
    why = "interrupted" if done.interrupted else "the budget stopped it"
    out.print(f"wrote {output}: {done.done} of {done.questions} questions x {len(matrix.experts)} experts "
              f"({done.kept} kept from the file) in {done.seconds:.0f} s"
              + (f"; {done.outside} more rows of the file, outside this selection, kept" if done.outside else "")
              + (f"; {why}: re-run to do the other {left}" if left else ""),
              markup=False, highlight=False, soft_wrap=True)
    if export is not None:
        shards = export_from(default_cache_path(cfg), export, since=started)
        out.print(f"exported {shards.written} new generations to {len(shards.shards)} shard(s) in {export}",
                  markup=False, highlight=False)


def _cost_unit(matrix: Matrix) -> str | None:
    if any(v is not None for v in matrix.mean_cost("usd").values()):
        return "usd"
    if any(v is not None for v in matrix.mean_cost("tokens").values()):
        return "tokens"
    return None


def summary(matrix: Matrix) -> dict[str, Any]:
    """Per task and overall: questions, each expert's accuracy and mean cost, the oracle."""
    unit = _cost_unit(matrix)
    parts: dict[str, Any] = {}
    for name, part in [*((t, matrix.select(tasks=[t])) for t in matrix.tasks), ("all", matrix)]:
        parts[name] = {
            "questions": len(part), "splits": {s: sum(r.split == s for r in part) for s in ("validation", "test")},
            "accuracy": part.accuracy(), "cost": part.mean_cost(unit) if unit else None,  # type: ignore[arg-type]
            "oracle": part.oracle_accuracy(), "best_single": part.best_single(),
        }
    return {"file": matrix.source, "experts": matrix.experts, "cost_unit": unit, "tasks": parts}


def _cost_text(value: float | None, unit: str | None) -> str:
    if value is None or unit is None:
        return "-"
    return f"${value:.5f}" if unit == "usd" else f"{value:.0f}"


@app.command("show")
def matrix_show(
    file: Annotated[Path, typer.Argument(help="an outcome matrix (.jsonl or .jsonl.gz)")],
    split: Annotated[str | None, typer.Option(help="only this split: validation or test")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Each expert's accuracy and mean cost per task, the oracle, and the question counts."""
    matrix = read_matrix(file)
    if split is not None:
        matrix = matrix.select(split=split)
        if not len(matrix):
            raise SymoeError(f"{file}: no {split} questions")
    info = summary(matrix)
    if as_json:
        print(json.dumps(info, indent=2))
        return
    out.print(summary_table(matrix, info, f"{file}: {len(matrix)} questions x {len(matrix.experts)} experts"
                                          + (f" ({split})" if split else "")))
    unit = info["cost_unit"]
    out.print("* best single expert of the column; oracle: a question counts when any expert got it right"
              + ("" if unit else "; no costs recorded"), highlight=False)


def summary_table(matrix: Matrix, info: dict[str, Any], title: str) -> Table:
    """Experts x tasks: accuracy (the column's best single marked *) and mean cost, then the
    oracle and the question counts."""
    unit = info["cost_unit"]
    names = [*matrix.tasks, "all"]
    tasks = info["tasks"]
    table = Table(title=title)
    table.add_column("expert", overflow="fold")
    for name in names:
        table.add_column(f"{name}\nacc", justify="right")
        if unit:
            table.add_column(f"{name}\n{'USD' if unit == 'usd' else 'tokens'}", justify="right")

    def row(cell: Callable[[str], str], cost: Callable[[str], str]) -> list[str]:
        return [c for name in names for c in ((cell(name), cost(name)) if unit else (cell(name),))]

    for expert in matrix.experts:
        table.add_row(expert, *row(
            lambda n, e=expert: f"{100 * tasks[n]['accuracy'][e]:.1f}{'*' if tasks[n]['best_single'] == e else ''}",
            lambda n, e=expert: _cost_text(tasks[n]["cost"][e], unit)))
    table.add_row("oracle", *row(lambda n: f"{100 * tasks[n]['oracle']:.1f}", lambda n: ""), style="bold")
    table.add_row("questions (val/test)", *row(
        lambda n: f"{tasks[n]['questions']} ({tasks[n]['splits']['validation']}/{tasks[n]['splits']['test']})",
        lambda n: ""), style="dim")
    return table
