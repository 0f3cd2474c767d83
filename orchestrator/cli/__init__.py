"""The ``symoe`` command line: the composition root, one module per command group.

    symoe ask | models | config | profile | data | eval | index | compose | serve | lm-eval

Each module is a thin typer layer over the library (``orchestrator.api``, ``eval``,
``retrieval``, ``agents.audio``); nothing imports this package. Every ``SymoeError`` is one
``error:`` line on stderr and exit status 2 (as is bad usage, and an argument that is not
UTF-8); Ctrl-C says what was kept and exits 130.
"""

from __future__ import annotations

import logging
import sys
import warnings

import typer

from agents.errors import SymoeError
from orchestrator.cli import ask, compose, configure, data, evaluation, harness, index, matrix, models, profile, serve
from orchestrator.cli import cache as cache_cli
from orchestrator.cli.common import check_argv, fail

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="symoe: answer questions with a team of expert LLMs.")
app.command("ask")(ask.ask)
app.add_typer(models.app, name="models")
app.add_typer(configure.app, name="config")
app.add_typer(profile.app, name="profile")
app.add_typer(data.app, name="data")
app.command("eval")(evaluation.eval_command)
app.add_typer(index.app, name="index")
app.add_typer(matrix.app, name="matrix")
app.add_typer(cache_cli.app, name="cache")
app.command("compose")(compose.compose_command)
app.command("serve")(serve.serve_command)
app.command("lm-eval", context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                                         "help_option_names": []})(harness.lm_eval_command)

INTERRUPTED = ("interrupted: every finished generation is kept in the generation cache; "
               "run the same command again to continue where it stopped")


def show_waits() -> None:
    """What symoe waits for (a slow server's retries) goes to stderr as ``note:`` lines."""
    logger = logging.getLogger("symoe")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("note: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.WARNING)
        logger.propagate = False


def one_line_warning(message: Warning | str, category: type[Warning], *_: object, **__: object) -> str:
    """A deprecation or other warning as one ``warning:`` line, without the code that raised it."""
    return f"warning: {message}\n"


def main() -> None:
    show_waits()
    warnings.formatwarning = one_line_warning  # type: ignore[assignment]
    try:
        check_argv(sys.argv[1:])
        code = app(standalone_mode=False)
    except SymoeError as exc:
        fail(str(exc))
        raise SystemExit(2) from None
    except typer.Exit as exc:  # --help and friends
        raise SystemExit(exc.exit_code) from None
    except (KeyboardInterrupt, typer.Abort):
        code = 130
    except typer.TyperException as exc:  # bad usage: one line saying what to fix
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            print(ctx.get_help())
            raise SystemExit(0) from None
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        fail(" ".join(message.split()) + hint)
        raise SystemExit(getattr(exc, "exit_code", 2)) from None
    if code == 130:  # Ctrl-C: typer turns the KeyboardInterrupt of a command into exit code 130
        # a plain write: the interrupt may have landed inside a rich print, leaving its buffer held
        sys.stderr.write(f"{INTERRUPTED}\n")
        sys.stderr.flush()
    raise SystemExit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
