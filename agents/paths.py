"""Where symoe keeps its files: one home directory outside the repository.

``SYMOE_HOME`` wins (when set and not empty); otherwise ``$XDG_CACHE_HOME/symoe``; otherwise
``~/.cache/symoe``. ``writable_dir`` is the one check made before anything is written there:
a home that is not a directory or cannot be written is one ``SymoeError`` line, never a
traceback.
"""

from __future__ import annotations

import os
from pathlib import Path

from agents.errors import SymoeError

HOME_HINT = "point SYMOE_HOME (or `home:` in the config) at a writable directory"


def default_home() -> Path:
    return home_or_default(os.environ.get("SYMOE_HOME"))


def home_or_default(value: str | os.PathLike[str] | None) -> Path:
    """``value`` as the home, or the XDG default when it is unset or empty (``SYMOE_HOME=``)."""
    if value is not None and str(value).strip():
        return Path(value).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "symoe"


def _not_a_directory(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` (or itself) when it is not a directory."""
    for candidate in (path, *path.parents):
        try:
            if candidate.exists():
                return None if candidate.is_dir() else candidate
        except OSError:
            return None
    return None


def writable_dir(path: Path, what: str, hint: str = HOME_HINT) -> Path:
    """Create ``path`` (with its parents) and make sure files can be written in it.

    Raises one ``SymoeError`` line naming ``what`` and ``path``, the reason and what to do.
    """
    blocker = _not_a_directory(path)
    if blocker is not None:
        raise SymoeError(f"cannot use {path} for {what}: {blocker} is not a directory; {hint}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SymoeError(f"cannot create {path} for {what}: {exc.strerror or exc}; {hint}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise SymoeError(f"cannot write {what} in {path}: permission denied; {hint}")
    return path
