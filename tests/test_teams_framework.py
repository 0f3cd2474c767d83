"""The team framework with plain-Python plug-ins (no audio): JSON repair, the timeline critic,
the trial-and-error loop, profiles, the review loop and the trace."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agents.errors import SymoeError
from agents.registry import Registry
from agents.teams import (
    Aggregator,
    Artifact,
    Context,
    Critic,
    DomainExpert,
    Event,
    EventResult,
    Generator,
    GeneratorProfiles,
    Issue,
    Plan,
    Planner,
    PlanRejected,
    Reviewer,
    Rewriter,
    Score,
    Team,
    TimelineCritic,
)
from agents.teams.planner import EventSchema, coerce_events, extract_json
from agents.teams.registry import create, for_type

SCHEMA = EventSchema(types=("speech", "music", "effect"), aliases={"sfx": "effect", "dialogue": "speech"},
                     default_duration={"music": 8.0, "effect": 2.0}, exclusive=("speech",))


# -- JSON extraction and plan repair --------------------------------------------------------
@pytest.mark.parametrize("reply", [
    '[{"type": "music", "start": 0}]',
    'Sure! Here is the plan:\n```json\n[{"type": "music", "start": 0}]\n```\nEnjoy.',
    'Plan: [{"type": "music", "start": 0},]',
    "[{'type': 'music', 'start': 0}]",
    '[{"type": "music", "start": 0}',  # truncated
    '{"events": [{"type": "music", "start": 0}]}',
])
def test_extract_json_finds_the_plan(reply: str) -> None:
    data, _ = extract_json(reply)
    events = data["events"] if isinstance(data, dict) else data
    assert events == [{"type": "music", "start": 0}]


def test_extract_json_says_when_there_is_none() -> None:
    assert extract_json("I cannot help with that.")[0] is None


def test_coerce_repairs_and_says_what() -> None:
    raw = [
        {"type": "Dialogue", "start": "1.5s", "text": "Hello there, how are you today?"},
        {"type": "sfx", "start": -2, "duration": 1, "description": "door slam"},
        {"type": "speech", "start": 2.0, "duration": 2, "text": "Fine, thanks."},
        {"type": "music", "start": 4, "duration": 50, "description": "calm piano", "volume": 12},
        {"type": "laser", "start": 1, "description": "pew"},
        "not an event",
    ]
    repairs: list[str] = []
    events = coerce_events(raw, SCHEMA, (0.0, 10.0), "p", repairs)
    by_type = {e.type: e for e in events}
    assert [e.type for e in events].count("speech") == 2
    speech = sorted((e for e in events if e.type == "speech"), key=lambda e: e.start)
    assert speech[0].start == 1.5 and speech[0].duration > 2  # duration from the word count
    assert speech[1].start >= speech[0].end  # pushed after the first line
    assert by_type["effect"].start == 0.0
    assert by_type["music"].end == pytest.approx(10.0)
    assert by_type["music"].loudness == -20.0  # +12 LUFS is out of range: default
    text = " | ".join(repairs)
    for expected in ("'Dialogue' read as 'speech'", "moved to 0 s", "past the end", "unknown type 'laser'",
                     "not an object", "overlapped", "out of [-40, -8]"):
        assert expected in text, expected


def test_timeline_critic_names_every_problem() -> None:
    plan = Plan(duration=10, events=[
        Event(id="a", type="speech", start=-1, duration=2, text="x"),
        Event(id="b", type="speech", start=0.5, duration=2, text="y"),
        Event(id="c", type="music", start=8, duration=5, description="z"),
        Event(id="d", type="hologram", start=1, duration=1),
    ])
    issues = TimelineCritic().check(plan, {"speech", "music"})
    text = " | ".join(i.message for i in issues)
    assert "a (speech) starts at -1 s" in text
    assert "b (speech, 0.5-2.5 s) overlaps a" in text
    assert "ends at 13 s, after the brief's end at 10 s" in text
    assert "no generator handles type 'hologram'" in text
    assert not TimelineCritic().check(Plan(duration=10, events=[Event(id="ok", type="music", start=0, duration=10)]),
                                      {"music"})


# -- plug-ins for a toy team: "renders" are text files, critics read them back ---------------
class Writer(Generator):
    """Writes the event's text repeated ``params['repeat']`` times; ``quality`` is its real score."""

    event_types = ("speech", "music", "effect")

    def __init__(self, name: str, prior: float, quality: float) -> None:
        self.name, self.prior, self.quality = name, prior, quality  # type: ignore[misc]

    def generate(self, event: Event, ctx: Context) -> Artifact:
        path = ctx.workdir / f"{event.id}.{self.name}.{len(list(ctx.workdir.glob(event.id + '*')))}.txt"
        body = " ".join([event.prompt] * int(event.params.get("repeat", 1)))
        path.write_text(json.dumps({"body": body, "quality": self.quality, "level": event.loudness}))
        return Artifact(path=path, generator=self.name, duration=len(body.split()) * 0.5, sample_rate=1)


class LengthCritic(Critic):
    name = "length"
    event_types = ("speech", "music", "effect")

    def judge(self, event: Event, artifact: Artifact, ctx: Context) -> Score:
        words = len(json.loads(artifact.path.read_text())["body"].split())
        need = event.duration / 0.5
        score = 1.0 if words >= need else words / need
        return Score(critic=self.name, score=score, measured={"words": words},
                     hint={"repeat": int(need // max(1, len(event.prompt.split()))) + 1} if score < 0.7 else {})


class QualityCritic(Critic):
    name = "quality"
    event_types = ("speech", "music", "effect")

    def judge(self, event: Event, artifact: Artifact, ctx: Context) -> Score:
        return Score(critic=self.name, score=json.loads(artifact.path.read_text())["quality"])


class RepeatRewriter(Rewriter):
    event_types = ("speech", "music", "effect")

    def rewrite(self, event: Event, feedback: list[Score], ctx: Context) -> tuple[Event, str] | None:
        hint = next((s.hint for s in feedback if "repeat" in s.hint), None)
        if hint is None:
            return None
        return event.model_copy(update={"params": {**event.params, "repeat": hint["repeat"]}}), "say it again"


class ListPlanner(Planner):
    def __init__(self, plans: list[Plan]) -> None:
        self.plans = plans
        self.feedback: list[list[Issue]] = []

    def plan(self, brief: Any, feedback: list[Issue], ctx: Context) -> Plan:
        self.feedback.append(feedback)
        return self.plans[min(len(self.feedback) - 1, len(self.plans) - 1)]


class Concat(Aggregator):
    name = "concat"

    def assemble(self, plan: Plan, results: dict[str, EventResult], outdir: Path, ctx: Context) -> dict[str, Any]:
        out = outdir / "out.txt"
        out.write_text("\n".join(f"{e.start} {json.loads(results[e.id].best.artifact.path.read_text())['body']}"
                                 for e in plan.events if results[e.id].best))  # type: ignore[union-attr]
        return {"text": out}


class LevelReviewer(Reviewer):
    """Music must sit at -30 or below; says so once, with a hint."""

    name = "level"

    def review(self, plan: Plan, results: dict[str, EventResult], ctx: Context) -> list[Issue]:
        return [Issue(critic=self.name, event_id=e.id, message=f"{e.id} too loud", hint={"loudness_delta": -10})
                for e in plan.events if e.type == "music" and e.loudness > -30]


def make_team(plans: list[Plan], gens: list[Generator], profiles: GeneratorProfiles, reviewer: Reviewer | None = None,
              max_tries: int = 3) -> tuple[Team, ListPlanner]:
    planner = ListPlanner(plans)
    experts = {t: DomainExpert(event_type=t, generators=gens, critics=[LengthCritic(), QualityCritic()],
                               profiles=profiles, rewriter=RepeatRewriter(), max_tries=max_tries)
               for t in ("speech", "music", "effect")}
    return Team(planner=planner, experts=experts, aggregator=Concat(), plan_critics=[TimelineCritic()],
                reviewer=reviewer), planner


def test_trial_and_error_rewrites_then_stops_early(tmp_path: Path) -> None:
    plan = Plan(duration=10, events=[Event(id="s", type="speech", start=0, duration=3, text="hello there")])
    team, _ = make_team([plan], [Writer("good", 0.8, 0.9), Writer("bad", 0.3, 0.2)], GeneratorProfiles())
    result = team.run("brief", tmp_path, Context(workdir=tmp_path))
    attempts = result.results["s"].attempts
    assert [a.generator for a in attempts] == ["good", "good"]  # failed length once, rewritten, passed: stop
    assert not attempts[0].passed(0.7) and attempts[1].passed(0.7)
    assert attempts[1].event.params == {"repeat": 4}
    assert result.regenerated() == ["s"]
    stages = [e.stage for e in result.trace.entries]
    assert stages.count("try") == 2 and "rewrite" in stages and "choose" in stages
    assert (tmp_path / "out.txt").read_text().startswith("0.0 hello there hello there")


def test_failing_candidate_hands_over_and_profiles_learn(tmp_path: Path) -> None:
    profiles = GeneratorProfiles.load(tmp_path / "profiles.json")
    plan = Plan(duration=10, events=[Event(id=f"e{i}", type="effect", start=i, duration=0.5, description="boom")
                                     for i in range(3)])
    team, _ = make_team([plan], [Writer("flashy", 0.9, 0.1), Writer("steady", 0.6, 0.95)], profiles, max_tries=2)
    result = team.run("brief", tmp_path, Context(workdir=tmp_path))
    first = result.results["e0"].attempts
    assert [a.generator for a in first] == ["flashy", "steady"]  # quality fails, no rewrite helps: next candidate
    assert result.results["e0"].best.generator == "steady"  # type: ignore[union-attr]
    # after two failures the profile ranks steady first: later events never try flashy
    assert [a.generator for a in result.results["e2"].attempts] == ["steady"]
    saved = json.loads((tmp_path / "profiles.json").read_text())
    assert saved["stats"]["flashy"]["effect"]["passed"] == 0 and saved["stats"]["steady"]["effect"]["passed"] == 3
    again = GeneratorProfiles.load(tmp_path / "profiles.json")
    assert again.rank({"flashy": 0.9, "steady": 0.6}, "effect")[0][0] == "steady"


def test_reviewer_sends_events_back_with_hints(tmp_path: Path) -> None:
    plan = Plan(duration=10, events=[Event(id="m", type="music", start=0, duration=0.5, description="theme",
                                           loudness=-20)])
    team, _ = make_team([plan], [Writer("w", 0.5, 0.9)], GeneratorProfiles(), reviewer=LevelReviewer())
    result = team.run("brief", tmp_path, Context(workdir=tmp_path))
    assert result.plan.event("m").loudness == -30
    assert [a.round for a in result.results["m"].attempts] == [0, 1]
    assert json.loads(result.results["m"].best.artifact.path.read_text())["level"] == -30  # type: ignore[union-attr]
    assert [len(r) for r in result.reviews] == [1, 0]


def test_locked_impossible_plan_is_rejected_before_generating(tmp_path: Path) -> None:
    plan = Plan(duration=5, events=[Event(id="a", type="speech", start=-1, duration=2, text="x", locked=True),
                                    Event(id="b", type="speech", start=3, duration=4, text="y", locked=True)])
    team, planner = make_team([plan], [Writer("w", 0.5, 0.9)], GeneratorProfiles())
    with pytest.raises(PlanRejected, match=r"plan rejected by the supervisor: a \(speech\) starts at -1 s; "
                                           r"b \(speech\) ends at 7 s, after the brief's end at 5 s"):
        team.run("brief", tmp_path, Context(workdir=tmp_path))
    assert len(planner.feedback) == 1 and not list(tmp_path.glob("*.txt"))


def test_unlocked_bad_plan_goes_back_to_the_planner(tmp_path: Path) -> None:
    bad = Plan(duration=5, events=[Event(id="a", type="speech", start=0, duration=3, text="x"),
                                   Event(id="b", type="speech", start=1, duration=2, text="y")])
    good = Plan(duration=5, events=[Event(id="a", type="speech", start=0, duration=1, text="x")])
    team, planner = make_team([bad, good], [Writer("w", 0.5, 0.9)], GeneratorProfiles())
    result = team.run("brief", tmp_path, Context(workdir=tmp_path))
    assert "overlaps a" in planner.feedback[1][0].message
    assert list(result.results) == ["a"]


def test_registry_rejects_unknown_names_and_suggests_near_ones() -> None:
    reg: Registry[type[Generator]] = Registry("generator")

    @reg.register_named
    class Beeper(Generator):
        name = "beeper"
        event_types = ("effect",)

        def generate(self, event: Event, ctx: Context) -> Artifact:
            raise NotImplementedError

    assert for_type(reg, "effect") == ["beeper"] and for_type(reg, "speech") == []
    assert isinstance(create(reg, "beeper"), Beeper)
    with pytest.raises(SymoeError, match=r"unknown generator 'nope' \(known: beeper\)"):
        create(reg, "nope")
    with pytest.raises(SymoeError, match="did you mean 'beeper'"):
        create(reg, "beepr")
