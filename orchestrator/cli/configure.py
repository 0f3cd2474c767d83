"""``symoe config show``: the effective configuration (defaults, file and SYMOE_* merged)."""

from __future__ import annotations

import typer
import yaml

from orchestrator.cli.common import ConfigOpt, config_from

app = typer.Typer(no_args_is_help=True, help="Show the effective configuration.")


@app.command("show")
def config_show(config: ConfigOpt = None) -> None:
    """Print the effective configuration (defaults, file and SYMOE_* variables merged) as YAML."""
    print(yaml.safe_dump(config_from(config).public_dict(), sort_keys=False))
