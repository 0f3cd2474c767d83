"""Health-aware fallbacks: an expert that fails ``failures`` times in a row is cooled down
for ``cooldown_s`` seconds: it is left out of recruitment, its jobs fail at once instead of
waiting on it, and ``/health`` and ``/metrics`` show it. The first success clears its count.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from agents.backends import Generation


class Health:
    def __init__(self, failures: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.failures = failures
        self.cooldown_s = cooldown_s
        self.clock = clock
        self._lock = threading.Lock()
        self._streak: dict[str, int] = {}
        self._until: dict[str, float] = {}
        self.failed: dict[str, int] = {}
        self.cooldowns: dict[str, int] = {}

    def observe(self, model: str, generations: list[Generation]) -> None:
        with self._lock:
            for gen in generations:
                if gen.ok:
                    self._streak[model] = 0
                    continue
                if gen.was_cancelled or gen.error and gen.error.startswith("cooled down"):
                    continue  # its caller gave up, or it was never tried: not the model's failure
                self.failed[model] = self.failed.get(model, 0) + 1
                self._streak[model] = self._streak.get(model, 0) + 1
                if self._streak[model] >= self.failures and not self._cooling(model):
                    self._until[model] = self.clock() + self.cooldown_s
                    self.cooldowns[model] = self.cooldowns.get(model, 0) + 1

    def _cooling(self, model: str) -> bool:
        until = self._until.get(model)
        if until is None:
            return False
        if self.clock() >= until:  # the cooldown is over: it gets another chance
            del self._until[model]
            self._streak[model] = 0
            return False
        return True

    def cooled(self, model: str) -> str | None:
        """Why the model is out now, or None when it may be used."""
        with self._lock:
            if not self._cooling(model):
                return None
            left = self._until[model] - self.clock()
            return (f"cooled down after {self.failures} failures in a row; "
                    f"left out for another {left:.0f} s")

    def cooling(self) -> dict[str, float]:
        """Cooled-down experts and the seconds each has left."""
        with self._lock:
            return {m: round(until - self.clock(), 1) for m, until in list(self._until.items()) if self._cooling(m)}

    def available(self, experts: dict[str, str]) -> Callable[[], set[str]]:
        """A function giving the experts (each mapped to the model that runs it) that may be
        recruited now: a cooled-down model takes every expert on it out."""
        return lambda: {e for e, model in experts.items() if self.cooled(model) is None}
