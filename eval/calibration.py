"""Calibrating the retrieval gate on labelled validation questions (``symoe profile gate``).

Every question is answered by the one pipeline three times (``symoe@never``, ``@always``,
``@auto``: ``eval.runner.evaluate``); the auto run records the gate's features. A grid
search (no gradients) over the weights and threshold then picks the cheapest setting (fewest
retrievals) whose accuracy is within ``tolerance`` points of the best any setting reaches
(never below the better of always and never: those are settings too).
"""

from __future__ import annotations

import itertools

from pydantic import BaseModel

from agents.progress import StageReport
from eval.runner import EvalArgs, evaluate
from orchestrator.config import SymoeConfig
from orchestrator.gate import GateModel, file_digest
from orchestrator.profiles import load_profile
from orchestrator.provenance import pool_digest
from orchestrator.records import GateFeatures

GATE_METHODS = ["symoe@never", "symoe@always", "symoe@auto"]


class CalibrationRow(BaseModel):
    features: GateFeatures
    correct_never: bool
    correct_always: bool
    task: str = ""


def evaluate_gate(model: GateModel, rows: list[CalibrationRow]) -> tuple[float, float]:
    """(accuracy %, retrieval rate %) of the gate on labelled rows."""
    if not rows:
        return 0.0, 0.0
    right = retrieved = 0
    for row in rows:
        go, _ = model.decide(row.features)
        retrieved += go
        right += row.correct_always if go else row.correct_never
    return 100 * right / len(rows), 100 * retrieved / len(rows)


def calibrate(rows: list[CalibrationRow], tolerance: float = 0.5, draft_tokens: int = 6) -> GateModel:
    """Grid search over weights and threshold: the fewest retrievals whose accuracy is within
    ``tolerance`` points of the best accuracy any setting reaches."""
    never = 100 * sum(r.correct_never for r in rows) / len(rows)
    always = 100 * sum(r.correct_always for r in rows) / len(rows)
    candidates: list[tuple[float, float, GateModel]] = []
    for w_r, w_d, w_p in itertools.product([1.0], [0.0, 0.25, 0.5, 1.0], [0.0, 0.25, 0.5, 1.0]):
        probe = GateModel(w_retrieval=w_r, w_draft=w_d, w_profile=w_p, draft_tokens=draft_tokens)
        scores = sorted({probe.score(r.features) for r in rows})
        cuts = [scores[0] - 1e-6] + [(a + b) / 2 for a, b in zip(scores, scores[1:], strict=False)] + [scores[-1]]
        for cut in cuts:
            model = probe.model_copy(update={"threshold": round(cut, 6)})
            acc, rate = evaluate_gate(model, rows)
            candidates.append((acc, rate, model))
    best_acc = max(acc for acc, _, _ in candidates)
    target = max(best_acc, never, always) - tolerance
    # fewest retrievals within the target; then the more accurate; then the first (simplest) setting
    acc, rate, chosen = min((c for c in candidates if c[0] >= target - 1e-9), key=lambda c: (c[1], -c[0]))
    chosen.calibrated = {"rows": len(rows), "accuracy_never": round(never, 2), "accuracy_always": round(always, 2),
                         "accuracy_best_setting": round(best_acc, 2), "accuracy_gated": round(acc, 2),
                         "retrieval_rate": round(rate, 2), "tolerance": tolerance,
                         "tasks": sorted({r.task for r in rows})}
    return chosen


def calibrate_on_validation(config: SymoeConfig, tasks: list[str], seed: int = 0, tolerance: float = 0.5,
                            progress: StageReport | None = None) -> GateModel:
    """Answer the validation questions never/always/auto retrieving, then fit the gate."""
    args = EvalArgs(tasks=tasks, split="validation", seed=seed, methods=GATE_METHODS,
                    output=config.home / "gate-calibration",
                    cache_path=config.home / "cache" / "generations.sqlite")  # shared with profile build
    samples, _ = evaluate(config, args, progress)
    _, profile_file = load_profile(config)
    by = {(s.method, s.question_id): s for s in samples}
    rows = [CalibrationRow(features=s.gate_features, task=s.task,
                           correct_never=by[("symoe@never", s.question_id)].correct,
                           correct_always=by[("symoe@always", s.question_id)].correct)
            for s in samples if s.method == "symoe@auto" and s.gate_features is not None]
    model = calibrate(rows, tolerance=tolerance)
    model.pool = {n: d for n, d in pool_digest(config).items() if n in config.routing_pool}
    model.profile = file_digest(profile_file)
    return model
