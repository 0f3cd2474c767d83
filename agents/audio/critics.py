"""Audio critics: measurable checks of one generated sound, each a score in [0, 1].

- ``wer``: transcribe speech with the offline Whisper; score = 1 - 2 x WER (WER 0.15 -> 0.7).
- ``duration``: speech must fit its slot (10 % over scores 0.7); music/effects must fill it.
- ``loudness``: integrated LUFS within 2 LU of the target scores 1, 0.7 at about 3.8 LU off.
- ``clipping``: share of samples at full scale; 0.3 % clipped scores 0.7.
- ``silence``: dead air: the longest silent stretch (1 s or 40 % of the slot is fine).
Hints tell the rewriter what to change (rate, limiter, gain).
"""

from __future__ import annotations

from pathlib import Path

from agents.audio import dsp
from agents.audio.whisper import transcribe, wer
from agents.paths import default_home
from agents.teams.interfaces import Context, Critic
from agents.teams.records import Artifact, Event, Score
from agents.teams.registry import critics


@critics.register_named
class WERCritic(Critic):
    name = "wer"
    event_types = ("speech",)

    def __init__(self, home: Path | None = None) -> None:
        self.home = home or default_home()

    def judge(self, event: Event, artifact: Artifact, ctx: Context) -> Score:
        x = dsp.read_wav(artifact.path, 16000)
        heard = transcribe(x, self.home, 16000)
        rate = wer(event.text, heard)
        return Score(critic=self.name, score=1 - 2 * rate, measured={"wer": round(rate, 4), "heard": heard},
                     suggestion=None if rate <= 0.15 else f"heard {heard!r} for {event.text!r}: speak more clearly",
                     hint={"clearer": True} if rate > 0.15 else {})


@critics.register_named
class DurationCritic(Critic):
    name = "duration"
    event_types = ("speech", "music", "effect")

    def judge(self, event: Event, artifact: Artifact, ctx: Context) -> Score:
        ratio = artifact.duration / event.duration if event.duration > 0 else 99.0
        if event.type == "speech":
            score = 1.0 - 3.0 * (ratio - 1.0) if ratio > 1.0 else (1.0 if ratio >= 0.4 else 0.4 + 1.5 * ratio)
        else:
            score = 1.0 - 3.0 * abs(ratio - 1.0)
        measured = {"seconds": artifact.duration, "slot": event.duration, "ratio": round(ratio, 3)}
        if ratio > 1.0 and score < 0.7:
            return Score(critic=self.name, score=score, measured=measured, hint={"speed": round(ratio, 3)},
                         suggestion=f"{artifact.duration:.2f} s does not fit the {event.duration:.2f} s slot")
        return Score(critic=self.name, score=score, measured=measured)


@critics.register_named
class LoudnessCritic(Critic):
    name = "loudness"
    event_types = ("speech", "music", "effect")

    def judge(self, event: Event, artifact: Artifact, ctx: Context) -> Score:
        level = dsp.lufs(dsp.read_wav(artifact.path))
        off = level - event.loudness
        score = 1.0 if abs(off) <= 2 else 1.0 - (abs(off) - 2) / 6
        return Score(critic=self.name, score=score, measured={"lufs": round(level, 2), "target": event.loudness},
                     hint={"gain_db": round(-off, 2)} if score < 0.7 else {},
                     suggestion=f"{level:.1f} LUFS, target {event.loudness:.1f}" if score < 0.7 else None)


@critics.register_named
class ClippingCritic(Critic):
    name = "clipping"
    event_types = ("speech", "music", "effect")

    def judge(self, event: Event, artifact: Artifact, ctx: Context) -> Score:
        x = dsp.read_wav(artifact.path)
        frac = dsp.clipped_fraction(x)
        peak = float(abs(x).max()) if len(x) else 0.0
        score = 1.0 - 100 * frac
        return Score(critic=self.name, score=score, measured={"clipped": round(frac, 6), "peak": round(peak, 4)},
                     hint={"limiter": True} if score < 0.7 else {},
                     suggestion=f"{100 * frac:.2f} % of samples clipped" if score < 0.7 else None)


@critics.register_named
class SilenceCritic(Critic):
    """Dead air: the longest silent stretch may be 1 s or 40 % of the slot, whichever is longer
    (so sparse sounds such as footsteps pass); speech may not start after 0.3 s of silence."""

    name = "silence"
    event_types = ("speech", "music", "effect")

    def judge(self, event: Event, artifact: Artifact, ctx: Context) -> Score:
        x = dsp.read_wav(artifact.path)
        frac = dsp.silent_fraction(x)
        gap = dsp.longest_silence(x)
        lead, tail = dsp.edge_silence(x)
        allowed = max(1.0, 0.4 * event.duration)
        score = 1.0 if gap <= allowed else 1.0 - (gap - allowed) / allowed
        if event.type == "speech" and lead > 0.3:
            score = min(score, 1.0 - (lead - 0.3))
        measured = {"silent": round(frac, 3), "longest_gap": round(gap, 3), "lead": round(lead, 3),
                    "tail": round(tail, 3)}
        if score >= 0.7:
            return Score(critic=self.name, score=score, measured=measured)
        hint: dict[str, object] = {"variant": True}
        if frac > 0.95:
            hint["gain_db"] = 6.0
        return Score(critic=self.name, score=score, measured=measured, hint=hint,
                     suggestion=f"{gap:.2f} s of silence in a {event.duration:.2f} s slot")
