"""What a video fixes in the timeline: its duration (ffprobe) and its scene cuts (PySceneDetect)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from pydantic import BaseModel

from agents.errors import SymoeError


class VideoInfo(BaseModel):
    path: Path
    duration: float
    cuts: list[float]


def probe_duration(path: Path) -> float:
    exe = shutil.which("ffprobe")
    if exe is None:
        raise SymoeError("ffprobe is not installed (apt-get install ffmpeg); it reads the video's duration")
    proc = subprocess.run([exe, "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
                          capture_output=True, text=True, timeout=60)
    try:
        duration = float(proc.stdout.strip().splitlines()[0])
    except (ValueError, IndexError):
        why = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "no duration in the file"
        raise SymoeError(f"cannot read the video {path}: {why}") from None
    if duration <= 0:
        raise SymoeError(f"the video {path} has no duration")
    return duration


def scene_cuts(path: Path, threshold: float = 27.0) -> list[float]:
    try:
        from scenedetect import ContentDetector, detect
    except ImportError:
        raise SymoeError("scenedetect is not installed; install the audio extra: pip install -e '.[audio]'") from None
    try:
        scenes = detect(str(path), ContentDetector(threshold=threshold))
    except Exception as exc:  # scenedetect raises its own and OpenCV's errors
        raise SymoeError(f"cannot detect scenes in {path}: {exc}") from None
    return [round(float(start.seconds), 3) for start, _ in scenes[1:]]


def read_video(path: Path) -> VideoInfo:
    """Duration and scene cuts, or a one-line error when the file is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise SymoeError(f"no video file at {path}")
    duration = probe_duration(path)
    return VideoInfo(path=path, duration=round(duration, 3), cuts=scene_cuts(path))


def mux(video: Path, audio: Path, out: Path) -> Path:
    """The video with the mix as its sound track (video stream copied)."""
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise SymoeError("ffmpeg is not installed (apt-get install ffmpeg)")
    proc = subprocess.run([exe, "-y", "-v", "error", "-i", str(video), "-i", str(audio), "-map", "0:v:0", "-map",
                           "1:a:0", "-c:v", "copy", "-c:a", "aac", "-shortest", str(out)],
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise SymoeError(f"ffmpeg could not put the mix on the video: {proc.stderr.strip()[:200]}")
    return out
