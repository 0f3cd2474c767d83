"""Where symoe keeps its files: one home directory outside the repository.

``SYMOE_HOME`` wins; otherwise ``$XDG_CACHE_HOME/symoe``; otherwise ``~/.cache/symoe``.
"""

from __future__ import annotations

import os
from pathlib import Path


def default_home() -> Path:
    if os.environ.get("SYMOE_HOME"):
        return Path(os.environ["SYMOE_HOME"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "symoe"
