"""``symoe eval``: a thin CLI over ``eval.runner.evaluate`` (lm-evaluation-harness conventions)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from agents.errors import SymoeError
from orchestrator.config import load_config
from orchestrator.progress import stage_bars

out = Console()
err = Console(stderr=True)
DEFAULT_METHODS = "single,best_single,random_k,majority,moa,symoe"


def check_writable(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".symoe-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise SymoeError(f"output directory {path} is not writable ({exc.strerror}); choose another --output") from None
    if not os.access(path, os.W_OK):
        raise SymoeError(f"output directory {path} is not writable; choose another --output")


def eval_command(
    tasks: Annotated[str, typer.Option(help="comma-separated task names or JSONL files; task:N limits one task")
    ] = "mmlu,arc_challenge,gsm8k",
    limit: Annotated[int | None, typer.Option(help="questions per task")] = None,
    split: Annotated[str, typer.Option(help="test or validation")] = "test",
    methods: Annotated[str, typer.Option(help="comma-separated methods")] = DEFAULT_METHODS,
    output: Annotated[Path, typer.Option("--output", "--output-path", "-o", help="directory for the reports")] = Path(
        "runs/eval"),
    retrieval: Annotated[str | None, typer.Option(help="retrieval axis for symoe, e.g. never,always,auto")] = None,
    seed: Annotated[int, typer.Option(help="seed for sampling, recruitment and data")] = 0,
    use_cache: Annotated[Path | None, typer.Option(help="SQLite generation cache to share across runs")] = None,
    log_samples: Annotated[bool, typer.Option(help="write every answer to samples.jsonl")] = False,
    memory_budget_gb: Annotated[float | None, typer.Option(help="RAM for resident models, GB")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c")] = None,
) -> None:
    """Evaluate symoe and the baselines on benchmark tasks; resumable (re-run to continue)."""
    from eval.datasets import load_split
    from eval.methods import expand_methods
    from eval.report import markdown_table, write_reports
    from eval.runner import EvalArgs, evaluate, summarise
    from orchestrator.profiling import task_and_limit
    from orchestrator.provenance import provenance

    cfg = load_config(config)
    task_list = [t.strip() for t in tasks.split(",") if t.strip()]
    modes = [m.strip() for m in retrieval.split(",") if m.strip()] if retrieval else None
    method_list = expand_methods(methods, cfg, modes)
    if split not in ("test", "validation"):
        raise SymoeError(f"unknown split {split!r}; use test or validation")
    for entry in task_list:  # fail fast on unknown tasks or malformed files, before any work
        load_split(task_and_limit(entry, None)[0], split, cfg.home, limit=1, seed=seed)
    check_writable(output)
    args = EvalArgs(tasks=task_list, methods=method_list, limit=limit, split=split, output=output, seed=seed,
                    cache_path=use_cache, log_samples=log_samples,
                    memory_budget=int(memory_budget_gb * 2**30) if memory_budget_gb else None)
    with stage_bars(err) as report:
        samples, stats = evaluate(cfg, args, report)
    meta = {"args": args.model_dump(mode="json"), "config": cfg.public_dict(),
            "provenance": provenance(cfg, command="eval")}
    files = write_reports(output, samples, stats, meta, log_samples)
    out.print(markdown_table(summarise(samples), stats))
    out.print(f"reports: {', '.join(str(p) for p in files.values())}")


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
