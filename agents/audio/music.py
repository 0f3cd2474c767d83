"""Music generators: notes rendered through a General MIDI soundfont (pretty-midi + fluidsynth).

``midi-llm`` asks the LLM to write the melody (tempo, instrument, pitch/beats notes) for the
cue's description; ``midi-motif`` builds an arpeggiated chord progression from mood words
without a model. Both loop the material to the event's duration, add a sustained bass/pad
under it, fade out and bring the render (normalised to +-1 by pretty-midi, scaled by 0.89)
to the event's loudness with a peak limit.
"""

from __future__ import annotations

import contextlib
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agents.audio import dsp
from agents.errors import SymoeError
from agents.teams.interfaces import Context, Generator
from agents.teams.records import Artifact, Event
from agents.teams.registry import generators


def _import_pretty_midi() -> Any:
    """Import pretty_midi with pyfluidsynth's import-time notice sent to stderr.

    pyfluidsynth prints "'fluidsynth' was found at ..." to stdout when ``CI`` is set, which
    would corrupt ``symoe compose --json`` output.
    """
    with contextlib.redirect_stdout(sys.stderr):
        with contextlib.suppress(ImportError):
            import fluidsynth  # noqa: F401
        import pretty_midi
    return pretty_midi


SOUNDFONTS = (Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"), Path("/usr/share/sounds/sf2/default-GM.sf2"))
RENDER_SCALE = 0.89
PROGRAMS = {"piano": 0, "celesta": 8, "organ": 19, "guitar": 24, "bass": 32, "strings": 48, "choir": 52,
            "brass": 61, "flute": 73, "pad": 89, "harp": 46, "cello": 42}
DARK_WORDS = ("tense", "dark", "storm", "sad", "minor", "ominous", "mysterious", "danger", "night", "eerie", "grim")
NOTE_RE = re.compile(r"\b([A-Ga-g][#b]?-?\d|[Rr](?:est)?)\s*[/:]\s*(\d+(?:\.\d+)?)")
SYSTEM = "You are a film composer. You answer only in the requested plain-text format."
PROMPT = """Write a short melody for this film music cue: {description}
Reply in exactly this format, nothing else:
tempo: <60-160>
instrument: <piano|strings|pad|organ|guitar|flute|choir|harp|cello>
notes: <pitch>/<beats> <pitch>/<beats> ...
Pitches like C4, D#4, Bb3 between C3 and C6; beats 0.5, 1, 1.5, 2 or 4; R/<beats> is a rest; 8 to 16 notes.
Example:
tempo: 90
instrument: piano
notes: A3/1 C4/1 E4/2 D4/1 C4/1 B3/2 A3/4"""


def soundfont() -> Path:
    for sf2 in SOUNDFONTS:
        if sf2.exists():
            return sf2
    raise SymoeError("no General MIDI soundfont found; apt-get install fluid-soundfont-gm")


@dataclass
class Score:
    """A melody: (midi pitch or None for a rest, beats) pairs, tempo and instrument."""

    notes: list[tuple[int | None, float]]
    tempo: float = 90.0
    instrument: str = "piano"
    chords: list[int] = field(default_factory=list)  # optional bass roots, one per bar


def parse_notes(text: str) -> tuple[Score, list[str]]:
    """Read the LLM's tempo/instrument/notes; out-of-range values are clamped and noted."""
    pretty_midi = _import_pretty_midi()

    notes_fixed: list[str] = []
    m = re.search(r"tempo\s*[:=]\s*(\d+(?:\.\d+)?)", text, re.I)
    tempo = float(m.group(1)) if m else 90.0
    if not 50 <= tempo <= 180:
        notes_fixed.append(f"tempo {tempo:g} clamped")
        tempo = min(180.0, max(50.0, tempo))
    m = re.search(r"instrument\s*[:=]\s*([A-Za-z]+)", text, re.I)
    instrument = m.group(1).lower() if m else "piano"
    if instrument not in PROGRAMS:
        notes_fixed.append(f"unknown instrument {instrument!r} played on piano")
        instrument = "piano"
    notes: list[tuple[int | None, float]] = []
    for name, beats in NOTE_RE.findall(text):
        b = min(8.0, max(0.25, float(beats)))
        if name[0] in "Rr":
            notes.append((None, b))
            continue
        try:
            pitch = pretty_midi.note_name_to_number(name[0].upper() + name[1:])
        except ValueError:
            notes_fixed.append(f"unreadable note {name!r} dropped")
            continue
        while pitch < 48:
            pitch += 12
        while pitch > 84:
            pitch -= 12
        notes.append((pitch, b))
    return Score(notes=notes, tempo=tempo, instrument=instrument), notes_fixed


def render(score: Score, seconds: float, loudness: float) -> np.ndarray:
    """Loop the melody (with a pad on each bar's root) to ``seconds`` and render it."""
    pretty_midi = _import_pretty_midi()

    beat = 60.0 / score.tempo
    pm = pretty_midi.PrettyMIDI(initial_tempo=score.tempo)
    lead = pretty_midi.Instrument(program=PROGRAMS[score.instrument])
    pad = pretty_midi.Instrument(program=PROGRAMS["strings"] if score.instrument != "strings" else PROGRAMS["pad"])
    t, i, bar_root = 0.0, 0, None
    while t < seconds:
        pitch, beats = score.notes[i % len(score.notes)]
        end = min(seconds, t + beats * beat)
        if pitch is not None:
            lead.notes.append(pretty_midi.Note(velocity=92, pitch=pitch, start=t, end=end))
        i += 1
        t = end
    bar = 4 * beat
    for k, start in enumerate(np.arange(0.0, seconds, bar)):
        if score.chords:
            bar_root = score.chords[k % len(score.chords)]
        else:
            here = [n for n in lead.notes if start <= n.start < start + bar]
            bar_root = here[0].pitch if here else bar_root
        if bar_root is None:
            continue
        root = 36 + bar_root % 12
        for p in (root, root + 7, root + 12):
            pad.notes.append(pretty_midi.Note(velocity=55, pitch=p, start=float(start),
                                              end=float(min(seconds, start + bar))))
    pm.instruments.extend([lead, pad])
    audio = pm.fluidsynth(fs=dsp.SAMPLE_RATE, synthesizer=str(soundfont())) * RENDER_SCALE
    n = int(round(seconds * dsp.SAMPLE_RATE))
    audio = np.pad(audio, (0, max(0, n - len(audio))))[:n].astype(np.float32)
    audio = dsp.fade(audio, fade_out=min(0.8, seconds / 4))
    return dsp.gain_to(audio, loudness)


def _artifact(x: np.ndarray, event: Event, ctx: Context, generator: str, **meta: object) -> Artifact:
    k = len(list(ctx.workdir.glob(f"{event.id}.{generator}.*")))
    path = dsp.write_wav(ctx.workdir / f"{event.id}.{generator}.{k}.wav", x)
    return Artifact(path=path, generator=generator, duration=round(len(x) / dsp.SAMPLE_RATE, 3),
                    sample_rate=dsp.SAMPLE_RATE, meta=meta)


@generators.register_named
class LLMMidi(Generator):
    """The LLM writes the notes; the reply is cached per description for retries."""

    name = "midi-llm"
    event_types = ("music",)
    prior = 0.7

    def generate(self, event: Event, ctx: Context) -> Artifact:
        if ctx.llm is None:
            raise SymoeError("midi-llm needs a language model; none is loaded")
        description = event.description or "a calm short theme"
        key = f"midi-llm:{description}"
        if key not in ctx.memo:
            ctx.memo[key] = ctx.llm(PROMPT.format(description=description), SYSTEM, 160)
        reply = ctx.memo[key]
        score, fixed = parse_notes(reply)
        if len([p for p, _ in score.notes if p is not None]) < 3:
            raise SymoeError(f"the LLM wrote no usable notes: {reply.strip()[:120]!r}")
        x = render(score, event.duration, event.loudness)
        return _artifact(x, event, ctx, self.name, tempo=score.tempo, instrument=score.instrument,
                         notes=len(score.notes), repaired=fixed, reply=reply.strip()[:400])


@generators.register_named
class MotifMidi(Generator):
    """An arpeggiated progression from mood words: minor for dark words, tempo from slow/fast."""

    name = "midi-motif"
    event_types = ("music",)
    prior = 0.6

    def generate(self, event: Event, ctx: Context) -> Artifact:
        text = event.description.lower()
        minor = any(w in text for w in DARK_WORDS)
        tempo = 70.0 if any(w in text for w in ("slow", "calm", "gentle", "sad")) else (
            130.0 if any(w in text for w in ("fast", "chase", "action", "upbeat")) else 96.0)
        root = 57 if minor else 60  # A3 minor or C4 major
        prog = [0, 8, 3, 10] if minor else [0, 7, 9, 5]
        notes: list[tuple[int | None, float]] = []
        for step in prog:
            third = 3 if (minor and step == 0) or (not minor and step == 9) else 4
            chord = [root + step, root + step + third, root + step + 7]
            notes += [(chord[0], 0.5), (chord[1], 0.5), (chord[2], 0.5), (chord[1], 0.5)] * 2
        instrument = "strings" if "string" in text else ("pad" if "pad" in text else "piano")
        x = render(Score(notes=notes, tempo=tempo, instrument=instrument, chords=[root + s for s in prog]),
                   event.duration, event.loudness)
        return _artifact(x, event, ctx, self.name, tempo=tempo, minor=minor, instrument=instrument)
