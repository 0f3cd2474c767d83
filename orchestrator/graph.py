"""The query pipeline as a langgraph StateGraph: thin nodes over the stages of
``orchestrator.pipeline``, each working on the whole batch of plans.

    plan (annotate inside) -> gate -> answer -> escalate -> combine -> extract

``run(pipeline, queries, methods)`` is how every face runs the pipeline: ``Symoe.ask`` on a
batch of one, ``evaluate`` on every method's plans, profiling on one plan per expert.
"""

from __future__ import annotations

from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph

from orchestrator.methods import MethodSpec
from orchestrator.pipeline import Pipeline, Plan, answer, combine, escalate, extract_answers, gate, plan
from orchestrator.records import Query


class PipelineState(TypedDict, total=False):
    queries: list[Query]
    methods: list[MethodSpec]
    seed: int
    plans: list[Plan]


def build_graph(ctx: Pipeline) -> Any:
    def plan_node(state: PipelineState) -> dict[str, Any]:
        if state.get("plans"):  # planned by the caller already (a server watching its plans)
            return {"plans": state["plans"]}
        return {"plans": plan(ctx, state["queries"], state["methods"], state["seed"])}

    def on_plans(stage: Any) -> Any:
        def node(state: PipelineState) -> dict[str, Any]:
            stage(ctx, state["plans"])
            return {"plans": state["plans"]}
        return node

    graph = StateGraph(PipelineState)
    graph.add_node("plan", plan_node)
    graph.add_node("gate", on_plans(gate))
    graph.add_node("answer", on_plans(answer))
    graph.add_node("escalate", on_plans(escalate))
    graph.add_node("combine", on_plans(combine))
    graph.add_node("extract", on_plans(extract_answers))
    graph.add_edge(START, "plan")
    graph.add_edge("plan", "gate")
    graph.add_edge("gate", "answer")
    graph.add_edge("answer", "escalate")
    graph.add_edge("escalate", "combine")
    graph.add_edge("combine", "extract")
    graph.add_edge("extract", END)
    return graph.compile()


def run(ctx: Pipeline, queries: list[Query], methods: list[MethodSpec], seed: int | None = None) -> list[Plan]:
    """Every (method, query) plan, answered: methods outer, queries inner, in the given order."""
    if not queries or not methods:
        return []
    state = build_graph(ctx).invoke({"queries": queries, "methods": methods,
                                     "seed": ctx.config.seed if seed is None else seed})
    return list(state["plans"])


def answer_plans(ctx: Pipeline, plans: list[Plan]) -> list[Plan]:
    """The stages after planning, on plans the caller made (``pipeline.plan``) and holds."""
    if not plans:
        return []
    state = build_graph(ctx).invoke({"queries": [], "methods": [], "seed": plans[0].seed, "plans": plans})
    return list(state["plans"])
