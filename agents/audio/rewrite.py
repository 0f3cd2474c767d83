"""The audio prompt rewriter: turns failing critics' hints into a changed event for the next try.

- speech too long for its slot: speak faster (``rate``, up to 1.2x); beyond that, ask the
  LLM to shorten the line (or drop trailing words without one) and speak it at 1.1x;
- speech misheard: speak slower (``rate`` x 0.9) when the slot leaves room, else shorten;
  still misheard when slowed: the LLM rewords it;
- clipped effect: turn on the soft limiter, then lower the gain 3 dB per try;
- level off target: correct ``gain_db``; dead air: try another random variant.
"""

from __future__ import annotations

import re

from agents.teams.interfaces import Context, Rewriter
from agents.teams.records import Event, Score

CLEAR_RATE = 1.2  # faster than this, Whisper (and listeners) start to miss words
SHORT_RATE = 1.1  # the pace of a shortened line
SHORTEN_SYSTEM = "You edit film dialogue. Reply with the edited line only."


def _hints(feedback: list[Score]) -> dict[str, object]:
    merged: dict[str, object] = {}
    for s in feedback:
        merged.update(s.hint)
    return merged


class AudioRewriter(Rewriter):
    event_types = ("speech", "music", "effect")

    def rewrite(self, event: Event, feedback: list[Score], ctx: Context) -> tuple[Event, str] | None:
        hints = _hints(feedback)
        params = dict(event.params)
        if event.type == "speech":
            return self._speech(event, params, hints, ctx, feedback)
        notes = []
        if hints.get("limiter"):
            if not params.get("limiter"):
                params["limiter"] = True
                notes.append("clipped: render again through the soft limiter")
            else:
                params["gain_db"] = float(params.get("gain_db", 0.0)) - 3.0
                notes.append(f"still clipped: gain {params['gain_db']:+.1f} dB")
        elif "gain_db" in hints:
            params["gain_db"] = round(float(params.get("gain_db", 0.0)) + float(hints["gain_db"]), 2)  # type: ignore[arg-type]
            notes.append(f"level off: gain {params['gain_db']:+.1f} dB")
        if hints.get("variant"):
            params["variant"] = int(params.get("variant", 0)) + 1  # type: ignore[call-overload]
            notes.append(f"dead air: try random variant {params['variant']}")
        if not notes:
            return None
        return event.model_copy(update={"params": params}), "; ".join(notes)

    def _speech(self, event: Event, params: dict[str, object], hints: dict[str, object],
                ctx: Context, scores: list[Score]) -> tuple[Event, str] | None:
        rate = float(params.get("rate", 1.0))  # type: ignore[arg-type]
        words = event.text.split()
        timing = next((s.measured for s in scores if s.critic == "duration"), {})
        ratio = float(timing.get("ratio", 1.0))
        if "speed" in hints:
            need = rate * float(hints["speed"]) * 1.05  # type: ignore[arg-type]
            if need <= CLEAR_RATE:
                params["rate"] = round(need, 3)
                return (event.model_copy(update={"params": params}),
                        f"too long for its slot: speak {params['rate']:.2f}x")
            keep = max(2, int(len(words) * SHORT_RATE / need * 0.95))
            params["rate"] = SHORT_RATE
            text = self._shorten(event.text, keep, ctx)
            return (event.model_copy(update={"params": params, "text": text}),
                    f"too long even at {CLEAR_RATE}x: line shortened to {len(text.split())} words, "
                    f"spoken {SHORT_RATE}x: {text!r}")
        if hints.get("clearer"):
            slower = round(max(0.8, rate * 0.9), 3)
            if rate < 1.0 and ctx.llm is not None:  # slowing down did not help: say it in other words
                text = self._shorten(event.text, len(words), ctx)
                if text != event.text:
                    return (event.model_copy(update={"text": text}),
                            f"still misheard at {rate:.2f}x: reworded as {text!r}")
            if ratio * rate / slower <= 1.0:
                params["rate"] = slower
                return event.model_copy(update={"params": params}), f"misheard: speak slower ({slower:.2f}x)"
            keep = max(2, int(len(words) * slower / (ratio * rate) * 0.95))
            if keep >= len(words):
                return None
            params["rate"] = slower
            text = self._shorten(event.text, keep, ctx)
            return (event.model_copy(update={"params": params, "text": text}),
                    f"misheard, and slower would not fit: shortened to {len(text.split())} words at "
                    f"{slower:.2f}x: {text!r}")
        return None

    @staticmethod
    def _shorten(text: str, max_words: int, ctx: Context) -> str:
        words = text.split()
        if ctx.llm is not None:
            reply = ctx.llm(f"Shorten this line to at most {max_words} words, keeping its meaning:\n{text}",
                            SHORTEN_SYSTEM, 48).strip().strip('"').splitlines()
            line = reply[0].strip().strip('"') if reply else ""
            if line and 1 <= len(line.split()) <= max_words and re.search(r"[A-Za-z]", line):
                return line
        return " ".join(words[:max_words]).rstrip(",;") + "."
