"""The retrieval gate: retrieve only when the experts' own knowledge is not enough (ExpertRAG).

Three gradient-free signals per query, all in [0, 1] or [-1, 1]:

- ``profile_strength``: how often the best recruited expert was right on the query's skills
  in validation (Laplace-smoothed right / answered), else its overall accuracy;
- ``draft_confidence``: mean top-1 minus top-2 token probability over a short greedy draft
  of the strongest recruited expert (TARG-style margin);
- ``retrieval_score``: cosine similarity of the best hit in the index.

``score = w_r * retrieval_score - w_d * draft_confidence - w_p * profile_strength``; the gate
retrieves when ``score > threshold``. Weights and threshold are calibrated on labelled
validation questions by grid search (no gradients): the cheapest setting (fewest retrievals)
whose accuracy is within ``tolerance`` points of the best setting's (which is at least the
better of always- and never-retrieve).
"""

from __future__ import annotations

import itertools
import json
import math
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, Field

from agents.backends import Generation
from orchestrator.profiles import Profile


class HitLike(Protocol):
    score: float
    text: str


class RetrieverLike(Protocol):
    def search(self, query: str, k: int = ...) -> list[Any]: ...


class GateFeatures(BaseModel):
    profile_strength: float
    draft_confidence: float
    retrieval_score: float


class GateModel(BaseModel):
    w_retrieval: float = 1.0
    w_draft: float = 0.0
    w_profile: float = 0.0
    threshold: float = 0.5
    draft_tokens: int = 6
    calibrated: dict[str, Any] = Field(default_factory=dict)

    def score(self, f: GateFeatures) -> float:
        return (self.w_retrieval * f.retrieval_score - self.w_draft * f.draft_confidence
                - self.w_profile * f.profile_strength)

    def decide(self, f: GateFeatures) -> tuple[bool, str]:
        s = self.score(f)
        why = (f"gate score {s:+.3f} {'>' if s > self.threshold else '<='} threshold {self.threshold:+.3f} "
               f"(retrieval {f.retrieval_score:.2f} x {self.w_retrieval:g}, draft confidence "
               f"{f.draft_confidence:.2f} x {self.w_draft:g}, profile strength {f.profile_strength:.2f} x "
               f"{self.w_profile:g})")
        return s > self.threshold, why


def profile_strength(profile: Profile, experts: list[str], skills: list[str]) -> float:
    best = 0.0
    for name in experts:
        prof = profile.experts.get(name)
        if prof is None:
            continue
        counts = [prof.skills[s] for s in skills if s in prof.skills] or list(prof.tasks.values())
        right = sum(c.right for c in counts)
        n = sum(c.n for c in counts)
        best = max(best, (right + 1) / (n + 2))
    return best


def draft_confidence(gen: Generation) -> float:
    """Mean (p1 - p2) over the draft's tokens; 0 when the engine gave no log-probs."""
    if not gen.token_logprobs:
        return 0.0
    margins = []
    for tok in gen.token_logprobs:
        probs = sorted((math.exp(v) for v in tok.top.values()), reverse=True) or [math.exp(tok.logprob)]
        margins.append(probs[0] - (probs[1] if len(probs) > 1 else 0.0))
    return sum(margins) / len(margins)


def format_passages(hits: list[Any]) -> str:
    lines = []
    for i, hit in enumerate(hits, 1):
        title = getattr(hit, "title", None) or getattr(hit, "source", "")
        lines.append(f"[{i}] ({title}) {hit.text.strip()}")
    return "\n".join(lines)


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
    ``tolerance`` points of the best accuracy any setting reaches (which is never below the
    better of always and never: those are settings too)."""
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


def default_gate_path() -> Path:
    return Path(str(resources.files("orchestrator").joinpath("default_gate.json")))


def load_gate(path: Path | None, home: Path | None = None) -> GateModel:
    """The gate at ``path``, else ``<home>/gate.json``, else the shipped default, else uncalibrated."""
    user = home / "gate.json" if home else None
    for candidate in [p for p in (path, user, default_gate_path()) if p is not None]:
        if candidate.exists():
            return GateModel.model_validate(json.loads(candidate.read_text()))
    return GateModel()


def save_gate(model: GateModel, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(model.model_dump_json(indent=1))
