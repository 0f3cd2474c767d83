"""Orchestrator: configuration, profiles, recruitment, the retrieval gate, aggregation, and the
one query pipeline (annotate, plan, gate, execute grouped by model, combine, extract) that
every face of symoe runs; ``orchestrator.cli`` is the command line (the composition root).

Public API::

    from orchestrator import Symoe, load_config
    with Symoe() as symoe:
        decision = symoe.route("What is 17 * 23?")      # who would answer, and why
        result = symoe.ask("What is 17 * 23?")          # router="symoe" by default
        print(result.answer, result.experts)
"""

from orchestrator.api import ask
from orchestrator.config import SymoeConfig, load_config
from orchestrator.methods import Assignment, Method, MethodContext, MethodSpec, methods
from orchestrator.records import AskResult, ExpertAnswer, Query, Recruit, RouteDecision
from orchestrator.session import Symoe

__all__ = ["AskResult", "Assignment", "ExpertAnswer", "Method", "MethodContext", "MethodSpec", "Query", "Recruit",
           "RouteDecision",
           "Symoe", "SymoeConfig", "ask", "load_config", "methods"]
