"""The generation cache as a wrapper around an executor (as lm-eval's ``CachingLM`` wraps a
model once): ``CachingExecutor(inner, cache, key)`` is itself an ``Executor``.

For each model's jobs it hands it, it reads the ones the cache holds, claims the rest in a
cache shared with other processes (``GenerationCache.claim``), runs the claimed ones on the
inner executor and stores every finished batch at once (a killed run loses at most the batch
in flight), then releases its claims. A job another live process has claimed is left
without a generation: that process is generating it, and the caller (``execute``) hands it
again after its other models, when it is read from the cache or, its owner gone, claimed.
``stats`` counts what it did over its life.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from pydantic import BaseModel, Field, PrivateAttr

from agents.backends import Generation
from agents.cache import GenerationCache
from orchestrator.executor import BatchDone, Executor
from orchestrator.records import Job

#: seconds between looks at keys another process is generating, when nothing else moved
POLL_SECONDS = 0.5


class ExecutionStats(BaseModel):
    """What the executor did over a pipeline's life: distinct jobs, generated now, from cache."""

    needed: int = 0
    generated: int = 0
    from_cache: int = 0
    failed: int = 0
    failed_by_model: dict[str, int] = Field(default_factory=dict)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def add(self, *, needed: int = 0, generated: int = 0, from_cache: int = 0, failed: tuple[str, ...] = ()) -> None:
        """Count jobs (``failed``: the model of each failed generation); safe from any thread."""
        with self._lock:
            self.needed += needed
            self.generated += generated
            self.from_cache += from_cache
            self.failed += len(failed)
            for model in failed:
                self.failed_by_model[model] = self.failed_by_model.get(model, 0) + 1


def checked(generation: Generation) -> Generation:
    """An empty reply is a failure, not an answer."""
    if generation.ok and not generation.text.strip():
        return generation.model_copy(update={"error": "empty generation"})
    return generation


class CachingExecutor:
    """An executor whose jobs are read from, claimed in and stored to a generation cache
    (``cache=None``: every job runs; an empty reply still counts as a failure)."""

    def __init__(self, inner: Executor, cache: GenerationCache | None, key: Callable[[Job], str]) -> None:
        self.inner = inner
        self.cache = cache
        self.key = key
        self.stats = ExecutionStats()
        self.parallel = bool(getattr(inner, "parallel", False))
        self._left: set[str] = set()  # keys left to another process, not yet read
        self._lock = threading.Lock()

    def resident(self) -> list[str]:
        return self.inner.resident()

    def close(self) -> None:
        self.inner.close()

    def run(self, model: str, jobs: list[Job], done: BatchDone) -> None:
        """Fill the jobs the cache holds, then run the ones this process may claim (``done``
        sees each batch, read or stored); jobs another live process claimed stay unfilled."""
        keyed = {self.key(job): job for job in jobs}  # distinct requests: the caller ran identical ones once
        with self._lock:
            self.stats.add(needed=sum(k not in self._left for k in keyed))
        cache = self.cache
        missing = self._read(keyed, list(keyed), done)
        mine = cache.claim(missing) if cache is not None else missing
        try:
            todo = self._read(keyed, mine, done) if cache is not None else mine  # stored meanwhile elsewhere
            if todo:
                stored = self._storing(cache, keyed, done)
                self.inner.run(model, [keyed[k] for k in todo], stored)
                lost = [keyed[k] for k in todo if keyed[k].generation is None]  # never handed back: not run
                for job in lost:
                    job.generation = Generation.failure(model, "not run")
                if lost:
                    stored(lost)
        finally:
            if cache is not None:
                cache.release(mine)
        self._note_left(keyed)

    def _read(self, keyed: dict[str, Job], keys: list[str], done: BatchDone) -> list[str]:
        """Fill the keys the cache holds (a streamed job gets its text at once); return the others."""
        missing, found = [], []
        for key in keys:
            cached = self.cache.get(key) if self.cache is not None else None
            if cached is None:
                missing.append(key)
                continue
            job = keyed[key]
            job.generation, job.cached = cached, True
            if job.on_text is not None and cached.text:
                job.on_text(cached.text)
            found.append(job)
        if found:
            self.stats.add(from_cache=len(found))
            done(found)
        return missing

    def _storing(self, cache: GenerationCache | None, keyed: dict[str, Job], done: BatchDone) -> BatchDone:
        """``done`` after each finished batch is checked, stored and counted."""
        key_of = {id(job): key for key, job in keyed.items()}

        def stored(batch: list[Job]) -> None:
            for job in batch:
                assert job.generation is not None
                job.generation = checked(job.generation)
                if cache is not None:
                    cache.put(key_of[id(job)], job.model, job.generation)
            self.stats.add(generated=len(batch),
                           failed=tuple(j.model for j in batch if j.generation is not None and not j.generation.ok))
            if cache is not None:
                cache.touch()
            done(batch)
        return stored

    def _note_left(self, keyed: dict[str, Job]) -> None:
        """Remember the keys left to another process; when this call moved none of them and all
        were left before, wait a moment before the caller looks again."""
        left = {k for k, job in keyed.items() if job.generation is None}
        with self._lock:
            again = bool(left) and len(left) == len(keyed) and left <= self._left
            self._left.difference_update(keyed)
            self._left.update(left)
        if again:
            time.sleep(POLL_SECONDS)
