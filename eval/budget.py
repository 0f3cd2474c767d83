"""Fitting the cost/quality knob to a token target (``symoe profile calibrate``).

The ``budget`` method's quality Q trades accuracy for cost. On the profile's graded
validation questions, cross-fitted (each fold routed by clusters built on the other folds,
so no question scores its own route), every Q of a grid is replayed: each held-out question
takes the option its cluster chooses at Q, and costs what its experts' answers cost when
they were profiled (prompt + generated tokens, as ``symoe eval`` counts), and is right when
that expert, or the vote of those experts, was: ``RoutingOption.replay`` asks the pipeline's
own rules (``orchestrator.aggregate``: ``majority`` for a vote, ``accepted`` for a sure-first
letter) about the recorded answers. The curve gives the Q whose mean tokens per
question lies nearest the target; it is written into the profile, where ``budget`` reads it
when the config sets no ``budget.quality``. No model runs: the profile holds the outcomes.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime

import numpy as np

from agents.embedder import encode
from agents.errors import SymoeError
from orchestrator.clusters import ClusterRouter
from orchestrator.config import SymoeConfig
from orchestrator.profiles import BudgetCalibration, Profile, QualityPoint

GRID = [round(i / 100, 2) for i in range(101)]


def quality_curve(profile: Profile, config: SymoeConfig, folds: int = 5,
                  vectors: np.ndarray | None = None) -> list[QualityPoint]:
    """Mean tokens per question and accuracy of ``budget`` at every quality of the grid,
    cross-fitted over ``folds`` folds of the profile's graded questions."""
    examples = [e for e in profile.examples if e.correct]
    if len(examples) < 2 * folds:
        raise SymoeError(f"the profile grades {len(examples)} validation questions; calibrating with {folds} folds "
                         f"needs at least {2 * folds}: rebuild it with more (`symoe profile build`)")
    if not any(e.prompt_tokens for e in examples):
        raise SymoeError("the profile records no prompt tokens per question (it predates them): rebuild it with "
                         "`symoe profile build` (cached generations are reused)")
    vectors = encode([e.question for e in examples], config.embedding) if vectors is None else vectors
    order = list(range(len(examples)))
    random.Random(config.seed).shuffle(order)
    fold_of = {i: n % folds for n, i in enumerate(order)}
    experts = list(profile.experts)
    tokens = np.zeros(len(GRID))
    right = np.zeros(len(GRID))
    for fold in range(folds):
        train = [i for i in order if fold_of[i] != fold]
        held = [i for i in order if fold_of[i] == fold]
        router = ClusterRouter([examples[i] for i in train], vectors[train], config.clusters, seed=config.seed,
                               teams=config.budget.team, sure_first=config.budget.sure_first)
        for i, cluster in zip(held, router.nearest(vectors[held]), strict=True):
            x = examples[i]
            for g, quality in enumerate(GRID):
                option = cluster.choose(quality, experts)
                if option is None:
                    continue
                cost, correct = option.replay(x, cluster.accuracy)
                tokens[g] += cost
                right[g] += correct
    n = len(examples)
    return [QualityPoint(quality=q, tokens_per_question=round(float(t) / n, 1), accuracy=round(100 * float(r) / n, 1))
            for q, t, r in zip(GRID, tokens, right, strict=True)]


def calibrate_quality(profile: Profile, config: SymoeConfig, target: float, folds: int = 5,
                      vectors: np.ndarray | None = None) -> BudgetCalibration:
    """The quality whose cross-fitted tokens per question lie nearest ``target`` (of those,
    the highest quality), with the curve it was read from."""
    curve = quality_curve(profile, config, folds, vectors)
    best = min(curve, key=lambda p: (abs(p.tokens_per_question - target), -p.quality))
    return BudgetCalibration(quality=best.quality, target_tokens_per_question=target,
                             predicted_tokens_per_question=best.tokens_per_question,
                             predicted_accuracy=best.accuracy, folds=folds, curve=curve,
                             created=datetime.now(UTC).isoformat(timespec="seconds"))
