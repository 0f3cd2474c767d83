"""What every command shares: the consoles, the ``--config`` option, progress bars for long
stages (``agents.progress``), reading a question, and the one rule for errors (a
``SymoeError`` is one ``error:`` line on stderr and exit status 2, never a traceback)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from agents.errors import SymoeError
from agents.progress import stage_bars
from orchestrator.config import SymoeConfig, load_config

__all__ = ["ConfigOpt", "config_from", "err", "fail", "out", "read_question", "stage_bars"]

out = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML or TOML config file")]


def config_from(path: Path | None) -> SymoeConfig:
    return load_config(path)


def read_question(question: str) -> str:
    """The argument, or standard input for '-'; text that is not UTF-8 is refused in one line."""
    if question == "-":
        data = sys.stdin.buffer.read()
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SymoeError(f"standard input is not valid UTF-8 (byte {exc.start}); send UTF-8 text") from None
    try:
        question.encode("utf-8")
    except UnicodeEncodeError:
        raise SymoeError("the question is not valid UTF-8; pass UTF-8 text") from None
    return question


def fail(message: str) -> None:
    """Print one ``error:`` line."""
    err.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
