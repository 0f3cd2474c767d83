"""What every command shares: the consoles, the ``--config`` option, progress bars for long
stages (``agents.progress``), reading a question, checking an output folder is writable, and the one rule for errors (a
``SymoeError`` is one ``error:`` line on stderr and exit status 2, never a traceback)."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from agents.errors import SymoeError
from agents.progress import stage_bars
from orchestrator.config import SymoeConfig, load_config

__all__ = ["ConfigOpt", "check_argv", "check_range", "config_from", "deprecated_option", "err", "fail", "one_line",
           "out", "read_question", "stage_bars"]

out = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML or TOML config file")]


def config_from(path: Path | None) -> SymoeConfig:
    return load_config(path)


def deprecated_option(old: str, new: str, old_value: str | None, value: str | None) -> str | None:
    """An option's value under its new name, or under its old one with one deprecation line."""
    if old_value is None:
        return value
    err.print(f"[yellow]{old} is deprecated and goes in the next release; use {new}[/yellow]", highlight=False)
    if value is not None and value != old_value:
        raise SymoeError(f"give {new} or {old}, not both")
    return old_value


def read_question(question: str) -> str:
    """The argument, or standard input for '-'; text that is not UTF-8 is refused in one line."""
    if question == "-":
        data = sys.stdin.buffer.read()
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            raise SymoeError(f"standard input is not valid UTF-8 (line {line}, byte {exc.start}); "
                             "send UTF-8 text") from None
    try:
        question.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise SymoeError(f"the question argument is not valid UTF-8 (byte {_byte_offset(question, exc.start)}); "
                         "pass UTF-8 text") from None
    return question


def _byte_offset(text: str, index: int) -> int:
    """Byte offset of character ``index`` in the bytes the OS gave (undecodable bytes are surrogates)."""
    return len(text[:index].encode("utf-8", "surrogateescape"))


def check_argv(argv: list[str]) -> None:
    """Every command-line argument must be UTF-8: one line naming the first that is not."""
    for position, arg in enumerate(argv, 1):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError as exc:
            raw = arg.encode("utf-8", "surrogateescape")
            raise SymoeError(f"argument {position} ({raw!r}) is not valid UTF-8 (byte "
                             f"{_byte_offset(arg, exc.start)}); pass UTF-8 text") from None


def comma_list(text: str | None) -> list[str]:
    """The items of a comma-separated option, stripped, empty ones dropped (``"a, b,"`` -> a, b)."""
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def check_range(option: str, value: float | None, low: float, high: float | None = None, unit: str = "") -> None:
    """Refuse an option value outside [low, high] (or below ``low``) in one line that gives the range."""
    if value is None:
        return
    finite = value == value and value not in (float("inf"), float("-inf"))
    if finite and value >= low and (high is None or value <= high):
        return
    allowed = f"from {_number(low)} to {_number(high)}" if high is not None else f"at least {_number(low)}"
    raise SymoeError(f"{option} must be {allowed}{unit}, not {value}")


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def one_line(message: str) -> str:
    """``message`` on one printable line: line breaks, control characters and undecodable bytes escaped."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in message)


def fail(message: str) -> None:
    """Print one ``error:`` line."""
    err.print(f"error: {one_line(message)}", markup=False, highlight=False, emoji=False, soft_wrap=True)


ExecutorOpt = Annotated[str | None, typer.Option("--executor", help="where batch work runs: local or ray "
                                                 "(default: the config's executor.kind)")]
RayAddressOpt = Annotated[str | None, typer.Option("--ray-address", help="Ray cluster: auto or HOST:PORT "
                                                   "(default: start a local one)")]


BulkOpt = Annotated[int, typer.Option(
    "--bulk", help="llama.cpp sequences decoded together, 1-64 (1: one after another, as `symoe ask` does; 8: "
                   "~1.7x the tokens/s on 2 cores, a text can differ by float rounding at a near-tie)")]


def with_executor(cfg: SymoeConfig, executor: str | None, ray_address: str | None) -> SymoeConfig:
    """The config with ``--executor`` / ``--ray-address`` applied (checked: one line if wrong)."""
    if executor is not None and executor not in ("local", "ray"):
        raise SymoeError(f"--executor must be local or ray, not {executor!r}")
    updates = {k: v for k, v in {"kind": executor, "address": ray_address}.items() if v is not None}
    if ray_address is not None and "kind" not in updates:
        updates["kind"] = "ray"
    return cfg.model_copy(update={"executor": cfg.executor.model_copy(update=updates)}) if updates else cfg


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (a scheduler's or a session's end) raises ``KeyboardInterrupt`` as Ctrl-C does, so
    a long run stops between steps and writes what it has done (as it was, after)."""
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave SIGTERM as it is
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
