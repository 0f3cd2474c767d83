"""The final reviewer of the audio team: listens to the assembled mix.

For every speech line it measures, inside the line's window, the loudness of the voice over
the sum of everything else (it must be at least ``min_ratio_db`` louder) and transcribes the
mix itself around the line (``mixer.speech_window``) with Whisper (its WER at most
``max_wer`` above the voice's own). A masked line (too quiet over the rest) sends the events
under it back to the generation team with a hint to come down in level; a line loud enough
yet misheard in the mix is sent back itself for a new take (Piper's takes vary, and Whisper
can mishear one in context that it hears right alone). Events without audio are reported too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agents.audio import dsp
from agents.audio.mixer import mix, offset, speech_window
from agents.audio.whisper import transcribe, wer
from agents.teams.interfaces import Context, Reviewer
from agents.teams.records import EventResult, Issue, Plan


class MixReviewer(Reviewer):
    name = "mix"

    def __init__(self, home: Path, min_ratio_db: float = 8.0, max_wer: float = 0.15) -> None:
        self.home = home
        self.min_ratio_db = min_ratio_db
        self.max_wer = max_wer

    def review(self, plan: Plan, results: dict[str, EventResult], ctx: Context) -> list[Issue]:
        issues: list[Issue] = []
        total, gain, ts = mix(plan, results)
        for e in plan.events:
            if e.id not in ts:
                issues.append(Issue(critic=self.name, event_id=e.id, severity="warning",
                                    message=f"{e.id} has no audio in the mix (every attempt failed)"))
        masking: dict[str, tuple[float, str]] = {}
        for e in plan.events:
            if e.type != "speech" or e.id not in ts:
                continue
            best = results[e.id].best
            assert best is not None and best.artifact is not None
            a, b = offset(e.start), min(len(total), offset(e.start) + offset(best.artifact.duration))
            voice = ts[e.id][a:b]
            rest = (total[a:b] / gain) - voice
            ratio = dsp.lufs(voice) - dsp.lufs(rest) if np.any(rest) else 99.0
            heard = transcribe(total[speech_window(e.start, best.artifact.duration, len(total))], self.home,
                               dsp.SAMPLE_RATE)
            rate = wer(e.text, heard)
            ctx.trace.add("review", f"reviewer:{self.name}", f"{e.id} in the mix: voice {ratio:+.1f} dB over the "
                          f"rest, WER {rate:.2f}", e.id, ratio_db=round(ratio, 2), wer=round(rate, 4), heard=heard)
            solo = next((float(sc.measured["wer"]) for sc in best.scores if sc.critic == "wer"), 0.0)
            if ratio >= self.min_ratio_db:
                if rate <= solo + self.max_wer:
                    continue  # loud enough, and the mix is understood about as well as the voice alone
                # loud enough yet misheard: the take is at fault, not the level; ask for a new one
                retake = int(e.params.get("retake", 0)) + 1
                issues.append(Issue(critic=self.name, event_id=e.id, hint={"params": {"retake": retake}},
                                    message=f"{e.id} is {ratio:+.1f} dB over the rest yet misheard in the mix "
                                            f"(WER {rate:.2f} vs {solo:.2f} alone, heard {heard!r}): a new take"))
                continue
            need = max(self.min_ratio_db - ratio, 3.0)
            end = e.start + best.artifact.duration
            for o in plan.events:
                if o.id == e.id or o.id not in ts or o.start >= end or o.end <= e.start:
                    continue
                message = (f"{o.id} ({o.type}) masks speech {e.id}: voice {ratio:+.1f} dB over the rest "
                           f"(needs {self.min_ratio_db:g}), WER {rate:.2f} in the mix vs {solo:.2f} alone")
                delta = -round(need + 1, 1)
                if o.id not in masking or delta < masking[o.id][0]:
                    masking[o.id] = (delta, message)
        for oid, (delta, message) in masking.items():
            issues.append(Issue(critic=self.name, event_id=oid, hint={"loudness_delta": delta}, message=message))
        if gain < 0.5:
            over = -20 * np.log10(gain)
            issues.append(Issue(critic=self.name, severity="warning",
                                message=f"the mix was {over:.1f} dB over full scale and was scaled down"))
        return issues
