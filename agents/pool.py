"""The expert pool as data: which experts exist, which engine runs each, where its file is.

An ``ExpertSpec`` names a backend and a model file. Files of the default pool ship inside
PyPI packages (``ModelSource``): they are found through ``importlib``, assembled once into
``<home>/models`` and verified by sha256. Nothing is ever downloaded from a hub.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from agents.errors import SymoeError


class ModelFileError(SymoeError):
    """A model file is missing, incomplete or corrupt."""


class ModelSource(BaseModel):
    """How to get a model file from an installed package, offline.

    - ``package_file``: ``files[0]`` inside the package is the model (used in place).
    - ``package_parts``: ``files`` (each ``package/relative/path``) concatenated in order.
    """

    kind: Literal["package_file", "package_parts"]
    package: str = ""
    files: list[str] = Field(default_factory=list)
    sha256: str
    size: int | None = None
    pip: list[str] = Field(default_factory=list, description="what to pip install for it")


class ExpertSpec(BaseModel):
    """One expert: a model, the engine that runs it, and how to prompt it."""

    name: str = ""
    backend: str = "llamacpp"
    path: Path | None = Field(None, description="a local model file or folder")
    source: ModelSource | None = None
    chat_template: bool = True
    n_ctx: int = 2048
    model: str | None = Field(None, description="model name for a server (openai backend)")
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = 60.0
    max_retries: int = 3
    params: dict[str, object] = Field(default_factory=dict)
    description: str = ""

    def model_file(self, home: Path) -> Path | None:
        """Where the model file is (or will be, once prepared); None for remote experts."""
        if self.path is not None:
            return Path(self.path).expanduser()
        if self.source is None:
            return None
        if self.source.kind == "package_file":
            return _package_path(self.source.files[0])
        return home / "models" / f"{self.name}.gguf"


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError(f"package {package!r} is not installed; run `symoe models prepare`")
    return Path(next(iter(spec.submodule_search_locations)))


def _package_path(rel: str) -> Path:
    package, _, inner = rel.partition("/")
    try:
        return _package_dir(package) / inner
    except ModelFileError:
        # Not installed: report where it would be, `status` says it is missing.
        return Path(f"<{package} not installed>") / inner


def sha256_file(path: Path, progress: Callable[[int], None] | None = None) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(8 << 20):
            digest.update(chunk)
            if progress:
                progress(len(chunk))
    return digest.hexdigest()


def _stamp_path(home: Path, spec: ExpertSpec) -> Path:
    return home / "models" / f"{spec.name}.verified.json"


def _stamp_of(path: Path) -> dict[str, object]:
    stat = path.stat()
    return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


ExpertStatus = Literal["ready", "missing", "unverified", "corrupt", "remote", "not installed"]


def status(spec: ExpertSpec, home: Path) -> ExpertStatus:
    """Cheap readiness check: trusts a verification stamp written by ``prepare``."""
    if spec.backend == "openai" or (spec.path is None and spec.source is None):
        return "remote"
    path = spec.model_file(home)
    if path is None or not path.exists():
        if spec.source and spec.source.kind != "package_parts" and "not installed" in str(path):
            return "not installed"
        if spec.source and spec.source.kind == "package_parts":
            try:
                _package_dir(spec.source.files[0].partition("/")[0])
            except ModelFileError:
                return "not installed"
        return "missing"
    if spec.source is None:
        return "ready"  # a user's own file: nothing to verify against
    if spec.source.size is not None and path.is_file() and path.stat().st_size != spec.source.size:
        return "corrupt"
    stamp = _stamp_path(home, spec)
    if stamp.exists():
        try:
            saved = json.loads(stamp.read_text())
        except (OSError, ValueError):
            return "unverified"
        # The stamp speaks for the file only while the file is unchanged since it was hashed
        # (``verify`` stamps a wrong hash too, so a failed check stays visible).
        if {k: saved.get(k) for k in ("path", "size", "mtime_ns")} == _stamp_of(path):
            return "ready" if saved.get("sha256") == spec.source.sha256 else "corrupt"
    return "unverified"


def verify(spec: ExpertSpec, home: Path, progress: Callable[[int], None] | None = None) -> Path:
    """Hash the file, compare with the spec, and remember the result; raise if it differs."""
    path = spec.model_file(home)
    if path is None or not path.exists():
        raise ModelFileError(
            f"model file for expert {spec.name!r} is missing ({path}); run `symoe models prepare`"
        )
    if spec.source is None:
        return path
    if spec.source.size is not None and path.stat().st_size != spec.source.size:
        raise ModelFileError(
            f"model file {path} for expert {spec.name!r} has {path.stat().st_size} bytes, "
            f"expected {spec.source.size}; delete it and run `symoe models prepare`"
        )
    digest = sha256_file(path, progress)
    stamp = _stamp_path(home, spec)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps({**_stamp_of(path), "sha256": digest}))
    if digest != spec.source.sha256:
        raise ModelFileError(
            f"model file {path} for expert {spec.name!r} is corrupt (sha256 {digest[:16]}..., "
            f"expected {spec.source.sha256[:16]}...); delete it and run `symoe models prepare`"
        )
    return path


def ensure_ready(spec: ExpertSpec, home: Path) -> Path | None:
    """The verified model file, preparing it first if needed (None for remote experts)."""
    state = status(spec, home)
    if state == "remote":
        return None
    if state == "ready":
        return spec.model_file(home)
    if state == "corrupt":
        path = spec.model_file(home)
        raise ModelFileError(
            f"model file {path} for expert {spec.name!r} is corrupt; "
            "delete it and run `symoe models prepare`"
        )
    return prepare(spec, home)


def prepare(
    spec: ExpertSpec, home: Path, progress: Callable[[int, int], None] | None = None
) -> Path | None:
    """Assemble the model file from its package(s) if needed, then verify it.

    ``progress(done_bytes, total_bytes)`` is called while copying and hashing.
    """
    if spec.backend == "openai" or spec.source is None:
        path = spec.model_file(home)
        if path is not None and not path.exists():
            raise ModelFileError(f"model file {path} for expert {spec.name!r} does not exist")
        return path
    source = spec.source
    path = spec.model_file(home)
    assert path is not None
    if status(spec, home) == "ready":
        return path
    total = source.size or 0
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, 2 * total if source.kind != "package_file" else total)

    if source.kind == "package_parts" and not path.exists():
        parts = [_package_dir(f.partition("/")[0]) / f.partition("/")[2] for f in source.files]
        missing = [str(p) for p in parts if not p.exists()]
        if missing:
            raise ModelFileError(
                f"expert {spec.name!r}: {len(missing)} part file(s) missing, e.g. {missing[0]}; "
                f"reinstall: pip install {' '.join(source.pip)}"
            )
        total = sum(p.stat().st_size for p in parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part")
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as handle:
                    while chunk := handle.read(8 << 20):
                        out.write(chunk)
                        tick(len(chunk))
        tmp.replace(path)
    elif source.kind == "package_file":
        _package_dir(source.package)  # raises if not installed
        total = path.stat().st_size if path.exists() else 0
    return verify(spec, home, tick)
