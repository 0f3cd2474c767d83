"""Briefs: a plain-text description, or a storyboard (YAML/JSON) of timed scenes and events.

Storyboard::

    title: Storm at the lighthouse
    duration: 12                 # seconds (a --video's duration wins)
    scenes:
      - start: 0
        duration: 6
        description: rain on the lantern room windows   # planned by the LLM when no events
        events:                  # explicit events bypass the LLM (their times are locked)
          - {type: speech, start: 1.0, duration: 2.8, text: "Light the lamp, the ships are close."}
          - {type: effect, start: 0, duration: 6, description: steady rain, loudness: -30}
    events: []                   # top-level explicit events, same fields

Event fields: type (speech, music, effect), start, duration (or end), text (speech),
description (music, effects), loudness (target LUFS).

Bounds, checked when the brief is read, before anything is planned or allocated (a brief
over them is refused in one line): a soundtrack lasts at most ``MAX_TOTAL_S`` (30 minutes),
a storyboard has at most ``MAX_SCENES`` scenes and ``MAX_EVENTS`` explicit events, a scene
starts at 0 s or later, lasts more than 0 s and ends by ``MAX_TOTAL_S``, and every time is a
finite number within ``MAX_TOTAL_S`` (an event's placement inside the brief is the plan
critic's to judge).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError

from agents.errors import SymoeError

DEFAULT_DURATION = 15.0
STORYBOARD_SUFFIXES = (".yaml", ".yml", ".json")
#: The longest soundtrack ``compose`` makes, in seconds (30 minutes): the mix of one is
#: ~320 MB of float32 samples at 44.1 kHz.
MAX_TOTAL_S = 30 * 60.0
#: The most scenes a storyboard may have (each without events is one planner LLM call).
MAX_SCENES = 100
#: The most explicit events a storyboard may have, top-level and in scenes together.
MAX_EVENTS = 400
#: The largest brief file read.
MAX_BRIEF_BYTES = 1 << 20


class Scene(BaseModel):
    start: float | None = None
    duration: float | None = None
    description: str = ""
    events: list[dict[str, Any]] = Field(default_factory=list)


class Brief(BaseModel):
    title: str = ""
    text: str = Field("", description="free text for the planner (a text brief, or the storyboard's notes)")
    duration: float | None = None
    scenes: list[Scene] = Field(default_factory=list)
    events: list[dict[str, Any]] = Field(default_factory=list)
    cuts: list[float] = Field(default_factory=list)
    source: str = "text"

    @property
    def total(self) -> float:
        """The soundtrack's length; over ``MAX_TOTAL_S`` (a long video's) is refused here, before planning."""
        total = self.duration if self.duration is not None else DEFAULT_DURATION
        if not math.isfinite(total) or total > MAX_TOTAL_S:
            raise SymoeError(f"the soundtrack would last {total:g} s; at most {MAX_TOTAL_S:g} s "
                             f"({MAX_TOTAL_S / 60:g} minutes) is supported")
        return total


def _seconds(value: object) -> float | None:
    """An event's time as a float, or None when it is missing or not a number (the planner says so)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def out_of_bounds(brief: Brief) -> list[str]:
    """What in ``brief`` is over the bounds of this module (``MAX_TOTAL_S``, ``MAX_SCENES``,
    ``MAX_EVENTS``), one phrase each; empty when it is within them."""
    limit = f"{MAX_TOTAL_S:g} s ({MAX_TOTAL_S / 60:g} minutes)"
    problems = []
    if len(brief.scenes) > MAX_SCENES:
        problems.append(f"{len(brief.scenes)} scenes; at most {MAX_SCENES}")
    events = len(brief.events) + sum(len(s.events) for s in brief.scenes)
    if events > MAX_EVENTS:
        problems.append(f"{events} events; at most {MAX_EVENTS}")
    if brief.duration is not None and not (0 < brief.duration <= MAX_TOTAL_S):
        problems.append(f"duration {brief.duration:g} s: it must be more than 0 s and at most {limit}")
    for k, scene in enumerate(brief.scenes[:MAX_SCENES], 1):
        start, dur = scene.start, scene.duration
        if start is not None and not (0 <= start <= MAX_TOTAL_S):
            problems.append(f"scene {k} starts at {start:g} s: a scene starts from 0 s to {limit}")
        if dur is not None and not (0 < dur <= MAX_TOTAL_S):
            problems.append(f"scene {k} lasts {dur:g} s: a scene lasts more than 0 s and at most {limit}")
        elif start is not None and dur is not None and start + dur > MAX_TOTAL_S:
            problems.append(f"scene {k} ends at {start + dur:g} s, after {limit}")
    raw = [("", e) for e in brief.events] + [(f"scene {k} ", e) for k, s in enumerate(brief.scenes[:MAX_SCENES], 1)
                                            for e in s.events]
    for where, event in raw[:MAX_EVENTS]:
        for key in ("start", "end", "duration"):
            value = _seconds(event.get(key))
            if value is not None and not (math.isfinite(value) and abs(value) <= MAX_TOTAL_S):
                problems.append(f"{where}event {key} {value:g} s: event times are finite and within {limit}")
    return problems


def _storyboard(data: Any, where: str) -> Brief:
    if not isinstance(data, dict):
        raise SymoeError(f"{where}: a storyboard is a mapping with `scenes` and/or `events`")
    fields = {k: v for k, v in data.items() if k in ("title", "duration", "scenes", "events")}
    fields["text"] = str(data.get("brief") or data.get("text") or data.get("description") or "")
    unknown = sorted(set(data) - {"title", "duration", "scenes", "events", "brief", "text", "description"})
    if unknown:
        raise SymoeError(f"{where}: unknown storyboard keys {', '.join(unknown)} "
                         "(known: title, duration, brief, scenes, events)")
    # counted before validation: YAML aliases can make a small file hold a huge storyboard
    scenes: list[Any] = data["scenes"] if isinstance(data.get("scenes"), list) else []
    events = len(data["events"]) if isinstance(data.get("events"), list) else 0
    for scene in scenes[:MAX_SCENES + 1]:
        if isinstance(scene, dict) and isinstance(scene.get("events"), list):
            events += len(scene["events"])
    if len(scenes) > MAX_SCENES or events > MAX_EVENTS:
        raise SymoeError(f"{where}: the storyboard is over symoe's bounds: {len(scenes)} scenes (at most "
                         f"{MAX_SCENES}), {events} events (at most {MAX_EVENTS})")
    try:
        brief = Brief(source="storyboard", **fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise SymoeError(f"{where}: storyboard field {loc}: {first['msg']}") from None
    if not brief.scenes and not brief.events and not brief.text.strip():
        raise SymoeError(f"{where}: the storyboard has no scenes, events or brief text")
    for scene in brief.scenes:
        for e in scene.events:
            if not isinstance(e, dict):
                raise SymoeError(f"{where}: every event must be a mapping of fields, got {e!r}")
    problems = out_of_bounds(brief)
    if problems:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise SymoeError(f"{where}: the storyboard is over symoe's bounds: {shown}")
    if brief.duration is None:
        ends = [float(s.start or 0) + float(s.duration or 0) for s in brief.scenes]
        if ends and max(ends) > 0:
            brief.duration = max(ends)
    return brief


def load_brief(arg: str) -> Brief:
    """A brief from a file path (text, YAML or JSON) or from the argument's own text."""
    if not arg or not arg.strip():
        raise SymoeError("the brief is empty: give a text brief or a storyboard file (see examples/)")
    path = Path(arg).expanduser()
    looks_like_file = path.suffix.lower() in (*STORYBOARD_SUFFIXES, ".txt", ".md") and "\n" not in arg
    if looks_like_file and not path.exists():
        raise SymoeError(f"no brief file at {path}")
    if not path.is_file():
        return Brief(text=arg.strip(), source="text")
    try:
        size = path.stat().st_size
        if size > MAX_BRIEF_BYTES:
            raise SymoeError(f"the brief {path} is {size} bytes; at most {MAX_BRIEF_BYTES} are read")
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise SymoeError(f"cannot read the brief {path}: {exc}") from None
    if not text.strip():
        raise SymoeError(f"the brief {path} is empty")
    if path.suffix.lower() in STORYBOARD_SUFFIXES:
        try:
            data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f" at line {mark.line + 1}" if mark is not None else ""
            raise SymoeError(f"the storyboard {path} is not valid {path.suffix[1:].upper()}{line}") from None
        return _storyboard(data, str(path))
    return Brief(text=text.strip(), title=path.stem.replace("_", " "), source="text")
