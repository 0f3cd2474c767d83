"""``compose``: the audio task on the team framework. A brief (and optionally a video) becomes
a mixed soundtrack: WAV, timeline JSON, tracks PNG, trace JSON (and the video with the mix).

``build_team`` wires the audio generators, critics, rewriter, reviewer and mixer into a
``Team``; ``compose`` loads the brief, fixes the timeline from the video, lends the team the
LLM it is given (``backend_llm`` makes one of a symoe backend, loaded on first call) and
writes everything under ``outdir``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from agents.audio import music, sfx, tts  # noqa: F401  (registers the generators)
from agents.audio.brief import Brief, load_brief
from agents.audio.critics import ClippingCritic, DurationCritic, LoudnessCritic, SilenceCritic, WERCritic
from agents.audio.mixer import MixAggregator
from agents.audio.plan import AudioPlanner
from agents.audio.review import MixReviewer
from agents.audio.rewrite import AudioRewriter
from agents.audio.video import mux, read_video
from agents.backends import Backend, GenerationRequest
from agents.errors import SymoeError
from agents.files import write_text
from agents.paths import default_home
from agents.teams import Context, DomainExpert, GeneratorProfiles, Team, TeamResult, TimelineCritic, Trace, generators
from agents.teams.interfaces import LLM, Critic
from agents.teams.registry import create, for_type

EVENT_TYPES = ("speech", "music", "effect")


def default_critics(home: Path, event_type: str) -> list[Critic]:
    base: list[Critic] = [DurationCritic(), LoudnessCritic(), ClippingCritic(), SilenceCritic()]
    return ([WERCritic(home)] + base) if event_type == "speech" else base


def build_team(home: Path, profiles: GeneratorProfiles, max_tries: int = 3, max_candidates: int = 2,
               threshold: float = 0.7, max_rounds: int = 2, generator_names: list[str] | None = None) -> Team:
    rewriter = AudioRewriter()
    experts = {}
    for t in EVENT_TYPES:
        names = [n for n in for_type(generators, t) if generator_names is None or n in generator_names]
        if not names:
            raise SymoeError(f"no generator for {t} events (known: {', '.join(generators.names())})")
        experts[t] = DomainExpert(event_type=t, generators=[create(generators, n) for n in names],
                                  critics=default_critics(home, t), profiles=profiles, rewriter=rewriter,
                                  max_candidates=max_candidates, max_tries=max_tries, threshold=threshold)
    return Team(planner=AudioPlanner(), experts=experts, aggregator=MixAggregator(),
                plan_critics=[TimelineCritic(exclusive=("speech",))], reviewer=MixReviewer(home),
                max_rounds=max_rounds)


def apply_video(brief: Brief, video: Path) -> tuple[Brief, list[str]]:
    info = read_video(video)
    notes = []
    if brief.duration is not None and abs(brief.duration - info.duration) > 0.05:
        notes.append(f"the video lasts {info.duration:g} s: the brief's {brief.duration:g} s replaced")
    brief = brief.model_copy(update={"duration": info.duration, "cuts": info.cuts})
    notes.append(f"video {video.name}: {info.duration:g} s, scene cuts at "
                 + (", ".join(f"{c:g} s" for c in info.cuts) or "none"))
    return brief, notes


def backend_llm(get_backend: Callable[[], Backend], seed: int) -> LLM:
    """An ``llm(prompt, system, max_tokens)`` over a symoe backend, loaded on first call."""

    def call(prompt: str, system: str, max_tokens: int) -> str:
        backend = get_backend()
        req = GenerationRequest.user(prompt, system=system, max_tokens=max_tokens, temperature=0.0, seed=seed)
        gen = backend.generate([req])[0]
        if not gen.ok:
            raise SymoeError(f"the LLM {backend.spec.name} failed: {gen.error}")
        return gen.text

    return call


def traced(llm: LLM, trace: Trace) -> LLM:
    """The LLM with every call (prompt start, seconds, failure) written to the run's trace."""

    def call(prompt: str, system: str, max_tokens: int) -> str:
        began = time.perf_counter()
        try:
            text = llm(prompt, system, max_tokens)
        except SymoeError as exc:
            trace.add("llm", "planner", f"failed after {time.perf_counter() - began:.1f} s", prompt=prompt[:300],
                      error=str(exc))
            raise
        trace.add("llm", "planner", f"{len(text)} characters in {time.perf_counter() - began:.1f} s",
                  prompt=prompt[:300])
        return text

    return call


def compose(brief_arg: str, outdir: Path, *, llm: LLM, home: Path | None = None, video: Path | None = None,
            seed: int = 0, max_tries: int = 3, profiles: Path | None = None) -> TeamResult:
    """Run the audio team on a brief with ``llm`` as its planner and rewriter; models and
    generator profiles live under ``home`` (default ``$SYMOE_HOME``); profiles persist in
    ``profiles`` (default ``<home>/teams/audio-profiles.json``)."""
    home = home or default_home()
    began = time.perf_counter()
    brief = load_brief(brief_arg)
    notes: list[str] = []
    if video is not None:
        brief, notes = apply_video(brief, Path(video))
    stems = outdir / "stems"
    stems.mkdir(parents=True, exist_ok=True)
    for old in stems.glob("*.wav"):
        old.unlink()
    ctx = Context(workdir=stems, seed=seed)
    for n in notes:
        ctx.trace.add("input", "video", n)
    ctx.llm = traced(llm, ctx.trace)
    learned = GeneratorProfiles.load(profiles or home / "teams" / "audio-profiles.json")
    team = build_team(home, learned, max_tries=max_tries)
    result = team.run(brief, outdir, ctx)
    if video is not None:
        result.outputs["video"] = mux(Path(video), result.outputs["wav"], outdir / f"{Path(video).stem}.scored.mp4")
    result.seconds = round(time.perf_counter() - began, 2)
    write_text(outdir / "trace.json", result.trace.model_dump_json(indent=2))
    write_text(outdir / "result.json", json.dumps(summary(result), indent=2))
    return result


def summary(result: TeamResult) -> dict[str, object]:
    """The headline figures of a run (what the CLI prints and ``result.json`` holds)."""
    events = []
    for e in result.plan.events:
        r = result.results.get(e.id)
        best = r.best if r else None
        events.append({"id": e.id, "type": e.type, "start": e.start, "end": round(e.end, 3),
                       "generator": best.generator if best else None, "tries": len(r.attempts) if r else 0,
                       "scores": {s.critic: s.score for s in best.scores} if best else {},
                       "wer": next((s.measured.get("wer") for s in best.scores if s.critic == "wer"), None)
                       if best else None})
    return {"seconds": result.seconds, "outputs": {k: str(v) for k, v in result.outputs.items()},
            "regenerated": result.regenerated(), "plan_repairs": result.plan.repairs,
            "review_issues": [[i.message for i in round_] for round_ in result.reviews], "events": events}
