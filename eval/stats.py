"""Statistics for reports: an accuracy's standard error and paired-bootstrap intervals.

A claim that one method beats another needs more than a difference of means: on the same
questions, ``paired_interval`` resamples questions (with replacement, seeded) and gives the
95% interval of the difference in points; an interval that contains zero is a tie.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel

DRAWS = 10_000


def standard_error(correct: Sequence[bool]) -> float:
    """Standard error of an accuracy, in points: 100 * sqrt(p (1 - p) / n)."""
    n = len(correct)
    if n == 0:
        return 0.0
    p = sum(correct) / n
    return 100 * math.sqrt(p * (1 - p) / n)


def paired_interval(a: Sequence[bool], b: Sequence[bool], seed: int = 0, draws: int = DRAWS) -> tuple[float, float]:
    """95% bootstrap interval of mean(a) - mean(b) in points, resampling questions in pairs."""
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length ({len(a)} and {len(b)})")
    if not a:
        return 0.0, 0.0
    diffs = np.asarray(a, dtype=np.int8) - np.asarray(b, dtype=np.int8)
    picks = np.random.default_rng(seed).integers(0, len(diffs), size=(draws, len(diffs)))
    means = np.sort(100 * diffs[picks].mean(axis=1))
    return float(means[int(0.025 * draws)]), float(means[int(0.975 * draws) - 1])


class Comparison(BaseModel):
    """A method against a reference on the questions both answered."""

    reference: str
    n: int
    diff: float
    low: float
    high: float
    only_it_right: int
    only_reference_right: int

    @property
    def beats(self) -> bool:
        """The whole 95% interval is above zero."""
        return self.low > 0


def compare(a: Sequence[bool], b: Sequence[bool], reference: str, seed: int = 0) -> Comparison:
    """``a`` (a method's correctness per question) against ``b`` (the reference's, same questions)."""
    low, high = paired_interval(a, b, seed)
    n = len(a)
    diff = 100 * (sum(a) - sum(b)) / n if n else 0.0
    return Comparison(reference=reference, n=n, diff=round(diff, 2), low=round(low, 2), high=round(high, 2),
                      only_it_right=sum(x and not y for x, y in zip(a, b, strict=True)),
                      only_reference_right=sum(y and not x for x, y in zip(a, b, strict=True)))
