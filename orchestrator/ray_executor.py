"""Scale-out on Ray: one actor per model, behind the pipeline's executor seam.

``RayExecutor.run(model, jobs, done)`` sends the model's jobs to that model's actor in
batches (all submitted at once, the actor works through them in order) and calls ``done``
as each batch comes back, so the driver stays the generation cache's only writer and a
killed run resumes exactly as a local one does. An actor is created with the resources its
expert declares (``num_cpus``, ``num_gpus``, ``memory_gb``), builds its backend from the
expert spec on its node (model files must exist there, or come from the same packages),
loads it once and keeps it. Actors of different models run at once where resources allow.

Faults: an actor that dies (killed, out of memory) is replaced, at most ``max_restarts``
times per model, and the jobs it had not returned are sent again one at a time; a job that
was out both times its actor died fails that expert's answer for that question (a failed
generation, as a failing expert locally). Finished batches are never redone.
"""

from __future__ import annotations

import math
import os
import socket
import threading
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import RayActorError, RaySystemError, WorkerCrashedError

from agents.backends import Generation, GenerationRequest
from agents.errors import SymoeError
from agents.pool import ExpertSpec
from agents.runtime import build_backend
from orchestrator.config import SymoeConfig
from orchestrator.executor import BatchDone
from orchestrator.records import Job

DIED = (RayActorError, WorkerCrashedError, RaySystemError)


class ModelActor:
    """Holds one loaded model in a Ray worker process."""

    def __init__(self, spec_json: str, home: str) -> None:
        spec = ExpertSpec.model_validate_json(spec_json)
        threads = max(1, math.ceil(spec.num_cpus or 1))  # llama.cpp: as many threads as cores reserved
        spec = spec.model_copy(update={"params": {"n_threads": threads, **spec.params}})
        self.backend = build_backend(spec, Path(home))
        self.backend.load()

    def generate(self, requests: list[str]) -> list[str]:
        gens = self.backend.generate([GenerationRequest.model_validate_json(r) for r in requests])
        return [g.model_dump_json() for g in gens]


def connect(address: str | None, num_cpus: int | None = None) -> None:
    """Join the cluster at ``address`` (``auto``, ``HOST:PORT``), or start a local one."""
    if ray.is_initialized():
        return
    if address and address != "auto":
        reachable(address)
    try:
        if address:
            ray.init(address=address, log_to_driver=False, include_dashboard=False)
        else:
            ray.init(num_cpus=num_cpus or os.cpu_count() or 2, log_to_driver=False, include_dashboard=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SymoeError(f"cannot reach the Ray cluster at {address or 'a new local one'} ({first}); start one with "
                         "`ray start --head` or give --ray-address HOST:PORT") from None


def reachable(address: str, timeout: float = 3.0) -> None:
    """Fail in one line when nothing listens at HOST:PORT (``ray.init`` would wait minutes)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise SymoeError(f"--ray-address {address!r} is not HOST:PORT (or auto)")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise SymoeError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); start one with "
                         "`ray start --head` there, or give the right --ray-address") from None


class RayExecutor:
    """The executor seam on a Ray cluster: one actor per model."""

    parallel = True  # actors of different models run side by side where resources allow

    def __init__(self, config: SymoeConfig, address: str | None = None, max_restarts: int = 2,
                 batch_size: int = 4, num_cpus: int | None = None) -> None:
        connect(address, num_cpus)
        self.config = config
        self.max_restarts = max_restarts
        self.batch_size = max(1, batch_size)
        self._actors: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.loads: list[str] = []
        self.restarts: dict[str, int] = {}

    def resident(self) -> list[str]:
        return list(self._actors)

    def actor(self, model: str) -> Any:
        with self._lock:
            return self._actor(model)

    def _actor(self, model: str) -> Any:
        if model not in self._actors:
            spec = self.config.expert(model)
            options: dict[str, Any] = {"num_cpus": spec.num_cpus, "num_gpus": spec.num_gpus,
                                       "name": None, "max_restarts": 0}
            if spec.memory_gb:
                options["memory"] = int(spec.memory_gb * 2**30)
            remote = ray.remote(ModelActor).options(**options)
            self._actors[model] = remote.remote(spec.model_dump_json(), str(self.config.home))
            self.loads.append(model)
        return self._actors[model]

    def _replace(self, model: str) -> bool:
        with self._lock:
            return self._replace_locked(model)

    def _replace_locked(self, model: str) -> bool:
        used = self.restarts.get(model, 0)
        self._actors.pop(model, None)
        if used >= self.max_restarts:
            return False
        self.restarts[model] = used + 1
        return True

    def run(self, model: str, jobs: list[Job], done: BatchDone) -> None:
        todo = [jobs[i:i + self.batch_size] for i in range(0, len(jobs), self.batch_size)]
        deaths: dict[int, int] = {}  # id(job) -> times its actor died while it was sent
        while todo:
            try:
                actor = self.actor(model)
            except SymoeError as exc:
                for batch in todo:
                    self._fail(batch, str(exc), done)
                return
            pending = {actor.generate.remote([j.request.model_dump_json() for j in b]): b for b in todo}
            todo, lost = [], []
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                batch = pending.pop(ready[0])
                try:
                    texts = ray.get(ready[0])
                except DIED:
                    lost.extend(batch)
                    continue
                except Exception as exc:  # noqa: BLE001 - an engine error inside the actor fails its jobs
                    self._fail(batch, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", done)
                    continue
                for job, text in zip(batch, texts, strict=True):
                    job.generation = Generation.model_validate_json(text)
                done(batch)
            if not lost:
                return
            for job in lost:
                deaths[id(job)] = deaths.get(id(job), 0) + 1
            if not self._replace(model):
                self._fail(lost, f"the {model} actor died {self.max_restarts + 1} times", done)
                return
            # resend what was lost one job at a time; a job that was out both times the actor died fails
            for job in lost:
                if deaths[id(job)] >= 2:
                    self._fail([job], f"the {model} actor died twice while running this job", done)
                else:
                    todo.append([job])

    @staticmethod
    def _fail(batch: list[Job], why: str, done: BatchDone) -> None:
        for job in batch:
            job.generation = Generation.failure(job.model, why)
        done(batch)

    def close(self) -> None:
        for actor in self._actors.values():
            ray.kill(actor)
        self._actors.clear()
