"""The team as a langgraph graph: plan -> plan review -> generate -> final review -> aggregate.

    plan ──> check_plan ──(issues, replans left, nothing locked)──> plan
                 │ (issues otherwise: PlanRejected)
                 v
             generate <──(reviewer issues with hints, rounds left)── review
                 └──────────────────────────────────────────────────> review ──> aggregate

The planner may be re-asked once with the plan critic's issues as feedback. The final
reviewer's issues carry hints (``{"event": {field: value}, "params": {...}}``) that change
the events they name; those events are generated again, at most ``max_rounds`` times.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph

from agents.errors import SymoeError
from agents.teams.expert import DomainExpert
from agents.teams.interfaces import Aggregator, Context, PlanCritic, Planner, Reviewer
from agents.teams.records import Event, EventResult, Issue, Plan, TeamResult
from agents.teams.supervisor import PlanRejected


class TeamState(TypedDict, total=False):
    brief: Any
    plan: Plan
    feedback: list[Issue]
    replans: int
    round: int
    pending: list[str]
    results: dict[str, EventResult]
    reviews: list[list[Issue]]
    outputs: dict[str, Any]


@dataclass
class Team:
    planner: Planner
    experts: dict[str, DomainExpert]
    aggregator: Aggregator
    plan_critics: list[PlanCritic] = field(default_factory=list)
    reviewer: Reviewer | None = None
    max_replans: int = 1
    max_rounds: int = 2

    def __post_init__(self) -> None:
        self.graph = self._build()

    # -- nodes ---------------------------------------------------------------------------
    def _plan(self, state: TeamState) -> dict[str, Any]:
        plan = self.planner.plan(state["brief"], state.get("feedback", []), self.ctx)
        self.ctx.trace.add("plan", "planner", f"{len(plan.events)} events over {plan.duration:g} s "
                           f"({plan.source})", events=[e.model_dump() for e in plan.events], cuts=plan.cuts)
        for note in plan.repairs:
            self.ctx.trace.add("plan", "planner", f"repaired: {note}")
        return {"plan": plan}

    def _check_plan(self, state: TeamState) -> dict[str, Any]:
        plan = state["plan"]
        issues = [i for c in self.plan_critics for i in c.check(plan, set(self.experts))]
        for i in issues:
            self.ctx.trace.add("plan_review", f"critic:{i.critic}", i.message, i.event_id)
        if not issues:
            self.ctx.trace.add("plan_review", "supervisor", "plan accepted")
            return {"feedback": [], "pending": [e.id for e in plan.events]}
        locked = {e.id for e in plan.events if e.locked}
        fixable = not any(i.event_id in locked or i.event_id is None for i in issues)
        if fixable and state.get("replans", 0) < self.max_replans:
            self.ctx.trace.add("plan_review", "supervisor", f"plan sent back to the planner with {len(issues)} issues")
            return {"feedback": issues, "replans": state.get("replans", 0) + 1}
        self.ctx.trace.add("plan_review", "supervisor", "plan rejected")
        raise PlanRejected(issues)

    def _after_check(self, state: TeamState) -> str:
        return "plan" if state.get("feedback") else "generate"

    def _generate(self, state: TeamState) -> dict[str, Any]:
        plan = state["plan"]
        results = dict(state.get("results", {}))
        round_ = state.get("round", 0)
        plan = plan.model_copy(deep=True)
        for eid in state["pending"]:
            event = plan.event(eid)
            results[eid] = self.experts[event.type].run(event, round_, self.ctx, results.get(eid))
            best = results[eid].best
            if best is not None:  # the plan records what was made (rewritten text, knobs), same times
                made = best.event.model_copy(update={"start": event.start, "duration": event.duration})
                plan.events[plan.events.index(event)] = made
        return {"results": results, "plan": plan}

    def _review(self, state: TeamState) -> dict[str, Any]:
        reviews = list(state.get("reviews", []))
        if self.reviewer is None:
            return {"pending": [], "reviews": reviews}
        issues = self.reviewer.review(state["plan"], state["results"], self.ctx)
        reviews.append(issues)
        for i in issues:
            self.ctx.trace.add("review", f"reviewer:{i.critic}", i.message, i.event_id, hint=i.hint,
                               severity=i.severity)
        round_ = state.get("round", 0)
        actionable = [i for i in issues if i.event_id and i.hint and i.severity == "error"]
        if not issues:
            self.ctx.trace.add("review", "supervisor", "output accepted")
        if not actionable or round_ + 1 > self.max_rounds:
            if actionable:
                self.ctx.trace.add("review", "supervisor", f"{len(actionable)} issues left after {round_} "
                                   "review rounds; keeping the best output")
            return {"pending": [], "reviews": reviews}
        plan = state["plan"].model_copy(deep=True)
        pending: list[str] = []
        for issue in actionable:
            event = plan.event(issue.event_id)  # type: ignore[arg-type]
            updated = apply_hint(event, issue.hint)
            plan.events[plan.events.index(event)] = updated
            if issue.event_id not in pending:
                pending.append(issue.event_id)  # type: ignore[arg-type]
            self.ctx.trace.add("rewrite", "supervisor", f"{event.id}: sent back ({issue.message})", event.id,
                               hint=issue.hint)
        return {"plan": plan, "pending": pending, "round": round_ + 1, "reviews": reviews}

    def _after_review(self, state: TeamState) -> str:
        return "generate" if state.get("pending") else "aggregate"

    def _aggregate(self, state: TeamState) -> dict[str, Any]:
        outputs = self.aggregator.assemble(state["plan"], state["results"], self.outdir, self.ctx)
        self.ctx.trace.add("aggregate", f"aggregator:{self.aggregator.name}", "assembled the output",
                           outputs={k: str(v) for k, v in outputs.items()})
        return {"outputs": outputs}

    def _build(self) -> Any:
        g = StateGraph(TeamState)
        g.add_node("plan", self._plan)
        g.add_node("check_plan", self._check_plan)
        g.add_node("generate", self._generate)
        g.add_node("review", self._review)
        g.add_node("aggregate", self._aggregate)
        g.add_edge(START, "plan")
        g.add_edge("plan", "check_plan")
        g.add_conditional_edges("check_plan", self._after_check, ["plan", "generate"])
        g.add_edge("generate", "review")
        g.add_conditional_edges("review", self._after_review, ["generate", "aggregate"])
        g.add_edge("aggregate", END)
        return g.compile()

    # -- running -------------------------------------------------------------------------
    def run(self, brief: Any, outdir: Path, ctx: Context) -> TeamResult:
        """Plan, generate, review and assemble; raises ``PlanRejected`` for impossible plans."""
        self.ctx, self.outdir = ctx, outdir
        began = time.perf_counter()
        recursion = 8 + 2 * self.max_replans + 3 * self.max_rounds
        state = self.graph.invoke({"brief": brief}, {"recursion_limit": recursion})
        for expert in self.experts.values():
            expert.profiles.save()
        return TeamResult(plan=state["plan"], results=state["results"], reviews=state.get("reviews", []),
                          outputs=state.get("outputs", {}), trace=ctx.trace,
                          seconds=round(time.perf_counter() - began, 2))


def apply_hint(event: Event, hint: dict[str, Any]) -> Event:
    """The event with a reviewer's hint applied: ``event`` sets fields, ``params`` merges knobs,
    ``loudness_delta`` shifts the loudness target."""
    update: dict[str, Any] = dict(hint.get("event", {}))
    if "loudness_delta" in hint:
        update["loudness"] = round(event.loudness + float(hint["loudness_delta"]), 2)
    if "params" in hint:
        update["params"] = {**event.params, **hint["params"]}
    bad = set(update) - set(Event.model_fields)
    if bad:
        raise SymoeError(f"reviewer hint sets unknown event fields: {', '.join(sorted(bad))}")
    return event.model_copy(update=update)
