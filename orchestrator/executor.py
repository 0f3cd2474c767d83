"""The executor seam: what runs one model's jobs.

``execute`` (in ``orchestrator.pipeline``) groups jobs by model and hands each model's jobs
to an ``Executor``. An executor fills each job's ``generation`` and calls ``done(batch)`` as
every batch finishes. The pipeline's executor is a ``CachingExecutor``
(``orchestrator.caching``) around the one it was given: it reads the generation cache,
stores each batch at once in its ``done`` (a killed run loses at most the batch in flight),
and alone may leave a job unfilled: one another process is generating.

``LocalExecutor`` runs the models of a ``LoadedPool`` in this process. A distributed
executor (one actor per model) or a server's request batcher implements the same three
methods; the stages do not change.

Cancellation: a job carries the cancel flag of whoever wants it (``Job.cancel``; an executor
attaches the calling thread's, ``current_cancel``). ``LocalExecutor`` never starts a job
whose flag is set and hands the flags to the engine, which stops a running generation at
its next token.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from agents.backends import Generation
from agents.backends.base import current_cancel
from agents.errors import SymoeError
from agents.runtime import LoadedPool
from orchestrator.records import Job

BatchDone = Callable[[list[Job]], None]


class ExecutorConfig(BaseModel):
    """Where batch work (``symoe eval``, ``symoe profile build``) runs (``executor:``)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["local", "ray"] = "local"
    address: str | None = Field(default=None, description="Ray cluster: auto or HOST:PORT; none starts a local one")
    max_restarts: int = Field(default=2, ge=0, le=10, description="actor restarts per model after it dies")
    batch_size: int = Field(default=4, ge=1, le=256, description="jobs per call to an actor")


class Executor(Protocol):
    #: True when different models' jobs may run at the same time (``execute`` then hands
    #: each model its jobs from a thread of its own)
    parallel: bool

    def run(self, model: str, jobs: list[Job], done: BatchDone) -> None:
        """Fill every job's generation (a failure is a ``Generation`` with ``error``), calling
        ``done`` with each finished batch."""

    def resident(self) -> list[str]:
        """Models already loaded (they run first, so nothing is reloaded)."""

    def close(self) -> None:
        """Free what the executor holds (actors, workers); the pool is the pipeline's."""


class LocalExecutor:
    """Runs jobs on this process's pool, in the engine's natural batch size.

    With ``keep_loaded=False`` a model is unloaded after each ``run`` (the naive baseline of
    ``bench/batching.py``: a load per call).
    """

    parallel = False  # one process, one memory budget: models run one after another

    def __init__(self, pool: LoadedPool, keep_loaded: bool = True) -> None:
        self.pool = pool
        self.keep_loaded = keep_loaded

    def resident(self) -> list[str]:
        return self.pool.loaded()

    def close(self) -> None:
        pass

    def run(self, model: str, jobs: list[Job], done: BatchDone) -> None:
        attach_cancel(jobs)
        if all(job.cancel is not None and job.cancel.cancelled for job in jobs):  # nobody wants them: no load
            for job in jobs:
                job.generation = Generation.cancelled(model, job.cancel.reason)
            done(jobs)
            return
        try:
            backend = self.pool.get(model)
        except SymoeError as exc:  # a model that cannot load fails its jobs, not the run
            for job in jobs:
                job.generation = Generation.failure(model, str(exc))
            done(jobs)
            return
        size = max(1, backend.preferred_batch)
        streamed = [job for job in jobs if job.on_text is not None]
        batched = [job for job in jobs if job.on_text is None]
        try:
            for job in streamed:  # a caller reads this one as it is produced: it runs alone
                try:
                    job.generation = backend.generate_streaming(job.request, job.on_text,  # type: ignore[arg-type]
                                                                cancel=job.cancel)
                except SymoeError as exc:
                    job.generation = Generation.failure(model, str(exc))
                done([job])
            for lo in range(0, len(batched), size):
                batch = batched[lo:lo + size]
                try:
                    generations = backend.generate([job.request for job in batch], [job.cancel for job in batch])
                except SymoeError as exc:
                    generations = [Generation.failure(model, str(exc)) for _ in batch]
                for job, generation in zip(batch, generations, strict=True):
                    job.generation = generation
                done(batch)
        finally:
            if not self.keep_loaded:
                self.pool.unload(model)


def attach_cancel(jobs: list[Job]) -> None:
    """Give each job without a cancel flag the calling thread's (``current_cancel``)."""
    flag = current_cancel()
    if flag is None:
        return
    for job in jobs:
        if job.cancel is None:
            job.cancel = flag
