"""The request batcher behind the pipeline's executor seam.

Every request runs its own pipeline stages in its own thread. Whenever one of them hands a
model's jobs to the executor, ``BatchingExecutor`` holds them for ``window_ms``; jobs that
other requests hand over for the same model meanwhile join them, and the whole group runs
as one call of the inner executor (one batch per model, the model loaded once). Calls for
one model never overlap; different models' batches may. ``batches`` and ``jobs`` count what
ran, so a load test can show batches < requests.

A model the health tracker has cooled down gets its jobs failed at once (no waiting on a
dead server); every finished batch is reported to the tracker.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from agents.backends import Generation
from orchestrator.executor import BatchDone, Executor
from orchestrator.records import Job
from orchestrator.server.health import Health


@dataclass
class _Pending:
    jobs: list[Job]
    done: BatchDone
    finished: threading.Event = field(default_factory=threading.Event)


class BatchingExecutor:
    """Gathers concurrent callers' jobs per model for a few milliseconds, runs them together."""

    parallel = False  # its callers are concurrent already

    def __init__(self, inner: Executor, window_ms: float, health: Health | None = None) -> None:
        self.inner = inner
        self.window = window_ms / 1000.0
        self.health = health
        self._lock = threading.Lock()
        self._queues: dict[str, list[_Pending]] = {}
        self._model_locks: dict[str, threading.Lock] = {}
        self.batches: Counter[str] = Counter()
        self.jobs: Counter[str] = Counter()

    def resident(self) -> list[str]:
        return self.inner.resident()

    def close(self) -> None:
        self.inner.close()

    def run(self, model: str, jobs: list[Job], done: BatchDone) -> None:
        if self.health is not None and (why := self.health.cooled(model)) is not None:
            for job in jobs:
                job.generation = Generation.failure(model, why)
            done(jobs)
            return
        pending = _Pending(jobs, done)
        with self._lock:
            queue = self._queues.setdefault(model, [])
            queue.append(pending)
            leader = len(queue) == 1
            model_lock = self._model_locks.setdefault(model, threading.Lock())
        if not leader:
            pending.finished.wait()
            return
        time.sleep(self.window)
        with model_lock:
            with self._lock:
                group = self._queues.pop(model, [])
            self._run_group(model, group)

    def _run_group(self, model: str, group: list[_Pending]) -> None:
        owner = {id(job): p for p in group for job in p.jobs}
        everything = [job for p in group for job in p.jobs]

        def finished(batch: list[Job]) -> None:
            if self.health is not None:
                self.health.observe(model, [job.generation for job in batch if job.generation is not None])
            by_owner: dict[int, list[Job]] = {}
            for job in batch:
                by_owner.setdefault(id(owner[id(job)]), []).append(job)
            for p in group:
                if id(p) in by_owner:
                    p.done(by_owner[id(p)])

        try:
            with self._lock:
                self.batches[model] += 1
                self.jobs[model] += len(everything)
            self.inner.run(model, everything, finished)
        finally:
            for p in group:
                missing = [job for job in p.jobs if job.generation is None]
                for job in missing:
                    job.generation = Generation.failure(model, "the batch stopped before this job ran")
                if missing:
                    p.done(missing)
                p.finished.set()
