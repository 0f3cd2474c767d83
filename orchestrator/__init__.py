"""Orchestrator: configuration, profiling, recruitment, the retrieval gate and the query graph.

Public API::

    from orchestrator import Symoe, load_config
    with Symoe() as symoe:
        result = symoe.ask("What is 17 * 23?")
        print(result.answer, result.experts)
"""

from orchestrator.api import Symoe, ask
from orchestrator.config import SymoeConfig, load_config
from orchestrator.records import AskResult, ExpertAnswer, Recruit

__all__ = ["AskResult", "ExpertAnswer", "Recruit", "Symoe", "SymoeConfig", "ask", "load_config"]
