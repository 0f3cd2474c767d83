"""``symoe compose``: turn a brief (text or storyboard) and optionally a video into a mixed
soundtrack with the audio generator/supervisor team, planned by one of the pool's experts."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from agents.audio.compose import backend_llm, compose, summary
from agents.runtime import LoadedPool
from orchestrator.cli.common import ConfigOpt, config_from, err, out


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
    config: ConfigOpt = None,
) -> None:
    """Compose a soundtrack: plan timed speech, music and effects, generate, critique, mix."""
    cfg = config_from(config)
    name = model or cfg.default_expert
    cfg.expert(name)
    seed = cfg.seed if seed is None else seed
    stem = Path(brief).stem if Path(brief).suffix else "brief"
    outdir = output or Path(f"compose-{stem}")
    # Library chatter on stdout (import notices, progress) goes to stderr: stdout carries the result.
    pool = LoadedPool(cfg.experts, cfg.home)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            result = compose(brief, outdir, llm=backend_llm(lambda: pool.get(name), seed), home=cfg.home,
                             video=video, seed=seed, max_tries=max_tries, profiles=profiles)
    finally:
        pool.close()
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
