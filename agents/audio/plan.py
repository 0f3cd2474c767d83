"""The audio planner: storyboard events pass through with their times locked; scenes without
events and text briefs go to the LLM, which answers with JSON timed events that are
validated, repaired and clamped into their window (every repair is noted in the plan).
"""

from __future__ import annotations

import json
from typing import Any

from agents.audio.brief import Brief
from agents.errors import SymoeError
from agents.teams.interfaces import Context, Planner
from agents.teams.planner import EventSchema, LLMPlanner, clamp_events, coerce_events
from agents.teams.records import Event, Issue, Plan

SCHEMA = EventSchema(
    types=("speech", "music", "effect"),
    aliases={"sfx": "effect", "sound": "effect", "sound_effect": "effect", "soundeffect": "effect", "fx": "effect",
             "foley": "effect", "ambience": "effect", "ambient": "effect", "noise": "effect",
             "voice": "speech", "dialogue": "speech", "dialog": "speech", "narration": "speech",
             "narrator": "speech", "line": "speech", "tts": "speech", "voiceover": "speech", "voice_over": "speech",
             "song": "music", "score": "music", "melody": "music", "soundtrack": "music", "bgm": "music"},
    default_duration={"music": 8.0, "effect": 2.0},
    default_loudness={"speech": -18.0, "music": -28.0, "effect": -24.0},
    exclusive=("speech",),
)

SYSTEM = """You plan the soundtrack of a short film scene. Reply with a JSON list of audio events and nothing else,
one compact object per line.
Each event is an object with:
  "type": "speech", "music" or "effect"
  "start": seconds from the start of the film
  "duration": seconds
  "text": the exact words spoken (speech only, at most 10 words)
  "description": what it sounds like (music and effects)
  "loudness": target loudness in LUFS (speech -18, music -28, effects -30 to -20)"""

# deliberately another story: small models copy examples that fit too well
EXAMPLE = "[\n" + ",\n".join(json.dumps(e) for e in [
    {"type": "music", "start": 0, "duration": 9, "description": "slow jazz saxophone", "loudness": -28},
    {"type": "effect", "start": 0.5, "duration": 2, "description": "train horn in the distance", "loudness": -26},
    {"type": "speech", "start": 3, "duration": 3, "text": "Last train to the city, all aboard.", "loudness": -18},
]) + "\n]"


def _prompt(brief_text: str, window: tuple[float, float], cuts: list[float], feedback: list[Issue],
            locked: list[Event]) -> str:
    lo, hi = window
    lines = [f"Brief: {brief_text}",
             f"The events must lie between {lo:g} s and {hi:g} s.",
             "Plan one music cue, one to three sound effects and one or two short speech lines "
             "(about 2.5 words per second). Speech lines must not overlap."]
    if cuts:
        lines.append("Scene cuts at " + ", ".join(f"{c:g} s" for c in cuts) + ": start an effect at a cut.")
    if locked:
        lines.append("Already planned (keep speech clear of these): " + "; ".join(
            f"{e.type} {e.start:g}-{e.end:g} s" for e in locked))
    if feedback:
        lines.append("Your previous plan had these problems, fix them: " + "; ".join(i.message for i in feedback))
    lines.append(f"The format, shown for a different brief (a train station at night): {EXAMPLE}")
    lines.append("Use only sounds and words that belong to the brief above, not to the format example.")
    return "\n".join(lines)


def explicit_event(raw: dict[str, Any], eid: str, scene_start: float, scene_no: int | None,
                   repairs: list[str]) -> Event:
    """A storyboard event as written: times kept exactly (the supervisor judges them)."""
    type_ = SCHEMA.canonical(raw.get("type"))
    if type_ is None:
        raise SymoeError(f"storyboard event {eid}: unknown type {raw.get('type')!r} (speech, music or effect)")
    text = str(raw.get("text") or "").strip()
    desc = str(raw.get("description") or "").strip()
    if type_ == "speech" and not text:
        raise SymoeError(f"storyboard event {eid}: a speech event needs `text`")
    if type_ != "speech" and not desc:
        desc = text
        if not desc:
            raise SymoeError(f"storyboard event {eid}: a {type_} event needs a `description`")
    locked = True
    try:
        start = float(raw["start"]) if raw.get("start") is not None else None
        end = float(raw["end"]) if raw.get("end") is not None else None
        duration = float(raw["duration"]) if raw.get("duration") is not None else None
        loudness = float(raw.get("loudness", SCHEMA.default_loudness[type_]))
    except (TypeError, ValueError):
        raise SymoeError(f"storyboard event {eid}: start, end, duration and loudness must be numbers") from None
    if start is None:
        start, locked = scene_start, False
        repairs.append(f"{eid}: no start in the storyboard, set to the scene start {start:g} s")
    if duration is None and end is not None:
        duration = end - start
    if duration is None:
        duration, locked = SCHEMA.duration_for(type_, text), False
        repairs.append(f"{eid}: no duration in the storyboard, set to {duration:g} s")
    return Event(id=eid, type=type_, start=start, duration=duration, text=text if type_ == "speech" else "",
                 description=desc, loudness=loudness, locked=locked, scene=scene_no,
                 params={k: v for k, v in (raw.get("params") or {}).items()})


class AudioPlanner(Planner):
    def plan(self, brief: Brief, feedback: list[Issue], ctx: Context) -> Plan:
        repairs: list[str] = []
        total = brief.total
        events: list[Event] = []
        for n, raw in enumerate(brief.events):
            events.append(explicit_event(raw, f"e{n + 1}-{raw.get('type', 'event')}", 0.0, None, repairs))
        llm_windows: list[tuple[int | None, tuple[float, float], str]] = []
        cursor = 0.0
        for k, scene in enumerate(brief.scenes, 1):
            start = scene.start if scene.start is not None else cursor
            dur = scene.duration if scene.duration is not None else max(0.0, total - start)
            cursor = start + dur
            for n, raw in enumerate(scene.events):
                events.append(explicit_event(raw, f"s{k}.{n + 1}-{raw.get('type', 'event')}", start, k, repairs))
            if not scene.events and scene.description.strip():
                window = (max(0.0, start), min(total, start + dur))
                llm_windows.append((k, window, f"{brief.text}\nThis scene: {scene.description}".strip()))
        if not brief.scenes and not brief.events:
            llm_windows.append((None, (0.0, total), brief.text))
        source = "storyboard"
        if llm_windows:
            if ctx.llm is None:
                raise SymoeError("this brief needs the planner LLM, and none is available")
            planner = LLMPlanner(llm=ctx.llm, schema=SCHEMA, system=SYSTEM)
            llm_events: list[Event] = []
            for scene_no, window, text in llm_windows:
                prefix = f"s{scene_no}." if scene_no is not None else "p"
                fb = [i for i in feedback if i.event_id and i.event_id.startswith(prefix)] or feedback
                prompt = _prompt(text, window, brief.cuts, fb, [e for e in events if e.type == "speech"])
                got, reply = planner.events(prompt, window, prefix, repairs)
                ctx.trace.add("plan", "planner", f"LLM plan for {window[0]:g}-{window[1]:g} s: {len(got)} events",
                              reply=reply[:2000])
                for e in got:
                    e.scene = scene_no
                llm_events.extend(got)
            if feedback:
                repairs.append(f"replanned with the plan critic's {len(feedback)} issues as feedback")
            # keep LLM speech clear of the storyboard's locked lines
            events = clamp_events(events + llm_events, SCHEMA, (0.0, total), repairs)
            source = "llm" if not brief.scenes and not brief.events else "mixed"
        if not events:
            raise SymoeError("the plan has no events: the brief gave none and the LLM planned none "
                             "(try a more concrete brief)")
        if brief.duration is None and events:  # no length was asked for: end a second after the last sound
            end = round(min(total, max(e.end for e in events) + 1.0), 3)
            if end < total:
                repairs.append(f"the brief sets no duration: the soundtrack ends at {end:g} s, after its last event")
                total = end
        return Plan(title=brief.title, duration=total, events=events, cuts=brief.cuts, repairs=repairs,
                    source=source)


__all__ = ["SCHEMA", "AudioPlanner", "coerce_events"]
