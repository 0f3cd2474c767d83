"""Generator/supervisor teams: a planner, domain experts that pick generators by learned
profiles and refine by trial and error against critics, a supervisor (plan critic, final
reviewer) whose feedback goes back into the loop, and an aggregator; all recorded in a trace.

The framework is modality-agnostic; ``agents.audio`` builds the ``symoe compose`` task on it.
"""

from agents.teams.expert import DomainExpert
from agents.teams.interfaces import Aggregator, Context, Critic, Generator, PlanCritic, Planner, Reviewer, Rewriter
from agents.teams.profiles import GeneratorProfiles
from agents.teams.records import Artifact, Attempt, Event, EventResult, Issue, Plan, Score, TeamResult, Trace
from agents.teams.registry import critics, generators
from agents.teams.supervisor import PlanRejected, TimelineCritic
from agents.teams.team import Team

__all__ = [
    "Aggregator", "Artifact", "Attempt", "Context", "Critic", "DomainExpert", "Event", "EventResult",
    "Generator", "GeneratorProfiles", "Issue", "Plan", "PlanCritic", "PlanRejected", "Planner", "Reviewer",
    "Rewriter", "Score", "Team", "TeamResult", "TimelineCritic", "Trace", "critics", "generators",
]
