"""The Python API's entry points: ``Symoe`` (the one session object, ``orchestrator.session``)
and ``ask``, a one-shot helper. Older code imported the query helpers from here; they live in
``orchestrator.queries`` and are re-exported for one release."""

from __future__ import annotations

from orchestrator.queries import check_fits, conversation_query, cut_at_stop, make_query
from orchestrator.records import AskResult
from orchestrator.session import Symoe

__all__ = ["Symoe", "ask", "check_fits", "conversation_query", "cut_at_stop", "make_query"]


def ask(question: str, **kwargs: object) -> AskResult:
    """One-shot helper: build ``Symoe`` from the default config, answer, free the models."""
    with Symoe() as symoe:
        return symoe.ask(question, **kwargs)  # type: ignore[arg-type]
