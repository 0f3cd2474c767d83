"""``symoe lm-eval ARGS...``: lm-evaluation-harness's own command line with the ``symoe`` model
registered (``--model symoe --model_args router=symoe``); needs ``pip install 'symoe[lm-eval]'``."""

from __future__ import annotations

import typer

from agents.errors import SymoeError

try:  # the optional extra: without it the command says what to install
    from orchestrator import harness
except ImportError as exc:  # pragma: no cover - depends on the install
    harness = None
    MISSING = str(exc)


def lm_eval_command(ctx: typer.Context) -> None:
    """Run lm_eval with symoe registered as --model symoe (all arguments go to lm_eval)."""
    if harness is None:
        raise SymoeError(f"symoe lm-eval needs lm-evaluation-harness: pip install 'symoe[lm-eval]' ({MISSING})")
    code = harness.main(list(ctx.args))
    if code:
        raise typer.Exit(code)
