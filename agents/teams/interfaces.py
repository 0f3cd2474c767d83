"""The plug-in interfaces of a team: generators, critics, rewriters, plan critics, the final
reviewer and the aggregator, plus the context a generator runs in.

Subclass one, give it a ``name``, and register it (``agents.teams.registry``) or hand an
instance to ``Team`` directly. Nothing here knows about audio.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from agents.teams.records import Artifact, Event, EventResult, Issue, Plan, Score, Trace

#: ``llm(prompt, system, max_tokens) -> text``; None when no language model is available.
LLM = Callable[[str, str, int], str]


@dataclass
class Context:
    """What a generator or critic may use: a folder for its files, a seed, the LLM, the trace."""

    workdir: Path
    seed: int = 0
    llm: LLM | None = None
    trace: Trace = field(default_factory=Trace)
    memo: dict[str, Any] = field(default_factory=dict)


class Generator(abc.ABC):
    """Makes an artifact for an event. ``prior`` is its expected critic score before profiling."""

    name: ClassVar[str] = ""
    event_types: ClassVar[tuple[str, ...]] = ()
    prior: ClassVar[float] = 0.5

    @abc.abstractmethod
    def generate(self, event: Event, ctx: Context) -> Artifact:
        """Write the output for ``event`` under ``ctx.workdir``; raise on failure."""


class Critic(abc.ABC):
    """Measures one property of an artifact; scores in [0, 1], 0.7 or more passes by default."""

    name: ClassVar[str] = ""
    event_types: ClassVar[tuple[str, ...]] = ()

    @abc.abstractmethod
    def judge(self, event: Event, artifact: Artifact, ctx: Context) -> Score: ...


class Rewriter(abc.ABC):
    """Rewrites an event's generator input from critic feedback (the prompt rewrite between tries)."""

    event_types: ClassVar[tuple[str, ...]] = ()

    @abc.abstractmethod
    def rewrite(self, event: Event, feedback: list[Score], ctx: Context) -> tuple[Event, str] | None:
        """A changed event and a one-line note, or None when nothing would help.

        ``feedback`` holds every score of the last attempt; failing critics carry ``hint``s."""


class PlanCritic(abc.ABC):
    """Checks a plan before generation (timeline sanity, durations, overlaps)."""

    name: ClassVar[str] = ""

    @abc.abstractmethod
    def check(self, plan: Plan, known_types: set[str]) -> list[Issue]: ...


class Reviewer(abc.ABC):
    """The final reviewer: judges the assembled output; its issues with hints go back to the loop."""

    name: ClassVar[str] = ""

    @abc.abstractmethod
    def review(self, plan: Plan, results: dict[str, EventResult], ctx: Context) -> list[Issue]: ...


class Aggregator(abc.ABC):
    """Assembles the chosen artifacts into the team's output files."""

    name: ClassVar[str] = ""

    @abc.abstractmethod
    def assemble(self, plan: Plan, results: dict[str, EventResult], outdir: Path, ctx: Context) -> dict[str, Any]:
        """Write the outputs; return what was written (paths and figures) for the result record."""


class Planner(abc.ABC):
    """Turns a brief into a plan; ``feedback`` holds the plan critic's issues of the last plan."""

    @abc.abstractmethod
    def plan(self, brief: Any, feedback: list[Issue], ctx: Context) -> Plan: ...
