"""Orchestrator: configuration, profiles, recruitment, the retrieval gate, aggregation, and the
one query pipeline (annotate, plan, gate, execute grouped by model, combine, extract) that
every face of symoe runs; ``orchestrator.cli`` is the command line (the composition root).

Public API::

    from orchestrator import Symoe, load_config
    with Symoe() as symoe:
        result = symoe.ask("What is 17 * 23?")
        print(result.answer, result.experts)
"""

from orchestrator.api import Symoe, ask
from orchestrator.config import SymoeConfig, load_config
from orchestrator.methods import Assignment, Method, MethodContext, MethodSpec, methods
from orchestrator.records import AskResult, ExpertAnswer, Query, Recruit

__all__ = ["AskResult", "Assignment", "ExpertAnswer", "Method", "MethodContext", "MethodSpec", "Query", "Recruit",
           "Symoe", "SymoeConfig", "ask", "load_config", "methods"]
