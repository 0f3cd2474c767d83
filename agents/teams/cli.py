"""``symoe compose``: turn a brief (text or storyboard) and optionally a video into a mixed
soundtrack with the audio generator/supervisor team. Registered by ``orchestrator.cli``.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

out = Console()
err = Console(stderr=True)


def compose_command(
    brief: Annotated[str, typer.Argument(help="a storyboard (.yaml/.json), a text file, or the brief's text")],
    video: Annotated[Path | None, typer.Option("--video", "-v",
                                               help="video whose duration and cuts fix the timeline")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o",
                                                help="output folder (default compose-<brief>)")] = None,
    seed: Annotated[int | None, typer.Option(help="seed for the LLM and the synthesisers")] = None,
    max_tries: Annotated[int, typer.Option(help="tries per candidate generator", min=1, max=6)] = 3,
    model: Annotated[str | None, typer.Option("--model", "-m", help="LLM expert (default: default_expert)")] = None,
    profiles: Annotated[Path | None, typer.Option(help="generator profiles JSON to learn into "
                                                  "(default <home>/teams/audio-profiles.json)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the run summary as JSON")] = False,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML or TOML config file")] = None,
) -> None:
    """Compose a soundtrack: plan timed speech, music and effects, generate, critique, mix."""
    from agents.audio.compose import compose, summary

    stem = Path(brief).stem if Path(brief).suffix else "brief"
    outdir = output or Path(f"compose-{stem}")
    # Library chatter on stdout (import notices, progress) goes to stderr: stdout carries the result.
    with contextlib.redirect_stdout(sys.stderr):
        result = compose(brief, outdir, video=video, config=config, seed=seed, max_tries=max_tries, expert=model,
                         profiles=profiles)
    info = summary(result)
    if as_json:
        print(json.dumps(info, indent=2))
        return
    table = Table(title=result.plan.title or "soundtrack")
    for col in ("event", "time (s)", "generator", "tries", "scores"):
        table.add_column(col)
    for e in info["events"]:  # type: ignore[union-attr]
        scores = " ".join(f"{k} {v:.2f}" for k, v in e["scores"].items())
        table.add_row(e["id"], f"{e['start']:g}-{e['end']:g}", e["generator"] or "-", str(e["tries"]), scores)
    out.print(table)
    for note in result.plan.repairs:
        err.print(f"[dim]plan repaired: {note}[/dim]", highlight=False)
    if info["regenerated"]:
        out.print(f"regenerated after a failed critic: {', '.join(info['regenerated'])}")  # type: ignore[arg-type]
    for kind, path in result.outputs.items():
        if kind in ("wav", "timeline", "png", "video"):
            out.print(f"{kind}: {path}")
    out.print(f"trace: {outdir / 'trace.json'}; mix {result.outputs.get('mix_lufs')} LUFS; {result.seconds:.1f} s")


def register(app: typer.Typer) -> None:
    app.command("compose")(compose_command)
