"""Writing files so that a reader never sees half of one: write a unique temporary file
beside the target, flush it to disk, rename it over the target (atomic on POSIX). On any
failure (a full disk, say) the temporary file is removed and the old file stays whole."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from agents.errors import SymoeError

UMASK = os.umask(0o022)  # read once (umask can only be read by setting it)
os.umask(UMASK)


class WriteError(SymoeError):
    """A file could not be written (a full disk, a size limit, no permission)."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__(f"cannot write {path} ({reason}); the previous version, if any, is unchanged")


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "w", **kwargs: object) -> Iterator[IO]:  # type: ignore[type-arg]
    """``open`` for writing that only replaces ``path`` when the block finishes without error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~UMASK)  # the mode a plain open() would give, not mkstemp's 0600
        with os.fdopen(fd, mode, **kwargs) as handle:  # type: ignore[call-overload]
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise WriteError(path, str(exc.strerror or exc)) from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_text(path: Path, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


@contextlib.contextmanager
def locked(folder: Path, what: str) -> Iterator[None]:
    """Hold ``folder/.lock`` for the block; a second holder gets one ``SymoeError`` line."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SymoeError(f"{folder} is in use by another {what} (it holds {folder / '.lock'}); "
                             "wait for it to finish or choose another folder") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` for the block, waiting for other holders.

    The lock goes with the process: one that dies (even by SIGKILL) releases it, so a lock
    file left behind never blocks anyone.
    """
    try:
        handle = open(path, "a+")  # noqa: SIM115 (closed in the finally below)
    except OSError as exc:
        raise SymoeError(f"cannot open lock file {path} ({exc.strerror or exc}); "
                         "make its folder writable") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        handle.close()  # closing the file releases the lock


@contextlib.contextmanager
def staged(folder: Path, what: str = "the files") -> Iterator[Path]:
    """A hidden folder beside ``folder``'s files to write a set of files into; when the block
    ends without error every file is renamed into ``folder`` (renames need no space), so the
    set is replaced together or not at all. On failure the staging folder is removed and
    ``folder`` is unchanged; a write error is one ``SymoeError`` line."""
    folder.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder))
    try:
        try:
            yield stage
        except (OSError, WriteError) as exc:
            reason = exc.reason if isinstance(exc, WriteError) else str(exc.strerror or exc)
            raise SymoeError(f"cannot write {what} into {folder} ({reason}); the previous ones, if any, "
                             "are unchanged") from None
        for item in sorted(stage.iterdir()):
            os.replace(item, folder / item.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def json_object(line: str, where: str, error: type[SymoeError] = SymoeError) -> dict[str, Any]:
    """One line of a JSONL file as a JSON object, or one ``error`` naming ``where`` (FILE:LINE)."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise error(f"{where}: not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise error(f"{where}: not valid JSON (nested too deeply)") from None
    if not isinstance(data, dict):
        raise error(f"{where}: expected a JSON object, got {type(data).__name__}")
    return data
