"""``symoe serve``: the router as an OpenAI-compatible model on a loopback port by default."""

from __future__ import annotations

import logging
import os
from typing import Annotated

import typer
import uvicorn

from agents.errors import SymoeError
from orchestrator.cli.common import ConfigOpt, config_from, err
from orchestrator.gate import gate_warning
from orchestrator.server.app import create_app
from orchestrator.server.service import Service


def api_key_from(option: str | None) -> str | None:
    """The key every request must send: ``--api-key``, else ``SYMOE_API_KEY``; blank is none.
    The one place both the no-key warning and the service read it (the warning once read the
    option alone, so a key given only in the environment was required and warned about)."""
    key = option if option is not None and option.strip() else os.environ.get("SYMOE_API_KEY")
    return key.strip() if key and key.strip() else None


def serve_command(
    host: Annotated[str | None, typer.Option(help="address to bind (default 127.0.0.1: this machine only)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default 8000)", min=1, max=65535)] = None,
    api_key: Annotated[str | None, typer.Option(help="require 'Authorization: Bearer KEY' (or SYMOE_API_KEY)",
                                                envvar="SYMOE_API_KEY", show_envvar=False)] = None,
    batch_window_ms: Annotated[float | None, typer.Option(help="gather concurrent jobs this long per model",
                                                          min=0, max=1000)] = None,
    config: ConfigOpt = None,
) -> None:
    """Serve symoe's strategies and experts behind the OpenAI API (/v1/chat/completions, ...)."""
    cfg = config_from(config)
    updates = {k: v for k, v in {"host": host, "port": port, "batch_window_ms": batch_window_ms}.items()
               if v is not None}
    cfg = cfg.model_copy(update={"server": cfg.server.model_copy(update=updates)})
    key = api_key_from(api_key)
    if cfg.server.host not in ("127.0.0.1", "localhost", "::1") and not key:
        err.print(f"warning: listening on {cfg.server.host} without an API key: anyone who can reach this port "
                  "can use the models (--api-key or SYMOE_API_KEY)", markup=False, highlight=False)
    logger = logging.getLogger("symoe")  # one line per request on stderr
    for handler in logger.handlers:
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logger.setLevel(logging.INFO)
    service = Service(cfg, api_key=key)
    if service.profile_problem:
        err.print(f"warning: routed strategies are unavailable: {service.profile_problem}", markup=False,
                  highlight=False)
    stale = gate_warning(cfg)
    if stale:
        err.print(f"warning: {stale}", markup=False, highlight=False, soft_wrap=True)
    err.print(f"symoe serve: http://{cfg.server.host}:{cfg.server.port}/v1 ({len(service.models())} models; "
              f"{'key required' if service.api_key else 'no key'})", markup=False, highlight=False)
    try:
        uvicorn.run(create_app(service), host=cfg.server.host, port=cfg.server.port, log_level="warning",
                    access_log=False)
    except OSError as exc:
        raise SymoeError(f"cannot listen on {cfg.server.host}:{cfg.server.port} ({exc.strerror or exc})") from None
    finally:
        service.close()
