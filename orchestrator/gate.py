"""The retrieval gate: retrieve only when the experts' own knowledge is not enough (ExpertRAG).

Three gradient-free signals per query, all in [0, 1] or [-1, 1]:

- ``profile_strength``: how often the best recruited expert was right on the query's skills
  in validation (Laplace-smoothed right / answered), else its overall accuracy;
- ``draft_confidence``: mean top-1 minus top-2 token probability over a short greedy draft
  of the strongest recruited expert (TARG-style margin);
- ``retrieval_score``: cosine similarity of the best hit in the index.

``score = w_r * retrieval_score - w_d * draft_confidence - w_p * profile_strength``; the gate
retrieves when ``score > threshold``. Weights and threshold are calibrated on labelled
validation questions (``eval.calibration``, ``symoe profile gate``); this module owns the
model, its features and its file.
"""

from __future__ import annotations

import hashlib
import json
import math
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, Field, ValidationError

from agents.backends import Generation
from agents.errors import SymoeError
from orchestrator.config import SymoeConfig
from orchestrator.profiles import Profile, load_profile
from orchestrator.provenance import pool_digest
from orchestrator.records import GateFeatures
from retrieval.records import Hit


class RetrieverLike(Protocol):
    def search(self, query: str, k: int = ...) -> list[Hit]: ...


class GateModel(BaseModel):
    w_retrieval: float = 1.0
    w_draft: float = 0.0
    w_profile: float = 0.0
    threshold: float = 0.5
    draft_tokens: int = 6
    calibrated: dict[str, Any] = Field(default_factory=dict)
    #: what it was calibrated for: each routed expert's identity (``pool_digest``) and the
    #: digest of the profile file whose strengths it read (None: not recorded)
    pool: dict[str, str] | None = None
    profile: str | None = None

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


def default_gate_path() -> Path:
    return Path(str(resources.files("orchestrator").joinpath("default_gate.json")))


def gate_path(path: Path | None, home: Path | None = None) -> Path | None:
    """Where the gate comes from: ``path``, else ``<home>/gate.json``, else the shipped default
    (None: none exists, the gate is uncalibrated)."""
    user = home / "gate.json" if home else None
    if path is not None:
        return path
    return next((p for p in (user, default_gate_path()) if p is not None and p.exists()), None)


def file_digest(path: Path) -> str:
    """The first 16 hex digits of a file's sha256 (a profile's, as a gate records it)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def gate_mismatch(gate: GateModel, where: Path | None, pool: dict[str, str], profile: Path | None) -> str | None:
    """One line when the gate was calibrated for another pool (``pool``: the routed experts'
    identities now) or another profile file; None when it matches or records nothing to compare
    with profile-wise."""
    name = str(where) if where is not None else "the retrieval gate"
    fix = "recalibrate it for this pool: `symoe profile gate`"
    if gate.pool is None:
        return None if where is None else f"retrieval gate {name} records no pool it was calibrated for; {fix}"
    missing = [n for n in pool if n not in gate.pool]
    changed = [n for n in pool if n in gate.pool and gate.pool[n] != pool[n]]
    if missing or changed:
        what = (f"experts {', '.join(missing)} were not in it" if missing
                else f"experts {', '.join(changed)} had other model files")
        return f"retrieval gate {name} was calibrated for another pool ({what}); {fix}"
    if gate.profile is not None and profile is not None and profile.exists() and file_digest(profile) != gate.profile:
        return f"retrieval gate {name} was calibrated with another profile than {profile}; {fix}"
    return None


def gate_warning(config: SymoeConfig, profile_path: Path | None = None) -> str | None:
    """One line when the gate this config's routers would use (``retrieval.mode: auto``) was
    calibrated for another pool or profile (``profile_path``: a profile given instead of the
    config's); None when it matches or is not used."""
    if config.retrieval.mode != "auto":
        return None
    where = gate_path(config.retrieval.gate, config.home)
    try:
        gate = load_gate(config.retrieval.gate, config.home)
        _, profile = load_profile(config, profile_path)
    except SymoeError:  # an unreadable gate or no usable profile: asking says so itself
        return None
    pool = {n: d for n, d in pool_digest(config).items() if n in config.routing_pool}
    return gate_mismatch(gate, where, pool, profile)


def load_gate(path: Path | None, home: Path | None = None) -> GateModel:
    """The gate at ``path``, else ``<home>/gate.json``, else the shipped default, else uncalibrated."""
    where = gate_path(path, home)
    if where is None:
        return GateModel()
    if not where.exists():  # only a named path can be missing
        raise SymoeError(f"no retrieval gate at {path}; calibrate one with `symoe profile gate -o {path}`")
    try:
        return GateModel.model_validate(json.loads(where.read_text()))
    except (OSError, ValueError, ValidationError) as exc:
        reason = str(exc).splitlines()[0][:120]
        raise SymoeError(f"retrieval gate {where} is unreadable ({reason}); recalibrate it with "
                         f"`symoe profile gate -o {where}` or delete it") from None


def save_gate(model: GateModel, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(model.model_dump_json(indent=1))
    tmp.replace(path)
