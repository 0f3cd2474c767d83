"""What made an output: package versions, the pool's files, the seed and the config."""

from __future__ import annotations

import hashlib
import json
import platform
from functools import cache
from importlib import metadata
from typing import Any

from orchestrator.config import SymoeConfig

_PACKAGES = ("symoe", "llama-cpp-python", "transformers", "torch", "sentence-transformers",
             "faiss-cpu", "langgraph", "vllm")


def versions() -> dict[str, str]:
    """The versions of the packages that shape an output (read once per process)."""
    return dict(_versions())


@cache
def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


#: config object -> its digest or hash (configs are never changed in place: a change is a
#: ``model_copy``); the object is kept beside its value so its id is not reused while the entry lives
_DIGESTS: dict[int, tuple[SymoeConfig, dict[str, str]]] = {}
_HASHES: dict[int, tuple[SymoeConfig, str]] = {}


def _remember(memo: dict[int, tuple[SymoeConfig, Any]], config: SymoeConfig, value: Any) -> None:
    if len(memo) >= 64:
        memo.pop(next(iter(memo)))
    memo[id(config)] = (config, value)


def pool_digest(config: SymoeConfig) -> dict[str, str]:
    """Each expert's identity: its backend and file hash, model name or path, and its method
    (when not ``standard``); computed once per config object (every answer record carries it),
    a fresh dict each call."""
    held = _DIGESTS.get(id(config))
    if held is not None and held[0] is config:
        return dict(held[1])
    out = {}
    for name, spec in config.experts.items():
        ident = spec.source.sha256[:16] if spec.source else str(spec.model or spec.path or "")
        method = "" if spec.method == "standard" else f"/{spec.method}"
        out[name] = f"{spec.backend}:{ident}{method}"
    _remember(_DIGESTS, config, out)
    return dict(out)


def config_hash(config: SymoeConfig) -> str:
    """A digest of the public config, computed once per config object (every answer record carries it)."""
    held = _HASHES.get(id(config))
    if held is not None and held[0] is config:
        return held[1]
    text = json.dumps(config.public_dict(), sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    _remember(_HASHES, config, digest)
    return digest


def provenance(config: SymoeConfig, **extra: Any) -> dict[str, Any]:
    return {
        "versions": versions(),
        "pool": pool_digest(config),
        "seed": config.seed,
        "config_hash": config_hash(config),
        **extra,
    }
