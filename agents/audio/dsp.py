"""Audio primitives shared by generators, critics and the mixer: reading and writing WAV,
resampling, loudness (LUFS), gain staging, clipping and silence measures.

All audio is mono float32 in [-1, 1]; the team works at ``SAMPLE_RATE``.
"""

from __future__ import annotations

from math import gcd
from pathlib import Path

import numpy as np

SAMPLE_RATE = 44100
CLIP_LEVEL = 0.999
SILENCE_DB = -45.0


def read_wav(path: Path, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Mono float32 at ``sr`` (mixed down and resampled as needed)."""
    import soundfile as sf

    x, file_sr = sf.read(str(path), dtype="float32", always_2d=True)
    mono = x.mean(axis=1)
    return resample(mono, file_sr, sr)


def write_wav(path: Path, x: np.ndarray, sr: int = SAMPLE_RATE) -> Path:
    """Write 16-bit PCM; samples beyond full scale are hard-clipped, as any PCM render would."""
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(x, -1.0, 1.0), sr, subtype="PCM_16")
    return path


def resample(x: np.ndarray, sr_from: int, sr_to: int) -> np.ndarray:
    if sr_from == sr_to:
        return x.astype(np.float32)
    from scipy.signal import resample_poly

    g = gcd(sr_from, sr_to)
    return resample_poly(x, sr_to // g, sr_from // g).astype(np.float32)


def lufs(x: np.ndarray, sr: int = SAMPLE_RATE) -> float:
    """Integrated loudness (ITU-R BS.1770); short sounds use one block of their own length."""
    import pyloudnorm as pyln

    if len(x) < int(0.05 * sr) or not np.any(x):
        return -70.0
    block = min(0.4, len(x) / sr)
    value = pyln.Meter(sr, block_size=block).integrated_loudness(x.astype(np.float64))
    return float(max(value, -70.0)) if np.isfinite(value) else -70.0


def db_to_gain(db: float) -> float:
    return float(10.0 ** (db / 20.0))


def gain_to(x: np.ndarray, target_lufs: float, sr: int = SAMPLE_RATE, peak_limit: float | None = 0.95) -> np.ndarray:
    """Scale to ``target_lufs``; with ``peak_limit`` the gain stops where the peak would pass it
    (quieter than asked rather than clipped). ``peak_limit=None`` is naive gain staging."""
    now = lufs(x, sr)
    if now <= -70.0:
        return x
    gain = db_to_gain(target_lufs - now)
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    if peak_limit is not None and peak * gain > peak_limit:
        gain = peak_limit / peak
    return (x * gain).astype(np.float32)


def soft_limit(x: np.ndarray, ceiling: float = 0.9) -> np.ndarray:
    """Leave samples under ``ceiling/2`` alone, bend louder ones smoothly under ``ceiling``."""
    knee = ceiling / 2
    y = x.copy()
    over = np.abs(y) > knee
    y[over] = np.sign(y[over]) * (knee + (ceiling - knee) * np.tanh((np.abs(y[over]) - knee) / (ceiling - knee)))
    return y.astype(np.float32)


def clipped_fraction(x: np.ndarray) -> float:
    return float(np.mean(np.abs(x) >= CLIP_LEVEL)) if len(x) else 0.0


def frame_db(x: np.ndarray, sr: int = SAMPLE_RATE, frame: float = 0.02) -> np.ndarray:
    n = max(1, int(frame * sr))
    usable = len(x) // n * n
    if usable == 0:
        return np.array([-120.0])
    rms = np.sqrt(np.mean(x[:usable].reshape(-1, n) ** 2, axis=1))
    return 20 * np.log10(np.maximum(rms, 1e-6))


def silent_fraction(x: np.ndarray, sr: int = SAMPLE_RATE, floor_db: float = SILENCE_DB) -> float:
    return float(np.mean(frame_db(x, sr) < floor_db))


def longest_silence(x: np.ndarray, sr: int = SAMPLE_RATE, floor_db: float = SILENCE_DB) -> float:
    """Seconds of the longest run of silent 20 ms frames."""
    quiet = np.concatenate([[0], (frame_db(x, sr) < floor_db).astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(quiet))
    runs = edges[1::2] - edges[0::2]
    return float(runs.max() * 0.02) if len(runs) else 0.0


def edge_silence(x: np.ndarray, sr: int = SAMPLE_RATE, floor_db: float = SILENCE_DB) -> tuple[float, float]:
    """Seconds of silence before the first and after the last sound."""
    db = frame_db(x, sr)
    loud = np.flatnonzero(db >= floor_db)
    if len(loud) == 0:
        return len(x) / sr, 0.0
    return float(loud[0] * 0.02), float((len(db) - 1 - loud[-1]) * 0.02)


def fade(x: np.ndarray, sr: int = SAMPLE_RATE, fade_in: float = 0.01, fade_out: float = 0.05) -> np.ndarray:
    y = x.copy()
    n_in, n_out = min(len(y), int(fade_in * sr)), min(len(y), int(fade_out * sr))
    if n_in:
        y[:n_in] *= np.linspace(0, 1, n_in, dtype=np.float32)
    if n_out:
        y[-n_out:] *= np.linspace(1, 0, n_out, dtype=np.float32)
    return y
