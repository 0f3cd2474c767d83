"""Planning helpers: pull a JSON plan out of an LLM reply, coerce it into ``Event`` records and
repair what is malformed (missing fields, synonyms, negative or overlong times), saying what
was repaired. ``LLMPlanner`` asks a language model for the events of one time window.

The domain (which event types exist, their synonyms and default durations) is data given by
the task; nothing here knows about audio.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from agents.teams.interfaces import LLM
from agents.teams.records import Event

MIN_DURATION = 0.3
_FENCE = re.compile(r"```(?:json|yaml)?\s*(.*?)```", re.S)
_TRAILING_COMMA = re.compile(r",\s*([\]}])")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def _balanced(text: str, start: int) -> str | None:
    """The bracketed span starting at ``text[start]`` ('[' or '{'), or the unclosed rest."""
    pairs = {"[": "]", "{": "}"}
    stack: list[str] = []
    in_str = False
    esc = False
    for i in range(start, len(text)):
        ch = text[i]
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
            continue
        if ch == '"':
            in_str = True
        elif ch in pairs:
            stack.append(pairs[ch])
        elif stack and ch == stack[-1]:
            stack.pop()
            if not stack:
                return text[start:i + 1]
    return text[start:] + "".join(reversed(stack)) if stack else None


def _loads(text: str) -> Any:
    for candidate in (text, _TRAILING_COMMA.sub(r"\1", text)):
        try:
            return json.loads(candidate)
        except ValueError:
            pass
    try:  # single quotes, bare words, Python literals: YAML's flow syntax reads most of them
        return yaml.safe_load(_TRAILING_COMMA.sub(r"\1", text).replace("None", "null"))
    except yaml.YAMLError:
        return None


def extract_json(text: str) -> tuple[Any, list[str]]:
    """The first JSON list or object in ``text`` (fenced or not) and notes on how it was found.

    Truncated replies are closed; trailing commas and single quotes are tolerated.
    Returns ``(None, notes)`` when there is none.
    """
    notes: list[str] = []
    bodies = _FENCE.findall(text) + [text]
    for body in bodies:
        starts = [i for i in (body.find("["), body.find("{")) if i >= 0]
        if not starts:
            continue
        for start in sorted(starts):
            span = _balanced(body, start)
            if span is None:
                continue
            data = _loads(span)
            if isinstance(data, (list, dict)):
                if body is not text or text.strip() != span.strip():
                    notes.append("took the JSON out of surrounding prose or a code fence")
                if not span.endswith(("]", "}")) or (span not in body):
                    notes.append("closed a truncated JSON reply")
                return data, notes
    return None, notes


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        m = _NUMBER.search(value)
        if m:
            return float(m.group())
    return None


def _first(item: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for k in keys:
        if k in item and item[k] not in (None, ""):
            return item[k]
    return None


@dataclass
class EventSchema:
    """The task's vocabulary: event types, their synonyms, default duration and loudness."""

    types: tuple[str, ...]
    aliases: dict[str, str] = field(default_factory=dict)
    default_duration: dict[str, float] = field(default_factory=dict)
    default_loudness: dict[str, float] = field(default_factory=dict)
    exclusive: tuple[str, ...] = ()  # types that may not overlap each other (one voice)
    words_per_second: float = 2.6

    def canonical(self, name: Any) -> str | None:
        key = str(name or "").strip().lower().replace("-", "_").replace(" ", "_")
        if key in self.types:
            return key
        return self.aliases.get(key)

    def duration_for(self, type_: str, text: str) -> float:
        if type_ in self.exclusive and text:
            return round(len(text.split()) / self.words_per_second + 0.6, 2)
        return self.default_duration.get(type_, 3.0)


def coerce_events(data: Any, schema: EventSchema, window: tuple[float, float], prefix: str,
                  repairs: list[str]) -> list[Event]:
    """Events from LLM data (a list, or an object holding one), repaired into ``window``."""
    if isinstance(data, dict):
        inner = _first(data, ("events", "segments", "timeline", "audio", "plan"))
        data = inner if isinstance(inner, list) else [data]
    if not isinstance(data, list):
        repairs.append("the plan was not a list of events: ignored it")
        return []
    lo, hi = window
    events: list[Event] = []
    for n, item in enumerate(data):
        label = f"item {n + 1}"
        if not isinstance(item, dict):
            repairs.append(f"{label}: not an object, dropped")
            continue
        raw_type = _first(item, ("type", "kind", "category", "track"))
        type_ = schema.canonical(raw_type)
        if type_ is None:
            repairs.append(f"{label}: unknown type {raw_type!r}, dropped")
            continue
        if raw_type != type_:
            repairs.append(f"{label}: type {raw_type!r} read as {type_!r}")
        text = str(_first(item, ("text", "line", "script", "speech", "lyrics", "words")) or "").strip()
        desc = str(_first(item, ("description", "prompt", "sound", "object", "desc", "mood")) or "").strip()
        if type_ in schema.exclusive and not text:
            if desc:
                text, desc = desc, ""
                repairs.append(f"{label}: {type_} had no text; used its description as the line")
            else:
                repairs.append(f"{label}: {type_} without text, dropped")
                continue
        if not text and not desc:
            repairs.append(f"{label}: no description, dropped")
            continue
        start = _number(_first(item, ("start", "start_time", "begin", "time", "at")))
        end = _number(_first(item, ("end", "end_time", "stop")))
        duration = _number(_first(item, ("duration", "length", "dur")))
        if start is None:
            start = lo
            repairs.append(f"{label}: no start, set to {start:g} s")
        elif lo > 0 and 0 <= start < lo and start + lo < hi:
            repairs.append(f"{label}: start {start:g} s read as relative to the scene at {lo:g} s")
            start += lo
            if end is not None:
                end += lo
        if duration is None and end is not None:
            duration = end - start
        if duration is None or duration <= 0:
            fixed = schema.duration_for(type_, text)
            repairs.append(f"{label}: duration {duration!r} replaced by {fixed:g} s")
            duration = fixed
        loud = _number(_first(item, ("loudness", "volume", "volume_db", "lufs", "level", "gain")))
        default_loud = schema.default_loudness.get(type_, -20.0)
        if loud is None:
            loud = default_loud
        elif not -40.0 <= loud <= -8.0:
            repairs.append(f"{label}: loudness {loud:g} out of [-40, -8] LUFS, set to {default_loud:g}")
            loud = default_loud
        events.append(Event(id=f"{prefix}{len(events) + 1}-{type_}", type=type_, start=round(start, 3),
                            duration=round(duration, 3), text=text if type_ in schema.exclusive else "",
                            description=desc if type_ in schema.exclusive else (desc or text), loudness=loud))
    return clamp_events(events, schema, window, repairs)


def clamp_events(events: list[Event], schema: EventSchema, window: tuple[float, float],
                 repairs: list[str]) -> list[Event]:
    """Move unlocked events into ``window``, trim overruns, and push overlapping exclusive
    events (e.g. two speech lines) apart; events that cannot fit are dropped. Notes each fix."""
    lo, hi = window
    kept: list[Event] = []
    for e in sorted(events, key=lambda e: (e.start, e.id)):
        if e.locked:
            kept.append(e)
            continue
        if e.start < lo:
            repairs.append(f"{e.id}: start {e.start:g} s before {lo:g} s, moved to {lo:g} s")
            e.start = lo
        if e.type in schema.exclusive:
            prev = [k for k in kept if k.type in schema.exclusive and k.end > e.start + 1e-6]
            if prev:
                new_start = round(max(k.end for k in prev) + 0.1, 3)
                repairs.append(f"{e.id}: overlapped {prev[-1].id}, moved from {e.start:g} s to {new_start:g} s")
                e.start = new_start
        if e.start > hi - MIN_DURATION:
            repairs.append(f"{e.id}: starts at {e.start:g} s, after the end ({hi:g} s), dropped")
            continue
        if e.end > hi + 1e-6:
            new = round(hi - e.start, 3)
            repairs.append(f"{e.id}: ran to {e.end:g} s past the end ({hi:g} s), duration {e.duration:g} -> {new:g} s")
            e.duration = new
        kept.append(e)
    return kept


@dataclass
class LLMPlanner:
    """Asks the LLM for the events of a window; one retry when the reply holds no JSON."""

    llm: LLM
    schema: EventSchema
    system: str
    max_tokens: int = 360

    def events(self, prompt: str, window: tuple[float, float], prefix: str,
               repairs: list[str]) -> tuple[list[Event], str]:
        reply = self.llm(prompt, self.system, self.max_tokens)
        data, notes = extract_json(reply)
        if data is None:
            repairs.append(f"{prefix}: the LLM reply held no JSON plan; asked again")
            reply = self.llm(prompt + "\n\nAnswer with the JSON list only, no prose.", self.system,
                             self.max_tokens)
            data, notes = extract_json(reply)
        repairs.extend(f"{prefix}: {n}" for n in notes)
        if data is None:
            repairs.append(f"{prefix}: the LLM gave no usable plan twice; this window has no events from it")
            return [], reply
        return coerce_events(data, self.schema, window, prefix, repairs), reply
