"""The supervisor team's plan side: the timeline critic and the rejection of impossible plans.

``TimelineCritic`` checks a plan before anything is generated: events inside the brief's
duration, positive durations, no overlap between exclusive events (one voice speaks at a
time), known event types. Issues on events whose times the brief fixed (``locked``) cannot
be repaired by replanning, so the team rejects the plan with ``PlanRejected``; the message
lists every problem on one line.
"""

from __future__ import annotations

from agents.errors import SymoeError
from agents.teams.interfaces import PlanCritic
from agents.teams.records import Issue, Plan

TOLERANCE = 0.05  # seconds of overlap or overrun tolerated (rounding of hand-written times)


class PlanRejected(SymoeError):
    """The supervisor found a plan that cannot be produced; the message says what is wrong."""

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = issues
        shown = "; ".join(i.message for i in issues[:6])
        more = f" (and {len(issues) - 6} more)" if len(issues) > 6 else ""
        super().__init__(f"plan rejected by the supervisor: {shown}{more}")


class TimelineCritic(PlanCritic):
    name = "timeline"

    def __init__(self, exclusive: tuple[str, ...] = ("speech",), tolerance: float = TOLERANCE) -> None:
        self.exclusive = exclusive
        self.tolerance = tolerance

    def check(self, plan: Plan, known_types: set[str]) -> list[Issue]:
        issues: list[Issue] = []
        if plan.duration <= 0:
            issues.append(Issue(critic=self.name, message=f"the total duration is {plan.duration:g} s"))
        if not plan.events:
            issues.append(Issue(critic=self.name, message="the plan has no events"))
        ids = [e.id for e in plan.events]
        for dup in sorted({i for i in ids if ids.count(i) > 1}):
            issues.append(Issue(critic=self.name, event_id=dup, message=f"event id {dup!r} is used twice"))
        for e in plan.events:
            where = f"{e.id} ({e.type})"
            if e.type not in known_types:
                issues.append(Issue(critic=self.name, event_id=e.id,
                                    message=f"{where}: no generator handles type {e.type!r}"))
            if e.start < 0:
                issues.append(Issue(critic=self.name, event_id=e.id, message=f"{where} starts at {e.start:g} s"))
            if e.duration <= 0:
                issues.append(Issue(critic=self.name, event_id=e.id,
                                    message=f"{where} has duration {e.duration:g} s"))
            elif e.end > plan.duration + self.tolerance:
                issues.append(Issue(critic=self.name, event_id=e.id,
                                    message=f"{where} ends at {e.end:g} s, after the brief's end at "
                                            f"{plan.duration:g} s"))
        excl = sorted((e for e in plan.events if e.type in self.exclusive), key=lambda e: e.start)
        for a_i, a in enumerate(excl):
            for b in excl[a_i + 1:]:
                overlap = min(a.end, b.end) - max(a.start, b.start)
                if overlap > self.tolerance:
                    issues.append(Issue(critic=self.name, event_id=b.id,
                                        message=f"{b.id} ({b.type}, {b.start:g}-{b.end:g} s) overlaps {a.id} "
                                                f"({a.start:g}-{a.end:g} s) by {overlap:.2f} s"))
        return issues
