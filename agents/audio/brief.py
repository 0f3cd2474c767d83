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
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError

from agents.errors import SymoeError

DEFAULT_DURATION = 15.0
STORYBOARD_SUFFIXES = (".yaml", ".yml", ".json")


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
        return self.duration if self.duration is not None else DEFAULT_DURATION


def _storyboard(data: Any, where: str) -> Brief:
    if not isinstance(data, dict):
        raise SymoeError(f"{where}: a storyboard is a mapping with `scenes` and/or `events`")
    fields = {k: v for k, v in data.items() if k in ("title", "duration", "scenes", "events")}
    fields["text"] = str(data.get("brief") or data.get("text") or data.get("description") or "")
    unknown = sorted(set(data) - {"title", "duration", "scenes", "events", "brief", "text", "description"})
    if unknown:
        raise SymoeError(f"{where}: unknown storyboard keys {', '.join(unknown)} "
                         "(known: title, duration, brief, scenes, events)")
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
