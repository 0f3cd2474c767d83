"""Methods: how a query is assigned to expert slots and how their answers are combined.

A method implements one thing, ``assign`` (as a RouteLLM router implements one scoring
function); the pipeline around it (annotate, gate, execute, combine, extract) is written once.
Methods are a registry: ``@methods.register("name")`` on a ``Method`` subclass adds one, and
``symoe ask --router NAME``, ``symoe eval --routers NAME`` and the Python API can use it.

A method is named by a string, parsed once into a frozen ``MethodSpec``:
``base[:variant][@retrieval]``: ``single:qwen-coder-1.5b``, ``symoe:k3-distinct``,
``symoe@never``. ``str(spec)`` gives the same string back, for reports.

Built in:

- ``single:EXPERT``: one expert answers (``single`` alone, in ``symoe eval``: every expert);
- ``best_single``: the expert with the best validation accuracy overall;
- ``task_best``: the expert with the best validation accuracy on the query's task;
- ``format_best``: the cheapest expert within one standard error of the most accurate on
  validation questions of the query's answer format (options, a number, free text), which
  every query has, task or not;
- ``random_k``: k experts drawn at random, synthesised when they disagree;
- ``majority``: every expert answers, the most common answer wins;
- ``moa``: every expert answers, the best aggregator synthesises (Mixture-of-Agents);
- ``symoe``: skill routing (``symoe:kN``, ``symoe:kN-distinct``, ``symoe:distinct`` fix k
  or forbid repeated draws);
- ``clusters``: the top expert(s) of the query's nearest cluster of validation questions
  (Avengers-style, no LLM call; ``clusters:kN`` votes N of them);
- ``learned:NAME``: the expert a router learned from the profile's graded questions scores
  best on the query (``knn``, ``logreg``, ``mlp``, ``mf``; ``orchestrator.learned``);
- ``cascade``: the cheapest competent experts whose agreement proved reliable on validation
  answer first; their answer stands when they agree, otherwise the query escalates to
  ``symoe``'s routed team (FrugalGPT, AutoMix);
- ``budget``: the one cost/quality knob (``budget:Q``, Q from 0, the cheapest, to 1, the
  most accurate): the query's cluster's option (an expert alone or a vote of its top
  experts) of best quality-weighted accuracy against cost; ``symoe profile calibrate``
  fits Q to a token target.

Every method chooses among the experts whose method can produce the query's answer format
(``expert_methods.answers_in``: no program for an open factual question): the pipeline hands
``assign`` a profile of those experts only, and ``MethodContext.pool`` lists them. When every
slot fails, ``best_single``, ``task_best`` and the routed methods fall back (``falls_back``) to
their next candidate (``Assignment.backups``), then to the default expert, and the record says
so; ``single:NAME`` never does (an evaluation of that expert measures it alone).

The routed methods ``symoe``, ``clusters`` and ``cascade`` retrieve by default (the config's
``retrieval.mode``); ``budget`` does not (its costs were measured without); any method can be
given ``@never|@always|@auto``. A name may end in config settings for that method alone,
``budget[budget.team=5;clusters.count=8]`` (what ``symoe eval --sweep`` writes), in the
sections the method reads (``Method.reads``).
"""

from __future__ import annotations

import abc
import hashlib
import itertools
import random
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agents.errors import SymoeError
from agents.registry import Registry
from orchestrator.aggregate import accepted, agreed_answer
from orchestrator.clusters import ClusterScore
from orchestrator.config import MAX_K, CascadeConfig, SymoeConfig, invalid_value
from orchestrator.expert_methods import answers_in
from orchestrator.learned import routers as learned_routers
from orchestrator.profiles import Profile, cost_per_question
from orchestrator.records import (
    RETRIEVAL_MODES,
    AnswerFormat,
    Combine,
    ExpertAnswer,
    Job,
    Query,
    Recruitment,
    RetrievalMode,
    Slot,
)
from orchestrator.recruit import recruit, recruit_weights


class MethodError(SymoeError):
    """A method name that cannot be parsed or does not exist."""


class MethodContext(BaseModel):
    """What a method may consult: the config, the profile (None before one exists), the seed."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    config: SymoeConfig
    profile: Profile | None
    seed: int
    #: query id -> its nearest cluster of validation questions (for methods that ``needs_clusters``)
    clusters: dict[str, ClusterScore] = Field(default_factory=dict)
    #: query id -> each expert's predicted chance of answering it right (a ``learned:NAME`` router)
    scores: dict[str, dict[str, float]] = Field(default_factory=dict)
    #: the answer format of the queries ``assign`` is handed (None: any); the profile then holds
    #: only the experts whose method can produce it
    format: AnswerFormat | None = None

    @property
    def pool(self) -> list[str]:
        """The routing pool's experts whose method can produce ``format`` (all of them when none can)."""
        pool = self.config.routing_pool
        if self.format is None:
            return pool
        return [e for e in pool if answers_in(self.config.experts[e], self.format)] or pool

    def need_profile(self, method: str) -> Profile:
        if self.profile is None:
            raise MethodError(f"router {method!r} needs a profile; run `symoe profile build`")
        return self.profile


class Assignment(BaseModel):
    """A method's decision for one query: the slots that answer and how to combine them."""

    slots: list[Slot]
    combine: Combine
    aggregator: str | None = None
    weights: dict[str, float] = Field(default_factory=dict)
    recruitment: Recruitment | None = None
    note: str = ""
    #: the method's next candidates, best first: when every slot fails, the first of them that
    #: has not failed answers instead (then the default expert), for methods that ``falls_back``
    backups: list[str] = Field(default_factory=list)
    #: a cascade's next step: it answers instead when these slots fail or disagree
    escalation: Assignment | None = None
    #: a cascade's first answer stands only when its letter's margin is at least this
    #: (None: when its first experts agree)
    accept_margin: float | None = None

    def synthesises(self, ok: list[ExpertAnswer]) -> bool:
        """Whether these successful answers go to the aggregator: always for ``synthesis``, when
        they disagree for ``symoe``; never for one answer or without an aggregator."""
        return (self.combine in ("synthesis", "symoe") and len(ok) >= 2 and self.aggregator is not None
                and not (self.combine == "symoe" and agreed_answer(ok) is not None))


SlotKey = tuple[str, int, float, int]


def slot_key(s: Slot) -> SlotKey:
    """What a slot asks: two slots with the same key ask the same thing."""
    return s.expert, s.sample, s.temperature, s.seed


class CascadeRound(BaseModel):
    """A cascade's own state on its plan: whether its first answers stood (``escalated``
    False) or it escalated, and then what its first experts were asked and answered. A slot
    of the escalated team that asks what a first slot asked reuses that job and its reading
    (asked, run and counted once)."""

    escalated: bool
    first_round: Assignment | None = None
    first_jobs: list[Job] = Field(default_factory=list)
    first_answers: list[ExpertAnswer] = Field(default_factory=list)

    @classmethod
    def judge(cls, first: Assignment, jobs: list[Job], answers: list[ExpertAnswer]) -> CascadeRound:
        """The first round's outcome: its answers stand when ``accepted``, else it escalates."""
        if accepted(answers, first.accept_margin):
            return cls(escalated=False)
        return cls(escalated=True, first_round=first, first_jobs=jobs, first_answers=answers)

    def _first(self) -> list[tuple[Slot, Job, ExpertAnswer]]:
        slots = self.first_round.slots if self.first_round else []
        return list(zip(slots, self.first_jobs, self.first_answers, strict=True))

    def asked(self) -> dict[SlotKey, Job]:
        """The first round's jobs by what their slot asked."""
        return {slot_key(s): job for s, job, _ in self._first()}

    def readings(self) -> dict[int, ExpertAnswer]:
        """The first round's answers by their job (``id``)."""
        return {id(job): read for _, job, read in self._first()}

    def unasked(self, jobs: list[Job]) -> list[tuple[Slot, Job, ExpertAnswer]]:
        """The first slots that the escalation's ``jobs`` did not ask again (their cost is the plan's too)."""
        reused = {id(job) for job in jobs}
        return [(s, job, read) for s, job, read in self._first() if id(job) not in reused]


class Method(abc.ABC):
    """One way of assigning a query to experts. Subclass, implement ``assign``, register."""

    #: annotate the query's skills first (an LLM call) and hand them to ``assign``
    needs_skills: ClassVar[bool] = False
    #: embed the query and find its nearest cluster of validation questions (``ctx.clusters``)
    needs_clusters: ClassVar[bool] = False
    #: embed the query and score every expert on it by the learned router its variant names (``ctx.scores``)
    needs_scores: ClassVar[bool] = False
    #: route by the profile (reports list whom it recruited)
    routed: ClassVar[bool] = False
    #: retrieval follows the config's ``retrieval.mode`` unless the name says (else: never)
    retrieves_by_default: ClassVar[bool] = False
    #: the config sections (``recruit``) or keys (``clusters.count``) ``assign`` reads: a name's
    #: ``[key=value]`` settings may set only these
    reads: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def settable(cls) -> tuple[str, ...]:
        """The sections and keys a name's settings may set: those it ``reads``, and
        ``skills.source`` for a method that routes on skills."""
        return (*cls.reads, *(SKILL_KEYS if cls.needs_skills else ()))

    @classmethod
    def reads_key(cls, key: str) -> bool:
        """Whether a setting of ``key`` (``section.field``) changes what this method does."""
        return any(key == r or key.startswith(r + ".") for r in cls.settable())
    #: consult the profile (which must exist then)
    needs_profile: ClassVar[bool] = True
    #: when every slot fails, the next candidate (``Assignment.backups``), else the default
    #: expert, answers instead (``single:NAME`` and the all-expert baselines measure only themselves)
    falls_back: ClassVar[bool] = False

    def check_variant(self, variant: str | None, config: SymoeConfig) -> None:
        """Raise ``MethodError`` for a variant this method does not know (default: none allowed)."""
        if variant:
            raise MethodError(f"router {type(self).__name__} takes no variant (got {variant!r})")

    @abc.abstractmethod
    def assign(self, ctx: MethodContext, query: Query, skills: list[str], variant: str | None) -> Assignment:
        """The slots for this query."""


class RoutedMethod(Method):
    """A router that chooses by the profile: reports list whom it recruited, it retrieves by the
    config's ``retrieval.mode`` unless its name says, and when every slot fails the default
    expert answers instead (after the router's next candidate)."""

    routed = True
    retrieves_by_default = True
    falls_back = True


methods: Registry[type[Method]] = Registry("router")


#: the config sections a method name's settings may set (the ones methods read)
METHOD_SECTIONS = ("recruit", "clusters", "cascade", "budget", "learned")
#: the skill settings one router may set (``symoe:k1[skills.source=neighbours]``): where its skills come from
SKILL_KEYS = ("skills.source",)


class MethodSpec(BaseModel):
    """A parsed method name: ``base[:variant][@retrieval][[section.key=value;...]]``."""

    model_config = ConfigDict(frozen=True)

    base: str
    variant: str | None = None
    retrieval: RetrievalMode = "never"
    retrieval_named: bool = Field(False, description="the name said @retrieval (printed back)")
    settings: tuple[tuple[str, str], ...] = Field((), description="config settings for this method alone")

    def __str__(self) -> str:
        text = self.base + (f":{self.variant}" if self.variant else "")
        text += f"@{self.retrieval}" if self.retrieval_named else ""
        return text + ("[" + ";".join(f"{k}={v}" for k, v in self.settings) + "]" if self.settings else "")

    def with_setting(self, key: str, value: str) -> MethodSpec:
        """This name with ``key=value`` among its settings (replacing the name's own value)."""
        return self.model_copy(update={"settings": (*((k, v) for k, v in self.settings if k != key), (key, value))})

    def configured(self, config: SymoeConfig) -> SymoeConfig:
        """The config this method runs under: ``config`` with the name's settings applied."""
        return apply_settings(config, self.settings) if self.settings else config

    @property
    def impl(self) -> Method:
        """The registered ``Method`` this name stands for."""
        return methods.get(self.base)()

    @property
    def needs_skills(self) -> bool:
        return self.impl.needs_skills

    @property
    def retrieves(self) -> bool:
        return self.retrieval != "never"

    @classmethod
    def parse(cls, text: str, config: SymoeConfig, retrieval: RetrievalMode | None = None) -> MethodSpec:
        """Parse and check a method name; ``retrieval`` overrides what the name says."""
        name, settings = split_settings(text.strip())
        name, _, mode = name.partition("@")
        base, _, variant = name.partition(":")
        if mode and mode not in RETRIEVAL_MODES:
            raise MethodError(f"unknown retrieval mode {mode!r} in {text!r}; use: {', '.join(RETRIEVAL_MODES)}")
        method = methods.get(base)()
        for key, _ in settings:
            if not method.reads_key(key):
                reads = ", ".join(r if "." in r else f"{r}.*" for r in method.settable()) or "none"
                raise MethodError(f"router {base!r} does not read {key!r}; the settings it reads: {reads}")
        configured = apply_settings(config, settings)
        method.check_variant(variant or None, configured)
        chosen = retrieval or mode or (config.retrieval.mode if method.retrieves_by_default else "never")
        return cls(base=base, variant=variant or None, retrieval=chosen,  # type: ignore[arg-type]
                   retrieval_named=bool(mode or retrieval), settings=settings)


def split_settings(text: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """``'budget[budget.quality=0.5;clusters.count=8]'`` -> ``('budget', (('budget.quality', '0.5'), ...))``."""
    if "[" not in text:
        return text, ()
    name, _, rest = text.partition("[")
    if not rest.endswith("]"):
        raise MethodError(f"router {text!r}: settings go in brackets at the end, e.g. budget[budget.quality=0.5]")
    settings = []
    for item in [i.strip() for i in rest[:-1].split(";") if i.strip()]:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise MethodError(f"router {text!r}: setting {item!r} is not KEY=VALUE (e.g. budget.quality=0.5)")
        settings.append((key.strip(), value.strip()))
    return name, tuple(settings)


def apply_settings(config: SymoeConfig, settings: tuple[tuple[str, str], ...]) -> SymoeConfig:
    """``config`` with ``section.key=value`` settings applied, each checked as the config file's would be."""
    for key, value in settings:
        section, _, field = key.partition(".")
        if (section not in METHOD_SECTIONS or not field) and key not in SKILL_KEYS:
            raise MethodError(f"{key!r} cannot be set for one router; give a key of "
                              f"{', '.join([*(s + '.*' for s in METHOD_SECTIONS), *SKILL_KEYS])} "
                              "(e.g. budget.quality)")
        current = getattr(config, section)
        if field not in type(current).model_fields:
            raise MethodError(f"unknown setting {key!r}; {section} has: {', '.join(type(current).model_fields)}")
        given = None if value.lower() in ("none", "null", "") else value
        try:
            updated = type(current).model_validate({**current.model_dump(), field: given})
        except ValidationError as exc:
            reason = invalid_value(str(exc.errors()[0]["msg"]), (section, field))
            raise MethodError(f"{key}={value}: {reason}") from None
        config = config.model_copy(update={section: updated})
    return config


def expand_methods(spec: str, config: SymoeConfig, retrieval: list[str] | None = None,
                   sweep: list[tuple[str, list[str]]] | None = None) -> list[MethodSpec]:
    """'single,best_single,symoe' -> single:e1, single:e2, ..., best_single, symoe.

    With ``retrieval`` modes, every routed method is run once per mode (``symoe@never``, ...).
    With ``sweep`` (``[(key, values), ...]``), every method that reads a key's section is run
    once per combination of values (``budget[budget.quality=0.2]``, ...); the others once.
    """
    for mode in retrieval or []:
        if mode not in RETRIEVAL_MODES:
            raise MethodError(f"unknown retrieval mode {mode!r}; use: {', '.join(RETRIEVAL_MODES)}")
    out: list[MethodSpec] = []
    for raw in [m.strip() for m in spec.split(",") if m.strip()]:
        if raw == "single":
            out.extend(MethodSpec.parse(f"single:{name}", config) for name in config.routing_pool)
            continue
        parsed = MethodSpec.parse(raw, config)
        if retrieval and parsed.impl.routed and not parsed.retrieval_named:
            out.extend(MethodSpec.parse(raw, config, retrieval=m) for m in retrieval)  # type: ignore[arg-type]
        else:
            out.append(parsed)
    if not out:
        raise MethodError("no router given; e.g. --routers symoe,best_single")
    for key, values in sweep or []:
        if not values:
            raise MethodError(f"--sweep {key}= gives no values; e.g. --sweep {key}=V1,V2")
        if not any(m.impl.reads_key(key) for m in out):
            readers = sorted(n for n in methods.names() if methods.get(n).reads_key(key))
            raise MethodError(f"no router given reads {key!r} (it is read by: {', '.join(readers) or 'none'})")
        out = [MethodSpec.parse(str(m.model_copy(update={"settings": (*m.settings, (key, v))})), config)
               if m.impl.reads_key(key) else m for m in out for v in values]
    return list(dict.fromkeys(out))


def question_seed(seed: int, key: str) -> int:
    """A per-question seed that depends on the question, not on its position or id."""
    return (seed * 1_000_003 + int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)) % (2**31)


def greedy(expert: str, seed: int) -> Slot:
    return Slot(expert=expert, sample=0, temperature=0.0, seed=seed)


@methods.register("single")
class Single(Method):
    """One expert answers: ``single:NAME`` (``single`` alone: the default expert)."""

    needs_profile = False

    def check_variant(self, variant: str | None, config: SymoeConfig) -> None:
        if variant:
            config.expert(variant)

    def assign(self, ctx: MethodContext, query: Query, skills: list[str], variant: str | None) -> Assignment:
        return Assignment(slots=[greedy(variant or ctx.config.default_expert, ctx.seed)], combine="single")


def ranked_by_record(profile: Profile, record: dict[str, tuple[int, int]]) -> list[str]:
    """The profile's experts, best share right in ``record`` (expert -> (graded, right) on some
    part of validation) first; an expert with none graded there counts at its overall
    accuracy; ties go to the better overall, then to the name."""
    def accuracy(name: str) -> tuple[float, float]:
        overall = profile.experts[name].accuracy_on([])
        n, right = record.get(name, (0, 0))
        return (right / n if n else overall, overall)
    return sorted(sorted(profile.experts), key=accuracy, reverse=True)


def ranked_by_accuracy(profile: Profile, task: str | None = None) -> list[str]:
    """The profile's experts, best validation accuracy on this task first (None, or a task
    validation never saw: overall); ties go to the better overall, then to the name."""
    return ranked_by_record(profile, {name: (p.tasks[task].n, p.tasks[task].right)
                                      for name, p in profile.experts.items() if task and task in p.tasks})


def best_single_expert(profile: Profile, task: str | None = None) -> str:
    """The expert with the best validation accuracy on this task (``ranked_by_accuracy``'s first)."""
    return ranked_by_accuracy(profile, task)[0]


@methods.register("best_single")
class BestSingle(Method):
    """The expert with the best validation accuracy over every task (among those whose method
    can produce the query's format) answers every query alone; the next best if it fails."""

    falls_back = True

    def assign(self, ctx: MethodContext, query: Query, skills: list[str], variant: str | None) -> Assignment:
        expert, *rest = ranked_by_accuracy(ctx.need_profile("best_single"))
        return Assignment(slots=[greedy(expert, ctx.seed)], combine="single", backups=rest,
                          note=f"best on validation overall{format_note(ctx)}")


@methods.register("task_best")
class TaskBest(Method):
    """The expert with the best validation accuracy on the query's task answers alone (the
    overall best for a query without a task, or of a task validation never saw), among those
    whose method can produce the query's format; the next best if it fails."""

    falls_back = True

    def assign(self, ctx: MethodContext, query: Query, skills: list[str], variant: str | None) -> Assignment:
        expert, *rest = ranked_by_accuracy(ctx.need_profile("task_best"), query.task)
        return Assignment(slots=[greedy(expert, ctx.seed)], combine="single", backups=rest,
                          note=f"best on validation {query.task or 'overall'}{format_note(ctx)}")


def ranked_on_format(profile: Profile, fmt: str | None) -> list[str]:
    """The profile's experts for a query of this answer format: first the cheapest (tokens
    per question of that format) of those within one standard error of the most accurate on
    validation questions of the format (a difference thinner than that is noise, and the
    cheaper answer is the faster one), then the rest, most accurate first
    (``ranked_by_record``: an expert with none of them graded, or a profile that records no
    formats, counts at its overall accuracy)."""
    record = profile.format_record(fmt) if fmt else {}
    ranked = ranked_by_record(profile, {e: (n, right) for e, (n, right, _) in record.items()})
    if not ranked or ranked[0] not in record:
        return ranked
    n, right, _ = record[ranked[0]]
    best = right / n
    floor = best - (best * (1 - best) / n) ** 0.5
    close = [e for e in ranked if e in record and record[e][1] / record[e][0] >= floor]
    first = min(close, key=lambda e: (record[e][2] / record[e][0], ranked.index(e)))
    return [first, *(e for e in ranked if e != first)]


@methods.register("format_best")
class FormatBest(Method):
    """The cheapest expert within one standard error of the most accurate on validation
    questions of the query's answer format answers alone (``ranked_on_format``: the direct
    answer for options, a worked answer for numbers, say): a router
    every ``symoe ask`` can use, with no task, no embedding and no LLM call; the next best if
    it fails."""

    falls_back = True

    def assign(self, ctx: MethodContext, query: Query, skills: list[str], variant: str | None) -> Assignment:
        profile = ctx.need_profile("format_best")
        expert, *rest = ranked_on_format(profile, ctx.format)
        n, right, spent = profile.format_record(ctx.format).get(expert, (0, 0, 0)) if ctx.format else (0, 0, 0)
        why = (f"the cheapest within one standard error of the best on validation {ctx.format} questions "
               f"({right}/{n} right, {spent / n:.0f} tokens a question)" if n
               else "best on validation overall (the profile records no answer formats)")
        return Assignment(slots=[greedy(expert, ctx.seed)], combine="single", backups=rest, note=why)


def format_note(ctx: MethodContext) -> str:
    """' among the experts that answer text' when the format left some experts out, else ''."""
    if ctx.format is None or ctx.profile is None or len(ctx.pool) == len(ctx.config.routing_pool):
        return ""
    return f" among the experts that can answer {ctx.format}"


@methods.register("random_k")
class RandomK(Method):
    """k experts drawn uniformly (``recruit.k``), synthesised by the best aggregator if they disagree."""

    reads = ("recruit",)

    def assign(self, ctx: MethodContext, query: Query, skills: list[str], variant: str | None) -> Assignment:
        rng = random.Random(question_seed(ctx.seed, query.key))
        experts = list(ctx.pool)
        chosen = rng.sample(experts, min(ctx.config.recruit.k, len(experts)))
        return Assignment(slots=[greedy(e, ctx.seed) for e in chosen], combine="symoe",
                          aggregator=ctx.need_profile("random_k").best_aggregator())


def team_variant(variant: str | None) -> list[str]:
    """The experts a ``majority:A+B+C`` variant names (none: every expert)."""
    return [e.strip() for e in (variant or "").split("+") if e.strip()]


@methods.register("majority")
class Majority(Method):
    """Every expert answers (``majority:A+B+C``: those experts); the most common answer wins
    (ties: the globally stronger expert)."""

    reads = ("recruit",)

    def check_variant(self, variant: str | None, config: SymoeConfig) -> None:
        if variant is not None and len(team_variant(variant)) < 2:
            raise MethodError(f"majority:{variant}: name two or more experts joined by '+', e.g. "
                              "majority:qwen-1.5b-direct+qwen-1.5b-cot+qwen-1.5b-program")
        for name in team_variant(variant):
            config.expert(name)

    def assign(self, ctx: MethodContext, query: Query, skills: list[str], variant: str | None) -> Assignment:
        weights, *_ = recruit_weights([], ctx.need_profile("majority").experts, ctx.config.recruit.temperature)
        team = [e for e in team_variant(variant) if e in ctx.pool] if variant else list(ctx.pool)
        if not team:
            raise MethodError(f"none of majority:{variant}'s experts can answer this query's format")
        return Assignment(slots=[greedy(e, ctx.seed) for e in team], combine="vote",
                          weights={e: w for e, w in weights.items() if e in team})


@methods.register("moa")
class MixtureOfAgents(Method):
    """Every expert answers; the best aggregator always synthesises (Mixture-of-Agents)."""

    def assign(self, ctx: MethodContext, query: Query, skills: list[str], variant: str | None) -> Assignment:
        return Assignment(slots=[greedy(e, ctx.seed) for e in ctx.pool], combine="synthesis",
                          aggregator=ctx.need_profile("moa").best_aggregator())


def k_number(text: str) -> int | None:
    """``kN`` -> N when N is from 1 to ``MAX_K``; anything else -> None."""
    digits = text[1:]
    return int(digits) if text.startswith("k") and digits.isdigit() and 0 < int(digits) <= MAX_K else None


def symoe_variant(arg: str | None) -> dict[str, object]:
    """Router overrides from a ``symoe:`` variant: ``k3`` fixes k=3 (samples of one expert
    allowed), ``k3-distinct`` fixes k=3 with distinct experts only, ``distinct`` keeps the
    adaptive k with distinct experts only. No variant: the configured recruitment."""
    if not arg:
        return {}
    k_part, _, flag = arg.partition("-")
    if k_part == "distinct" and not flag:
        return {"allow_samples": False}
    k = k_number(k_part)
    if k is None or flag not in ("", "distinct"):
        raise MethodError(f"unknown symoe variant {arg!r}; use symoe, symoe:distinct, symoe:kN or "
                          f"symoe:kN-distinct (N from 1 to {MAX_K})")
    return {"k": k, "adaptive_k": False, "allow_samples": flag != "distinct"}


@methods.register("symoe")
class SkillRouting(RoutedMethod):
    """Symbolic-MoE: recruit by the profile's skill scores, synthesise when the slots disagree."""

    needs_skills = True
    reads = ("recruit",)

    def check_variant(self, variant: str | None, config: SymoeConfig) -> None:
        symoe_variant(variant)

    def assign(self, ctx: MethodContext, query: Query, skills: list[str], variant: str | None) -> Assignment:
        profile = ctx.need_profile("symoe")
        overrides = symoe_variant(variant)
        settings = ctx.config.recruit.model_copy(update=overrides) if overrides else ctx.config.recruit
        rec = recruit(skills, profile.experts, settings, seed=question_seed(ctx.seed, query.key))
        # greedy slots share the plain seed, so single-expert baselines ask the very same prompt
        slots = [s if s.sample else s.model_copy(update={"seed": ctx.seed}) for s in rec.slots]
        rec = rec.model_copy(update={"slots": slots})
        drawn = {s.expert for s in slots}
        backups = sorted((e for e, w in rec.weights.items() if w > 0 and e not in drawn),
                         key=lambda e: (-rec.weights[e], e))
        return Assignment(slots=slots, combine="symoe", aggregator=profile.best_aggregator(skills),
                          weights=rec.weights, recruitment=rec, note=rec.reason, backups=backups)


def k_variant(arg: str | None, method: str) -> int | None:
    """A ``method:kN`` variant's N; no variant -> None."""
    if not arg:
        return None
    k = k_number(arg)
    if k is None:
        raise MethodError(f"unknown {method} variant {arg!r}; use {method} or {method}:kN (N from 1 to {MAX_K})")
    return k


@methods.register("clusters")
class ClusterRouting(RoutedMethod):
    """Avengers-style: the top expert(s) of the query's nearest cluster of validation
    questions answer (``clusters.k``, or ``clusters:kN``); several vote, weighted by their
    accuracy on that cluster. One embedding per query, no annotation."""

    needs_clusters = True
    reads = ("clusters",)

    def check_variant(self, variant: str | None, config: SymoeConfig) -> None:
        k_variant(variant, "clusters")

    def assign(self, ctx: MethodContext, query: Query, skills: list[str], variant: str | None) -> Assignment:
        profile = ctx.need_profile("clusters")
        cluster = ctx.clusters[query.id]
        k = k_variant(variant, "clusters") or ctx.config.clusters.k
        ranked = cluster.ranking([e for e in profile.experts if e in cluster.accuracy])
        chosen = ranked[:k]
        if not chosen:
            raise MethodError("the profile's clusters grade none of the experts that can be recruited now")
        weights = {e: cluster.accuracy[e] for e in chosen}
        note = f"cluster {cluster.cluster} ({cluster.size} validation questions): " + ", ".join(
            f"{e} {cluster.accuracy[e]:.0%}" for e in chosen)
        return Assignment(slots=[greedy(e, ctx.seed) for e in chosen], combine="single" if k == 1 else "vote",
                          weights=weights, note=note, backups=ranked[k:])


@methods.register("learned")
class LearnedRouting(RoutedMethod):
    """A router learned from the profile's graded questions (``learned:knn``, ``learned:logreg``,
    ``learned:mlp``, ``learned:mf``; ``orchestrator.learned``): the expert of best predicted
    chance of a right answer on the query (its embedding, and its task where the router uses
    it) answers alone, less ``learned.cost_weight`` x its relative cost. One embedding per
    query, no annotation."""

    needs_scores = True
    retrieves_by_default = False  # fitted on answers given without retrieval
    reads = ("learned",)

    def check_variant(self, variant: str | None, config: SymoeConfig) -> None:
        if not variant:
            raise MethodError(f"router 'learned' needs one of {', '.join(learned_routers.names())}, "
                              "e.g. learned:knn")
        learned_routers.get(variant)

    def assign(self, ctx: MethodContext, query: Query, skills: list[str], variant: str | None) -> Assignment:
        profiled = ctx.need_profile("learned").experts
        scores = {e: p for e, p in ctx.scores[query.id].items() if e in profiled}
        if not scores:
            raise MethodError("the learned router scores none of the experts that can be recruited now")
        weight = ctx.config.learned.cost_weight
        cost = cost_per_question(profiled, sorted(scores))
        dearest = max(cost.values()) or 1.0
        worth = {e: p - weight * cost[e] / dearest for e, p in scores.items()}
        best, *rest = sorted(sorted(worth), key=lambda e: worth[e], reverse=True)
        shown = sorted(scores.items(), key=lambda kv: -kv[1])[:3]
        return Assignment(slots=[greedy(best, ctx.seed)], combine="single", weights={best: scores[best]},
                          note=f"{variant}: " + ", ".join(f"{e} {p:.0%}" for e, p in shown), backups=rest)


def cheapest_competent(profile: Profile, skills: list[str], min_accuracy: float, count: int) -> list[str]:
    """Up to ``count`` experts, cheapest first (validation cost a question: US dollars where
    every expert records some, else tokens; ``cost_per_question``), whose validation accuracy
    on these skills is at least ``min_accuracy``."""
    experts = profile.experts
    cost = cost_per_question(experts, sorted(experts))
    ranked = sorted(experts, key=lambda e: (cost[e], e))
    return [e for e in ranked if experts[e].accuracy_on(skills) >= min_accuracy][:count]


def precision_bar(profile: Profile, settings: CascadeConfig) -> float:
    """How often an accepted first answer must have been right on validation: ``min_precision``,
    else the best single expert's overall validation accuracy (no worse than asking it alone)."""
    if settings.min_precision is not None:
        return settings.min_precision
    return max((profile.experts[e].accuracy_on([]) for e in profile.experts), default=0.0)


def margin_first(profile: Profile, skills: list[str], settings: CascadeConfig) -> tuple[str, float, str] | None:
    """The cheapest competent expert whose stated letter can be accepted on its margin alone,
    with its threshold and why: ``cascade.margin`` if set, else calibrated on its validation
    answers (``margin_threshold`` at ``precision_bar``). None when none qualifies."""
    competent = cheapest_competent(profile, skills, settings.min_accuracy, len(profile.experts))
    bar = precision_bar(profile, settings)
    for expert in competent:
        graded = profile.margins(expert)
        if settings.margin is not None:
            if graded:
                return expert, settings.margin, f"margin >= {settings.margin:g} (cascade.margin)"
            continue
        found = profile.margin_threshold(expert, bar, settings.min_agreements)
        if found is not None:
            threshold, accepted, right = found
            return expert, threshold, (f"margin >= {threshold:.2f}: right on {right} of the {accepted} of "
                                       f"{len(graded)} validation answers that sure (>= {bar:.0%} needed)")
    return None


def reliable_first(profile: Profile, skills: list[str], settings: CascadeConfig) -> tuple[list[str], str]:
    """The cascade's first experts and why: the cheapest ``settings.first`` competent experts
    (validation accuracy on these skills >= ``min_accuracy``) whose agreement was calibrated on
    the profile's questions: when they agreed (at least ``min_agreements`` times), their answer
    was right at least ``min_precision`` of the time (unset: the best single expert's overall
    validation accuracy, so an accepted answer is no worse than asking it alone). ``[]`` when no group
    qualifies. A profile with no recorded answers: the cheapest competent, uncalibrated."""
    if not any(x.answers for x in profile.examples):
        cheap = cheapest_competent(profile, skills, settings.min_accuracy, settings.first)
        return (cheap if len(cheap) == settings.first else []), "cheapest competent (uncalibrated: the profile " \
            "records no answers)"
    competent = [e for e in profile.experts if profile.experts[e].accuracy_on(skills) >= settings.min_accuracy]
    bar = precision_bar(profile, settings)
    price = cost_per_question(profile.experts, sorted(profile.experts))
    best: tuple[float, float, list[str], str] | None = None
    for group in itertools.combinations(sorted(competent), settings.first):
        agreed, right = profile.agreement(group)
        if agreed < settings.min_agreements or right / agreed < bar:
            continue
        cost = sum(price[e] for e in group)
        why = f"right on {right} of the {agreed} validation questions they agreed on (>= {bar:.0%} needed)"
        if best is None or (cost, -right / agreed) < (best[0], best[1]):
            best = (cost, -right / agreed, list(group), why)
    if best is None:
        return [], f"no {settings.first} competent experts agree reliably on validation (>= {bar:.0%} right)"
    return best[2], best[3]


@methods.register("cascade")
class Cascade(RoutedMethod):
    """Cheap first, with one of two confidence signals calibrated on validation: on options,
    the cheapest competent expert alone, its letter accepted when its log-prob margin passes
    (``margin_first``); otherwise the cheapest ``cascade.first`` competent experts whose
    agreement proved reliable, accepted when they agree (``reliable_first``). A first answer
    not accepted escalates the query to skill routing (``symoe``), whose team answers as usual."""

    needs_skills = True
    reads = ("cascade", "recruit")

    def assign(self, ctx: MethodContext, query: Query, skills: list[str], variant: str | None) -> Assignment:
        full = SkillRouting().assign(ctx, query, skills, None)
        profile, settings = ctx.need_profile("cascade"), ctx.config.cascade
        if query.choices and settings.signal != "agreement":
            found = margin_first(profile, skills, settings)
            if found is not None:
                expert, threshold, why = found
                return Assignment(slots=[greedy(expert, ctx.seed)], combine="single", escalation=full,
                                  accept_margin=threshold,
                                  note=f"first {expert} ({why}); escalated to the routed team unless it is that sure")
        if settings.signal == "margin":
            first: list[str] = []
            why = "no competent expert's margin qualifies" if query.choices else "no options to take a margin on"
        else:
            first, why = reliable_first(profile, skills, settings)
        if not first:
            return full.model_copy(update={"note": f"{why}: routed at once; {full.note}"})
        return Assignment(slots=[greedy(e, ctx.seed) for e in first], combine="vote", escalation=full,
                          note=f"first {', '.join(first)} ({why}); escalated to the routed team unless they agree")


def quality_variant(arg: str | None) -> float | None:
    """A ``budget:Q`` variant's quality; no variant -> None."""
    if not arg:
        return None
    try:
        quality = float(arg)
    except ValueError:
        quality = -1.0
    if not 0.0 <= quality <= 1.0:
        raise MethodError(f"unknown budget variant {arg!r}; use budget or budget:Q, a quality Q from 0 "
                          "(the cheapest) to 1 (the most accurate)")
    return quality


def budget_quality(ctx: MethodContext, variant: str | None) -> tuple[float, str]:
    """The quality a ``budget`` query runs at, and where it came from: the name's variant,
    else ``budget.quality``, else the profile's calibration, else 1."""
    named = quality_variant(variant)
    if named is not None:
        return named, "named"
    if ctx.config.budget.quality is not None:
        return ctx.config.budget.quality, "budget.quality"
    if ctx.profile is not None and ctx.profile.budget is not None:
        b = ctx.profile.budget
        return b.quality, f"calibrated for {b.target_tokens_per_question:g} tokens/question"
    return 1.0, "default"


@methods.register("budget")
class Budget(RoutedMethod):
    """The one cost/quality knob over cluster routing: the query's nearest cluster offers each
    expert alone and votes of its top experts, each with its validation accuracy and cost
    there; the option of best ``Q * accuracy - (1 - Q) * cost`` answers (Q = 0: the cheapest,
    Q = 1: the most accurate). One embedding per query, no annotation."""

    needs_clusters = True
    retrieves_by_default = False  # its costs were measured without retrieval
    reads = ("budget", "clusters.count", "clusters.prior", "clusters.iterations")

    def check_variant(self, variant: str | None, config: SymoeConfig) -> None:
        quality_variant(variant)

    def assign(self, ctx: MethodContext, query: Query, skills: list[str], variant: str | None) -> Assignment:
        profile = ctx.need_profile("budget")
        quality, source = budget_quality(ctx, variant)
        cluster = ctx.clusters[query.id]
        option = cluster.choose(quality, list(profile.experts))
        if option is None:
            raise MethodError("the profile's clusters grade none of the experts that can be recruited now")
        weights = {e: cluster.accuracy[e] for e in option.experts}
        what = option.experts[0] if len(option.experts) == 1 else "a vote of " + ", ".join(option.experts)
        if option.first is not None:
            what = f"{option.first} if its letter's margin is >= {option.accept_margin:.2f}, else {what}"
        note = (f"quality {quality:g} ({source}): cluster {cluster.cluster} ({cluster.size} validation questions): "
                f"{what}, {option.accuracy:.0%} there at {option.tokens:.0f} tokens/question")
        backups = cluster.ranking([e for e in profile.experts if e in cluster.accuracy and e not in option.experts])
        answer = Assignment(slots=[greedy(e, ctx.seed) for e in option.experts],
                            combine="single" if len(option.experts) == 1 else "vote", weights=weights, note=note,
                            backups=backups)
        if option.first is None:
            return answer
        return Assignment(slots=[greedy(option.first, ctx.seed)], combine="single", escalation=answer,
                          accept_margin=option.accept_margin, note=note, backups=backups)
