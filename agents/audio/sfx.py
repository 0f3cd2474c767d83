"""Sound effects from a library of parametric synthesisers (noise colours, filters, envelopes,
impacts, tones), chosen by keywords of the event's description.

Two generators: ``synth-sfx`` renders the recipe that matches the description and stages its
gain naively to the target loudness (so impulsive sounds can clip; the clipping critic
catches it and the rewriter turns on ``params["limiter"]`` or lowers the gain), and
``noise-sfx``, a generic band of shaped noise that never clips but matches less well.
Recipes are registered in ``RECIPES``; add one with ``@recipe("keyword", ...)``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from agents.audio import dsp
from agents.teams.interfaces import Context, Generator
from agents.teams.records import Artifact, Event
from agents.teams.registry import generators

Recipe = Callable[[float, np.random.Generator], np.ndarray]
RECIPES: dict[str, Recipe] = {}
KEYWORDS: dict[str, str] = {}
SR = dsp.SAMPLE_RATE


def recipe(*keywords: str) -> Callable[[Recipe], Recipe]:
    def add(fn: Recipe) -> Recipe:
        RECIPES[fn.__name__] = fn
        for k in keywords:
            KEYWORDS[k] = fn.__name__
        return fn
    return add


# -- building blocks ---------------------------------------------------------------------
def n_samples(seconds: float) -> int:
    return max(1, int(round(seconds * SR)))


def noise(seconds: float, rng: np.random.Generator, color: str = "white") -> np.ndarray:
    n = n_samples(seconds)
    white = rng.standard_normal(n)
    if color == "white":
        x = white
    elif color == "brown":
        x = np.cumsum(white)
        x -= np.convolve(x, np.ones(2048) / 2048, mode="same")  # remove the drift
    else:  # pink: 1/f power via the spectrum
        spec = np.fft.rfft(white)
        f = np.arange(len(spec))
        f[0] = 1
        x = np.fft.irfft(spec / np.sqrt(f), n)
    x = x / (np.max(np.abs(x)) or 1.0)
    return x.astype(np.float32)


def band(x: np.ndarray, low: float | None = None, high: float | None = None, order: int = 4) -> np.ndarray:
    from scipy.signal import butter, sosfilt  # a second of imports: only when a sound is filtered

    if low and high:
        sos = butter(order, [low, high], btype="bandpass", fs=SR, output="sos")
    elif low:
        sos = butter(order, low, btype="highpass", fs=SR, output="sos")
    elif high:
        sos = butter(order, high, btype="lowpass", fs=SR, output="sos")
    else:
        return x
    return sosfilt(sos, x).astype(np.float32)


def adsr(n: int, attack: float, decay: float, sustain: float, release: float) -> np.ndarray:
    a, d, r = (min(n, int(v * SR)) for v in (attack, decay, release))
    s = max(0, n - a - d - r)
    env = np.concatenate([np.linspace(0, 1, a, endpoint=False), np.linspace(1, sustain, d, endpoint=False),
                          np.full(s, sustain), np.linspace(sustain, 0, r)])
    return np.pad(env, (0, max(0, n - len(env))))[:n].astype(np.float32)


def exp_decay(n: int, seconds: float) -> np.ndarray:
    return np.exp(-np.arange(n) / (seconds * SR)).astype(np.float32)


def tone(seconds: float, freq: float | np.ndarray, shape: str = "sine") -> np.ndarray:
    n = n_samples(seconds)
    f = np.broadcast_to(np.asarray(freq, dtype=np.float64), (n,))
    phase = 2 * np.pi * np.cumsum(f) / SR
    if shape == "square":
        return np.sign(np.sin(phase)).astype(np.float32)
    if shape == "saw":
        return (2 * ((phase / (2 * np.pi)) % 1.0) - 1).astype(np.float32)
    return np.sin(phase).astype(np.float32)


def place(out: np.ndarray, x: np.ndarray, at: float) -> None:
    i = int(at * SR)
    if i < len(out):
        m = min(len(x), len(out) - i)
        out[i:i + m] += x[:m]


def impact(rng: np.random.Generator, freq: float = 70.0, decay: float = 0.25, brightness: float = 3000.0) -> np.ndarray:
    seconds = decay * 5
    n = n_samples(seconds)
    body = tone(seconds, freq * (1 + 0.5 * exp_decay(n, 0.02))) * exp_decay(n, decay)
    click = band(noise(seconds, rng), high=brightness) * exp_decay(n, 0.015)
    return (0.8 * body + 0.6 * click).astype(np.float32)


# -- recipes -------------------------------------------------------------------------------
@recipe("rain", "drizzle", "downpour", "shower")
def rain(seconds: float, rng: np.random.Generator) -> np.ndarray:
    bed = band(noise(seconds, rng, "pink"), low=800, high=9000) * 0.5
    drops = np.zeros(n_samples(seconds), np.float32)
    for at in rng.uniform(0, seconds, int(seconds * 40)):
        place(drops, band(noise(0.01, rng), low=2000) * rng.uniform(0.1, 0.4), at)
    return bed + drops


@recipe("wind", "gust", "breeze", "howling", "gale")
def wind(seconds: float, rng: np.random.Generator) -> np.ndarray:
    n = n_samples(seconds)
    t = np.arange(n) / SR
    swell = 0.6 + 0.4 * np.sin(2 * np.pi * 0.25 * t + rng.uniform(0, 6))
    return band(noise(seconds, rng, "brown"), low=150, high=1200) * swell.astype(np.float32)


@recipe("thunder", "lightning", "storm", "thunderclap")
def thunder(seconds: float, rng: np.random.Generator) -> np.ndarray:
    n = n_samples(seconds)
    crack = band(noise(seconds, rng), low=1500) * exp_decay(n, 0.06) * 1.0
    rumble = band(noise(seconds, rng, "brown"), high=180) * exp_decay(n, max(0.4, seconds / 3))
    rumble *= (0.7 + 0.3 * np.sin(2 * np.pi * 1.3 * np.arange(n) / SR)).astype(np.float32)
    return (crack + 2.0 * rumble / (np.max(np.abs(rumble)) or 1)).astype(np.float32)


@recipe("sea", "waves", "wave", "ocean", "surf", "shore")
def waves(seconds: float, rng: np.random.Generator) -> np.ndarray:
    n = n_samples(seconds)
    t = np.arange(n) / SR
    swell = np.clip(np.sin(2 * np.pi * 0.12 * t + rng.uniform(0, 6)), 0, None) ** 2 + 0.15
    return band(noise(seconds, rng, "pink"), low=100, high=4000) * swell.astype(np.float32)


@recipe("knock", "knocking", "door knock")
def knock(seconds: float, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros(n_samples(seconds), np.float32)
    for i in range(3):
        place(out, impact(rng, freq=180, decay=0.04, brightness=2500), 0.05 + 0.22 * i)
    return out


@recipe("impact", "thud", "slam", "crash", "bang", "hit", "boom", "explosion")
def thud(seconds: float, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros(n_samples(seconds), np.float32)
    place(out, impact(rng, freq=55, decay=min(0.5, seconds / 4)), 0.02)
    return out


@recipe("bell", "chime", "ding", "gong")
def bell(seconds: float, rng: np.random.Generator) -> np.ndarray:
    n = n_samples(seconds)
    out = np.zeros(n, np.float32)
    for ratio, amp in ((1.0, 1.0), (2.76, 0.5), (5.4, 0.25), (8.93, 0.12)):
        out += amp * tone(seconds, 660 * ratio) * exp_decay(n, seconds / (2 + ratio))
    return out


@recipe("beep", "alarm", "siren", "radio", "signal", "morse")
def beep(seconds: float, rng: np.random.Generator) -> np.ndarray:
    n = n_samples(seconds)
    gate = ((np.arange(n) / SR) % 0.5 < 0.25).astype(np.float32)
    return band(tone(seconds, 880, "square"), high=4000) * gate * 0.5


@recipe("whoosh", "swoosh", "swish", "fly by")
def whoosh(seconds: float, rng: np.random.Generator) -> np.ndarray:
    n = n_samples(seconds)
    out = np.zeros(n, np.float32)
    x = noise(seconds, rng)
    for k, centre in enumerate(np.geomspace(300, 3000, 8)):
        seg = slice(k * n // 8, (k + 1) * n // 8)
        out[seg] = band(x, low=centre * 0.7, high=centre * 1.4)[seg]
    return out * np.hanning(n).astype(np.float32)


@recipe("footsteps", "steps", "walking", "footstep")
def footsteps(seconds: float, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros(n_samples(seconds), np.float32)
    at = 0.1
    while at < seconds - 0.1:
        place(out, band(noise(0.08, rng), low=100, high=1500) * exp_decay(n_samples(0.08), 0.02), at)
        at += 0.55 + rng.uniform(-0.03, 0.03)
    return out


@recipe("fire", "crackle", "crackling", "fireplace", "campfire")
def fire(seconds: float, rng: np.random.Generator) -> np.ndarray:
    bed = band(noise(seconds, rng, "brown"), high=600) * 0.5
    crackle = np.zeros(n_samples(seconds), np.float32)
    for at in rng.uniform(0, seconds, int(seconds * 12)):
        place(crackle, band(noise(0.006, rng), low=3000) * rng.uniform(0.2, 0.8), at)
    return bed + crackle


@recipe("creak", "creaking", "hinge")
def creak(seconds: float, rng: np.random.Generator) -> np.ndarray:
    n = n_samples(seconds)
    freq = 120 + 60 * np.sin(np.linspace(0, np.pi, n))
    return band(tone(seconds, freq, "saw"), low=200, high=2500) * adsr(n, 0.05, 0.1, 0.7, 0.2)


@recipe("hum", "drone", "engine", "machine", "motor")
def drone(seconds: float, rng: np.random.Generator) -> np.ndarray:
    n = n_samples(seconds)
    x = sum(tone(seconds, 55 * h) / h for h in (1, 2, 3, 4))
    return (x * adsr(n, 0.3, 0.1, 1.0, 0.3)).astype(np.float32)


def match(description: str) -> str | None:
    text = description.lower()
    hits = [(text.find(k), name) for k, name in KEYWORDS.items() if k in text]
    return min(hits)[1] if hits else None


def _artifact(x: np.ndarray, event: Event, ctx: Context, generator: str, **meta: object) -> Artifact:
    n = n_samples(event.duration)
    x = dsp.fade(np.pad(x, (0, max(0, n - len(x))))[:n])
    k = len(list(ctx.workdir.glob(f"{event.id}.{generator}.*")))
    path = dsp.write_wav(ctx.workdir / f"{event.id}.{generator}.{k}.wav", x)
    return Artifact(path=path, generator=generator, duration=round(n / SR, 3), sample_rate=SR,
                    meta={"peak": round(float(np.max(np.abs(x))), 4), **meta})


@generators.register_named
class SynthSfx(Generator):
    """Renders the recipe matching the description (``params["recipe"]`` overrides)."""

    name = "synth-sfx"
    event_types = ("effect",)
    prior = 0.75

    def generate(self, event: Event, ctx: Context) -> Artifact:
        name = event.params.get("recipe") or match(event.description) or "thud"
        rng = np.random.default_rng(ctx.seed + int(event.params.get("variant", 0)))
        x = RECIPES[str(name)](event.duration, rng)
        x = dsp.gain_to(x, event.loudness, peak_limit=None) * dsp.db_to_gain(float(event.params.get("gain_db", 0.0)))
        if event.params.get("limiter"):
            x = dsp.soft_limit(x, 0.95)
        return _artifact(x, event, ctx, self.name, recipe=name, limiter=bool(event.params.get("limiter")))


@generators.register_named
class NoiseSfx(Generator):
    """A generic band of shaped noise: low/deep words lower it, high/hiss words raise it."""

    name = "noise-sfx"
    event_types = ("effect",)
    prior = 0.45

    def generate(self, event: Event, ctx: Context) -> Artifact:
        text = event.description.lower()
        low, high = 200.0, 4000.0
        if any(w in text for w in ("low", "deep", "rumble", "distant")):
            low, high = 40.0, 400.0
        elif any(w in text for w in ("high", "hiss", "sharp", "bright")):
            low, high = 3000.0, 12000.0
        rng = np.random.default_rng(ctx.seed + int(event.params.get("variant", 0)))
        n = n_samples(event.duration)
        x = band(noise(event.duration, rng, "pink"), low=low, high=high) * adsr(n, 0.05, 0.2, 0.6, 0.3)
        x = dsp.gain_to(x, event.loudness)
        return _artifact(x, event, ctx, self.name, band=[low, high])
