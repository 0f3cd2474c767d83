"""The request batcher behind the pipeline's executor seam.

Every request runs its own pipeline stages in its own thread. Whenever one of them hands a
model's jobs to the executor, ``BatchingExecutor`` queues them for that model; a runner
thread per model (started when jobs arrive, gone when its queue is empty) waits
``window_ms``, takes everything queued for the model and runs it as one call of the inner
executor (one batch per model, the model loaded once). Calls for one model never overlap;
different models' batches may. ``batches`` and ``jobs`` count what ran, so a load test can
show batches < requests.

Identical jobs (the same model and request) that several requests queued run once, and
``shared`` counts the copies answered that way. Cancellation: each job carries its
request's cancel flag (``Job.cancel``). A job runs with a flag set only when every request
that wants it has cancelled (``Cancel.all_of``), so shared work goes on while anyone still
waits for it; a request whose every job is cancelled stops waiting at once (its queued jobs
never start, a running one stops at its next token) and what finishes later is not handed
to it.

A model the health tracker has cooled down gets its jobs failed at once (no waiting on a
dead server); every finished batch is reported to the tracker (cancelled generations are
not failures of the model).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from agents.backends import Generation
from agents.backends.base import Cancel
from orchestrator.executor import BatchDone, Executor, attach_cancel
from orchestrator.records import Job
from orchestrator.server.health import Health

log = logging.getLogger("symoe.serve")

#: how often a waiting request looks at its cancel flags
POLL_S = 0.05


@dataclass
class _Pending:
    jobs: list[Job]
    done: BatchDone
    finished: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    abandoned: bool = False  # its caller stopped waiting (every job cancelled): hand it nothing more

    def deliver(self, jobs: list[tuple[Job, Generation]]) -> None:
        """Fill the jobs and tell the caller, unless it has stopped waiting."""
        with self.lock:
            if self.abandoned or not jobs:
                return
            for job, generation in jobs:
                job.generation = generation
            self.done([job for job, _ in jobs])

    def close(self, model: str) -> None:
        """The group ran: fill what it never handed back, release the caller."""
        with self.lock:
            if not self.abandoned:
                missing = [job for job in self.jobs if job.generation is None]
                for job in missing:
                    job.generation = Generation.failure(model, "the batch stopped before this job ran")
                if missing:
                    self.done(missing)
            self.finished.set()

    def abandon(self, model: str) -> bool:
        """Stop waiting (every job cancelled): fill the unfilled jobs as cancelled, now."""
        with self.lock:
            if self.finished.is_set():
                return False
            self.abandoned = True
            missing = [job for job in self.jobs if job.generation is None]
            for job in missing:
                job.generation = Generation.cancelled(model, job.cancel.reason if job.cancel else "")
            if missing:
                self.done(missing)
            self.finished.set()
            return True


class BatchingExecutor:
    """Gathers concurrent callers' jobs per model for a few milliseconds, runs them together."""

    parallel = False  # its callers are concurrent already

    def __init__(self, inner: Executor, window_ms: float, health: Health | None = None) -> None:
        self.inner = inner
        self.window = window_ms / 1000.0
        self.health = health
        self._lock = threading.Lock()
        self._queues: dict[str, list[_Pending]] = {}
        self._runners: dict[str, threading.Thread] = {}
        self.batches: Counter[str] = Counter()
        self.jobs: Counter[str] = Counter()
        self.shared: Counter[str] = Counter()

    def resident(self) -> list[str]:
        return self.inner.resident()

    def close(self) -> None:
        self.inner.close()

    def busy(self) -> list[str]:
        """Models whose runner is working now (jobs queued or running)."""
        with self._lock:
            return [m for m, t in self._runners.items() if t.is_alive()]

    def run(self, model: str, jobs: list[Job], done: BatchDone) -> None:
        attach_cancel(jobs)
        if self.health is not None and (why := self.health.cooled(model)) is not None:
            for job in jobs:
                job.generation = Generation.failure(model, why)
            done(jobs)
            return
        pending = _Pending(jobs, done)
        with self._lock:
            self._queues.setdefault(model, []).append(pending)
            if model not in self._runners:
                runner = threading.Thread(target=self._runner, args=(model,), daemon=True,
                                          name=f"symoe-batch-{model}")
                self._runners[model] = runner
                runner.start()
        flags = [job.cancel for job in jobs]
        while not pending.finished.wait(POLL_S):
            if all(f is not None and f.cancelled for f in flags) and pending.abandon(model):
                return

    def _runner(self, model: str) -> None:
        while True:
            time.sleep(self.window)
            with self._lock:
                group = [p for p in self._queues.pop(model, []) if not p.abandoned]
                if not group and not self._queues.get(model):
                    del self._runners[model]
                    return
            try:
                self._run_group(model, group)
            except Exception as exc:  # noqa: BLE001 - its callers got failures; the runner serves on
                log.error("the batch for %s failed: %s: %s", model, type(exc).__name__, exc)

    def _run_group(self, model: str, group: list[_Pending]) -> None:
        # one proxy job per distinct request: identical jobs of several callers run once
        wanted: dict[str, list[tuple[_Pending, Job]]] = {}
        for p in group:
            for job in p.jobs:
                key = f"{job.model}\n{job.request.cache_key()}" if job.on_text is None else f"stream:{id(job)}"
                wanted.setdefault(key, []).append((p, job))
        proxies: dict[int, list[tuple[_Pending, Job]]] = {}
        everything: list[Job] = []
        for owners in wanted.values():
            first = owners[0][1]
            proxy = Job(model=first.model, request=first.request, query_id=first.query_id, on_text=first.on_text,
                        cancel=Cancel.all_of([job.cancel for _, job in owners]))
            proxies[id(proxy)] = owners
            everything.append(proxy)

        def finished(batch: list[Job]) -> None:
            if self.health is not None:
                self.health.observe(model, [job.generation for job in batch if job.generation is not None])
            by_owner: dict[int, tuple[_Pending, list[tuple[Job, Generation]]]] = {}
            for proxy in batch:
                assert proxy.generation is not None
                for p, job in proxies[id(proxy)]:
                    by_owner.setdefault(id(p), (p, []))[1].append((job, proxy.generation))
            for p, filled in by_owner.values():
                p.deliver(filled)

        try:
            with self._lock:
                self.batches[model] += 1
                self.jobs[model] += len(everything)
                self.shared[model] += sum(len(o) - 1 for o in wanted.values())
            self.inner.run(model, everything, finished)
        finally:
            for p in group:
                p.close(model)
