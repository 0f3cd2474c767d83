"""Recruitment: from a query's skills and the profiles to k expert slots (pure functions).

As in Symbolic-MoE: local suitability of expert m = sum of m's skill scores over the query's
skills; global strength = competence shifted positive, raised to 1/T and normalised; weight =
local x global over experts with positive local score. Slots are drawn by weight under a seed.
symoe's changes: a second slot for the same expert is an extra *sample* at temperature > 0
(never a repeated greedy call), or is disallowed (``allow_samples=False``: distinct experts);
an adaptive k from the weights' effective number of experts (one dominant expert -> fewer
slots, flat weights -> more); and a query with no known skill falls back to global strength.

Recruitment is cost-aware in two ways. An expert whose method cannot produce the query's
answer format is not in ``profiles`` at all (the pipeline leaves it out: no program for an
open factual question). And an expert that cannot help with the query's skills is not drawn:
only experts with a positive local score are, and when none has one, only those of the
highest local score (the least often wrong on these skills, e.g. the direct answer on a
history question the program and the chain of thought got wrong more often), never every
expert shifted to a positive weight, which paid for a team no better than its best member.
"""

from __future__ import annotations

import math

import numpy as np

from orchestrator.config import RecruitConfig
from orchestrator.profiles import ExpertProfile
from orchestrator.records import Recruit, Recruitment, Slot


def global_strengths(profiles: dict[str, ExpertProfile], temperature: float) -> dict[str, float]:
    raw = {m: float(p.global_competence) for m, p in profiles.items()}
    low = min(raw.values())
    if low <= 0:
        raw = {m: v - low + 1 for m, v in raw.items()}
    powered = {m: v ** (1.0 / temperature) for m, v in raw.items()}
    total = sum(powered.values())
    return {m: v / total for m, v in powered.items()}


def recruit_weights(skills: list[str], profiles: dict[str, ExpertProfile],
                    temperature: float) -> tuple[dict[str, float], dict[str, float], dict[str, float], str]:
    """(weights, local, global) over the pool, normalised to sum 1, and the reason."""
    strengths = global_strengths(profiles, temperature)
    local = {m: float(sum(p.score(s) for s in skills)) for m, p in profiles.items()}
    known = [s for s in skills if any(s in p.skills for p in profiles.values())]
    if not known:
        return dict(strengths), local, strengths, "no profiled skill: global strength only"
    if any(v > 0 for v in local.values()):
        raw = {m: (local[m] * strengths[m] if local[m] > 0 else 0.0) for m in profiles}
        reason = "local skill score x global strength over experts with positive local score"
    else:
        top = max(local.values())
        raw = {m: (strengths[m] if local[m] == top else 0.0) for m in profiles}
        reason = (f"no expert scores positive on these skills: the least wrong on them (local score {top:+.0f}), "
                  "by global strength")
    total = sum(raw.values())
    return {m: v / total for m, v in raw.items()}, local, strengths, reason


def adaptive_k(weights: dict[str, float], config: RecruitConfig) -> int:
    """Fewer slots when one expert dominates, more when weights are flat."""
    if not config.adaptive_k:
        return config.k
    probs = [w for w in weights.values() if w > 0]
    if max(probs) >= config.dominance:
        return config.min_k
    effective = math.exp(-sum(p * math.log(p) for p in probs))
    return int(min(config.max_k, max(config.min_k, math.ceil(effective))))


def draw_slots(weights: dict[str, float], k: int, seed: int, allow_samples: bool,
               sample_temperature: float) -> list[Slot]:
    """Draw k slots by weight. Repeats of an expert become extra samples, or are redrawn."""
    names = sorted(m for m, w in weights.items() if w > 0)
    probs = np.array([weights[m] for m in names], dtype=float)
    probs /= probs.sum()
    rng = np.random.default_rng(seed)
    if allow_samples:
        drawn = [names[i] for i in rng.choice(len(names), size=k, replace=True, p=probs)]
    else:
        take = min(k, len(names))
        drawn = [names[i] for i in rng.choice(len(names), size=take, replace=False, p=probs)]
    slots: list[Slot] = []
    counts: dict[str, int] = {}
    for name in drawn:
        n = counts.get(name, 0)
        counts[name] = n + 1
        slots.append(Slot(expert=name, sample=n, temperature=0.0 if n == 0 else sample_temperature,
                          seed=seed * 1000 + len(slots)))
    return slots


def recruit(skills: list[str], profiles: dict[str, ExpertProfile], config: RecruitConfig,
            seed: int, k: int | None = None) -> Recruitment:
    weights, local, strengths, reason = recruit_weights(skills, profiles, config.temperature)
    k_eff = k if k is not None else adaptive_k(weights, config)
    slots = draw_slots(weights, k_eff, seed, config.allow_samples, config.sample_temperature)
    per_expert: dict[str, int] = {}
    for slot in slots:
        per_expert[slot.expert] = per_expert.get(slot.expert, 0) + 1
    recruits = [Recruit(expert=m, weight=weights[m], local=local[m], global_strength=strengths[m], slots=n)
                for m, n in sorted(per_expert.items(), key=lambda kv: -weights[kv[0]])]
    return Recruitment(recruits=recruits, slots=slots, k=k_eff, reason=reason, weights=weights)
