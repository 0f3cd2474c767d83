"""The aggregator: places each event's chosen audio at its planned sample offset, sums the
tracks into one WAV, and writes the timeline JSON and a PNG of the tracks.

Placement is exact: an event starting at ``start`` seconds begins at sample
``round(start * 44100)``; audio past the event's slot (or the end) is cut. Each track holds
only its event's clip (``Track``), so the memory of a mix is one full-length array plus the
clips, not one full-length array per event. When the sum
would clip, the whole mix is scaled down by one gain (recorded), never limited per sample,
so offsets and relative levels stay exact.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from agents.audio import dsp
from agents.teams.interfaces import Aggregator, Context
from agents.teams.records import EventResult, Plan

HEADROOM = 0.98


def offset(seconds: float, sr: int = dsp.SAMPLE_RATE) -> int:
    return int(round(seconds * sr))


#: How much of the mix around a speech line is transcribed to check it is understood: a clip
#: cut exactly at the first phoneme makes Whisper mishear the first word ("Light the lamp" ->
#: "like the lamp" in 2 of 4 storm runs, heard right with 0.3 s of the mix before it).
PRE_ROLL_S = 0.3
TAIL_S = 0.2


def speech_window(start: float, seconds: float, total_samples: int, sr: int = dsp.SAMPLE_RATE) -> slice:
    """The samples of the mix to transcribe for a line placed at ``start`` lasting ``seconds``."""
    return slice(max(0, offset(start - PRE_ROLL_S, sr)), min(total_samples, offset(start + seconds + TAIL_S, sr)))


class Track:
    """One event's audio on the full timeline, held as its placed clip only: reads as a
    full-length float32 array of ``length`` samples, silent outside ``start`` .. ``start +
    len(clip)``, but slicing builds only the samples asked for. A 30-minute soundtrack's
    tracks take their clips' memory, not 320 MB each."""

    def __init__(self, start: int, clip: np.ndarray, length: int) -> None:
        if start < 0:  # audio before 0 s is cut
            clip, start = clip[-start:], 0
        self.start, self.clip, self.length = start, clip[:max(0, length - start)], length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key: slice) -> np.ndarray:
        if not isinstance(key, slice):
            raise TypeError("a Track is read in slices")
        begin, end, step = key.indices(self.length)
        if step == 1:
            out = np.zeros(max(0, end - begin), np.float32)
            a, b = max(begin, self.start), min(end, self.start + len(self.clip))
            if a < b:
                out[a - begin:b - begin] = self.clip[a - self.start:b - self.start]
            return out
        at = np.arange(begin, end, step)
        inside = (at >= self.start) & (at < self.start + len(self.clip))
        out = np.zeros(len(at), np.float32)
        out[inside] = self.clip[at[inside] - self.start]
        return out

    def add_to(self, total: np.ndarray) -> None:
        total[self.start:self.start + len(self.clip)] += self.clip


def tracks(plan: Plan, results: dict[str, EventResult], sr: int = dsp.SAMPLE_RATE) -> dict[str, Track]:
    """One full-length track per event with a chosen artifact (silence elsewhere)."""
    total = offset(plan.duration, sr)
    out: dict[str, Track] = {}
    for event in plan.events:
        result = results.get(event.id)
        best = result.best if result is not None else None
        if best is None or best.artifact is None:
            continue
        x = dsp.read_wav(best.artifact.path, sr)
        start = offset(event.start, sr)
        length = min(len(x), offset(event.duration, sr) if event.type != "speech" else len(x), total - start)
        out[event.id] = Track(start, x[:max(0, length)], total)
    return out


def mix(plan: Plan, results: dict[str, EventResult], sr: int = dsp.SAMPLE_RATE) -> tuple[np.ndarray, float,
                                                                                        dict[str, Track]]:
    """The summed mix, the gain applied to keep it under full scale, and the tracks."""
    ts = tracks(plan, results, sr)
    total = np.zeros(offset(plan.duration, sr), np.float32)
    for t in ts.values():
        t.add_to(total)
    peak = max(float(total.max()), -float(total.min())) if len(total) else 0.0  # no |total| copy
    gain = HEADROOM / peak if peak > HEADROOM else 1.0
    if gain != 1.0:
        total *= np.float32(gain)  # in place: one full-length array, not two
    return total, gain, ts


def plot(plan: Plan, ts: dict[str, Track], total: np.ndarray, path: Path, sr: int = dsp.SAMPLE_RATE) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [e for e in plan.events if e.id in ts]
    colors = {"speech": "tab:blue", "music": "tab:green", "effect": "tab:orange"}
    fig, axes = plt.subplots(len(rows) + 1, 1, figsize=(12, 1.1 * (len(rows) + 1) + 0.6), sharex=True,
                             squeeze=False)
    step = max(1, len(total) // 4000)
    t = np.arange(0, len(total), step) / sr
    for ax, e in zip(axes[:, 0], rows, strict=False):
        ax.plot(t, ts[e.id][::step], color=colors.get(e.type, "tab:gray"), linewidth=0.5)
        ax.axvspan(e.start, e.end, color=colors.get(e.type, "tab:gray"), alpha=0.08)
        label = (e.text or e.description)[:40]
        ax.set_ylabel(f"{e.id}\n{label}", rotation=0, ha="right", va="center", fontsize=7)
        ax.set_ylim(-1, 1)
        ax.set_yticks([])
    ax = axes[-1, 0]
    ax.plot(t, total[::step], color="black", linewidth=0.5)
    ax.set_ylabel("mix", rotation=0, ha="right", va="center")
    ax.set_ylim(-1, 1)
    ax.set_yticks([])
    for cut in plan.cuts:
        for a in axes[:, 0]:
            a.axvline(cut, color="red", linestyle="--", linewidth=0.6)
    ax.set_xlabel("seconds")
    fig.suptitle(plan.title or "soundtrack", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


class MixAggregator(Aggregator):
    name = "mixer"

    def assemble(self, plan: Plan, results: dict[str, EventResult], outdir: Path, ctx: Context) -> dict[str, Any]:
        outdir.mkdir(parents=True, exist_ok=True)
        total, gain, ts = mix(plan, results)
        wav = dsp.write_wav(outdir / "mix.wav", total)
        timeline = []
        for e in plan.events:
            r = results.get(e.id)
            best = r.best if r else None
            timeline.append({
                "id": e.id, "type": e.type, "start": e.start, "end": round(e.end, 3), "duration": e.duration,
                "sample_offset": offset(e.start), "text": e.text, "description": e.description,
                "loudness_target": e.loudness, "params": e.params,
                "generator": best.generator if best else None,
                "audio": str(best.artifact.path) if best and best.artifact else None,
                "audio_seconds": best.artifact.duration if best and best.artifact else None,
                "scores": {s.critic: s.score for s in best.scores} if best else {},
                "measured": {s.critic: s.measured for s in best.scores} if best else {},
                "tries": len(r.attempts) if r else 0,
                "in_mix": e.id in ts,
            })
        doc = {"title": plan.title, "duration": plan.duration, "sample_rate": dsp.SAMPLE_RATE, "cuts": plan.cuts,
               "mix_gain": round(gain, 4), "mix_lufs": round(dsp.lufs(total), 2),
               "mix_peak": round(float(np.max(np.abs(total))) if len(total) else 0.0, 4),
               "plan_repairs": plan.repairs, "events": timeline}
        timeline_path = outdir / "timeline.json"
        timeline_path.write_text(json.dumps(doc, indent=2))
        png = plot(plan, ts, total, outdir / "tracks.png")
        return {"wav": wav, "timeline": timeline_path, "png": png, "mix_lufs": doc["mix_lufs"],
                "mix_peak": doc["mix_peak"], "mix_gain": doc["mix_gain"]}
