"""Evaluation methods behind one interface and a registry (as RouteLLM does with routers).

A method turns each question into a ``QuestionPlan``: which expert slots answer it and how
their answers are combined (``single``, ``vote``, ``synthesis`` always, or ``symoe``:
synthesis only when the slots disagree). Plans are data: the runner executes all methods'
plans together, grouped by expert, so shared generations run once.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, Field

from agents.errors import SymoeError
from orchestrator.config import SymoeConfig
from orchestrator.profiles import Profile
from orchestrator.recruit import Slot, recruit, recruit_weights

Combine = Literal["single", "vote", "synthesis", "symoe"]


class QuestionPlan(BaseModel):
    slots: list[Slot]
    combine: Combine
    context: str | None = None
    retrieved: bool = False
    aggregator: str | None = None
    weights: dict[str, float] = Field(default_factory=dict)
    note: str = ""


class EvalQuestion(BaseModel):
    """What a method sees of a question (skills come from annotation, for symoe)."""

    id: str
    task: str
    skills: list[str] = Field(default_factory=list)


class MethodContext(BaseModel):
    model_config = {"arbitrary_types_allowed": True}
    config: SymoeConfig
    profile: Profile
    seed: int


def question_seed(seed: int, question_id: str) -> int:
    """A per-question seed that does not depend on question order."""
    return (seed * 1_000_003 + int(hashlib.sha256(question_id.encode()).hexdigest()[:8], 16)) % (2**31)


def greedy(expert: str, seed: int) -> Slot:
    return Slot(expert=expert, sample=0, temperature=0.0, seed=seed)


PlanFn = Callable[[MethodContext, EvalQuestion], QuestionPlan]
_METHODS: dict[str, Callable[[str | None], PlanFn]] = {}


def register_method(name: str) -> Callable[[Callable[[str | None], PlanFn]], Callable[[str | None], PlanFn]]:
    def decorate(factory: Callable[[str | None], PlanFn]) -> Callable[[str | None], PlanFn]:
        _METHODS[name] = factory
        return factory

    return decorate


def method_names() -> list[str]:
    return sorted(_METHODS)


RETRIEVAL_MODES = ("never", "always", "auto")


def retrieval_mode(method: str) -> str | None:
    """'symoe@auto' -> 'auto'; methods without '@' do not retrieve (None)."""
    return method.partition("@")[2] or None


def expand_methods(spec: str, config: SymoeConfig, retrieval: list[str] | None = None) -> list[str]:
    """'single,best_single,symoe' -> ['single:e1', 'single:e2', ..., 'best_single', 'symoe'].

    With ``retrieval`` modes, ``symoe`` becomes ``symoe@never``, ``symoe@always``, ``symoe@auto``.
    """
    out: list[str] = []
    for mode in retrieval or []:
        if mode not in RETRIEVAL_MODES:
            raise SymoeError(f"unknown retrieval mode {mode!r}; use: {', '.join(RETRIEVAL_MODES)}")
    for raw in [m.strip() for m in spec.split(",") if m.strip()]:
        if raw == "symoe" and retrieval:
            out.extend(f"symoe@{mode}" for mode in retrieval)
            continue
        raw, _, mode = raw.partition("@")
        if mode and mode not in RETRIEVAL_MODES:
            raise SymoeError(f"unknown retrieval mode {mode!r}; use: {', '.join(RETRIEVAL_MODES)}")
        raw = f"{raw}@{mode}" if mode else raw
        base, _, arg = raw.partition("@")[0].partition(":")
        if base not in _METHODS:
            raise SymoeError(f"unknown method {raw!r}; known: {', '.join(method_names())} (single:EXPERT for one)")
        if base == "single" and not arg:
            out.extend(f"single:{name}" for name in config.experts)
        else:
            if base == "single":
                config.expert(arg)
            if base == "symoe":
                symoe_variant(arg)
            out.append(raw)
    return list(dict.fromkeys(out))


def get_method(name: str) -> PlanFn:
    base, _, arg = name.partition("@")[0].partition(":")
    return _METHODS[base](arg or None)


def _all_experts(ctx: MethodContext) -> list[str]:
    return list(ctx.config.experts)


@register_method("single")
def single(expert: str | None) -> PlanFn:
    def plan(ctx: MethodContext, q: EvalQuestion) -> QuestionPlan:
        return QuestionPlan(slots=[greedy(expert or ctx.config.default_expert, ctx.seed)], combine="single")
    return plan


def best_single_expert(profile: Profile, task: str) -> str:
    """The expert with the best validation accuracy on this task (else overall)."""
    def accuracy(name: str) -> tuple[float, float]:
        tasks = profile.experts[name].tasks
        count = tasks.get(task)
        overall_n = sum(c.n for c in tasks.values()) or 1
        overall = sum(c.right for c in tasks.values()) / overall_n
        return ((count.right / count.n) if count and count.n else overall, overall)
    return max(sorted(profile.experts), key=accuracy)


@register_method("best_single")
def best_single(_: str | None) -> PlanFn:
    def plan(ctx: MethodContext, q: EvalQuestion) -> QuestionPlan:
        expert = best_single_expert(ctx.profile, q.task)
        return QuestionPlan(slots=[greedy(expert, ctx.seed)], combine="single", note=f"best on validation {q.task}")
    return plan


@register_method("random_k")
def random_k(_: str | None) -> PlanFn:
    def plan(ctx: MethodContext, q: EvalQuestion) -> QuestionPlan:
        rng = random.Random(question_seed(ctx.seed, q.id))
        experts = _all_experts(ctx)
        chosen = rng.sample(experts, min(ctx.config.router.k, len(experts)))
        return QuestionPlan(slots=[greedy(e, ctx.seed) for e in chosen], combine="symoe",
                            aggregator=ctx.profile.best_aggregator())
    return plan


@register_method("majority")
def majority_vote(_: str | None) -> PlanFn:
    def plan(ctx: MethodContext, q: EvalQuestion) -> QuestionPlan:
        weights, *_ = recruit_weights([], ctx.profile.experts, ctx.config.router.temperature)
        return QuestionPlan(slots=[greedy(e, ctx.seed) for e in _all_experts(ctx)], combine="vote", weights=weights)
    return plan


@register_method("moa")
def mixture_of_agents(_: str | None) -> PlanFn:
    def plan(ctx: MethodContext, q: EvalQuestion) -> QuestionPlan:
        return QuestionPlan(slots=[greedy(e, ctx.seed) for e in _all_experts(ctx)], combine="synthesis",
                            aggregator=ctx.profile.best_aggregator())
    return plan


def symoe_variant(arg: str | None) -> dict[str, object]:
    """Router overrides from a ``symoe:`` argument: ``k3`` fixes k=3 (samples of one expert
    allowed), ``k3-distinct`` fixes k=3 with distinct experts only, ``distinct`` keeps the
    adaptive k with distinct experts only. No argument: the configured router."""
    if not arg:
        return {}
    k_part, _, flag = arg.partition("-")
    if k_part == "distinct" and not flag:
        return {"allow_samples": False}
    if not (k_part.startswith("k") and k_part[1:].isdigit() and int(k_part[1:]) > 0 and flag in ("", "distinct")):
        raise SymoeError(f"unknown symoe variant {arg!r}; use symoe, symoe:distinct, symoe:kN or symoe:kN-distinct")
    return {"k": int(k_part[1:]), "adaptive_k": False, "allow_samples": flag != "distinct"}


@register_method("symoe")
def symoe(arg: str | None) -> PlanFn:
    overrides = symoe_variant(arg)

    def plan(ctx: MethodContext, q: EvalQuestion) -> QuestionPlan:
        router = ctx.config.router.model_copy(update=overrides) if overrides else ctx.config.router
        rec = recruit(q.skills, ctx.profile.experts, router, seed=question_seed(ctx.seed, q.id))
        slots = [s if s.sample else s.model_copy(update={"seed": ctx.seed}) for s in rec.slots]
        return QuestionPlan(slots=slots, combine="symoe", aggregator=ctx.profile.best_aggregator(q.skills),
                            weights=rec.weights, note=rec.reason)
    return plan
