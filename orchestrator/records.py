"""Typed records that flow one way through the query pipeline and out to JSON files.

    Query -> (SkillAnnotation) -> Plan (recruitment, jobs) -> Jobs filled by ``execute``
          -> ExpertAnswers -> the plan's final text and answer -> AskResult

A ``Job`` carries its own result back (``generation``), as lm-evaluation-harness's
``Instance`` carries ``resps``: no side tables. Every cost is a ``Usage``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, Field

from agents.backends import ChatMessage, Generation, GenerationRequest, Usage
from retrieval.records import Hit

AnswerFormat = Literal["choice", "number", "text"]
RetrievalMode = Literal["auto", "always", "never"]
RETRIEVAL_MODES: tuple[RetrievalMode, ...] = ("never", "always", "auto")
Combine = Literal["single", "vote", "synthesis", "symoe"]


class Query(BaseModel):
    """One question as a caller poses it. ``format`` is the answer format the caller declares
    (a benchmark knows it; ``symoe ask --format``); None lets the pipeline detect it."""

    question: str
    choices: list[str] = Field(default_factory=list)
    format: AnswerFormat | None = None
    id: str = ""
    task: str | None = None
    max_tokens: int | None = Field(None, ge=1, le=8192, description="cap on each expert's answer (default: by format)")
    history: list[ChatMessage] = Field(default_factory=list, description="earlier turns of a conversation")
    skills: list[str] | None = Field(
        default=None, description="skills the caller already knows (a matrix row's recorded keywords, say): routing "
                                  "uses them and annotates nothing")

    def model_post_init(self, _: object) -> None:
        if not self.id:
            self.id = "q-" + self.key[:16]

    @property
    def key(self) -> str:
        """A digest of what is asked (question and options): routing draws are seeded by it, so
        the same question is routed the same way whoever asks it and under whatever id."""
        text = self.question + "\x1f" + "\x1f".join(self.choices)
        return hashlib.sha256(text.encode()).hexdigest()


class Job(BaseModel):
    """One generation to run: which expert's model, what request; ``execute`` fills the rest.
    ``on_text`` (never serialised) asks for the text piece by piece as it is produced."""

    model: str
    request: GenerationRequest
    #: the query this job answers as an expert (an expert's slot, its second turn, the fallback;
    #: '' for annotation, gate drafts and syntheses); never part of the cache key, it lets an
    #: executor of recorded outcomes (``eval.replay``) find the answer it replays
    query_id: str = ""
    generation: Generation | None = None
    cached: bool = False
    #: an expert's job whose method was asked for a second turn (``ExpertMethod.finish``)
    #: and, where it needed one, has it joined into ``generation``
    finished: bool = False
    on_text: Callable[[str], None] | None = Field(default=None, exclude=True, repr=False)
    #: the cancel flag (``agents.backends.base.Cancel``) of whoever wants this job; executors
    #: attach the calling thread's (``current_cancel``); never serialised
    cancel: Any = Field(default=None, exclude=True, repr=False)

    @property
    def done(self) -> bool:
        return self.generation is not None

    @property
    def ok(self) -> bool:
        return self.generation is not None and self.generation.ok

    @property
    def usage(self) -> Usage:
        return self.generation.usage if self.generation else Usage()


class ExpertAnswer(BaseModel):
    """One expert's reply in a slot, read by its method; ``sample`` > 0 marks an extra sampled
    slot of that expert. It failed when the model did (``generation.error``) or when its
    method did with the reply (``failure``: a program that crashed or timed out)."""

    expert: str
    sample: int = 0
    temperature: float = 0.0
    generation: Generation
    method: str = "standard"
    answer: str | None = None
    reply: str | None = Field(default=None, description="what the method made of the text (a program and its value)")
    failure: str | None = None
    method_seconds: float = Field(default=0.0, description="time the method took after generation (the program's run)")
    margin: float | None = Field(default=None, description="log-prob of the stated letter minus the next option's")
    fallback: bool = False

    @property
    def text(self) -> str:
        return self.reply if self.reply is not None else self.generation.text

    @property
    def error(self) -> str | None:
        return self.failure or self.generation.error

    @property
    def ok(self) -> bool:
        return self.generation.ok and self.failure is None

    @property
    def usage(self) -> Usage:
        return self.generation.usage + Usage(seconds=self.method_seconds)


class Recruit(BaseModel):
    """Why an expert was recruited: its local (skill) and global scores and its weight."""

    expert: str
    weight: float
    local: float = 0.0
    global_strength: float = 0.0
    slots: int = 1


class Slot(BaseModel):
    expert: str
    sample: int  # 0 = the greedy answer; 1.. = extra samples at temperature > 0
    temperature: float
    seed: int


class Recruitment(BaseModel):
    """Which experts answer and why: the k slots drawn, the weights they were drawn by."""

    recruits: list[Recruit]
    slots: list[Slot]
    k: int
    reason: str
    weights: dict[str, float]


class StepUsage(BaseModel):
    """What one step of answering a query cost; ``cached`` when its generations came from
    the cache (their usage is what producing them cost the first time)."""

    step: str
    usage: Usage = Field(default_factory=Usage)
    cached: bool = False

    @classmethod
    def of(cls, step: str, jobs: list[Job], seconds: float = 0.0) -> StepUsage:
        """What ``jobs`` cost, plus ``seconds`` spent beside them; cached when all came from the cache."""
        usage = Usage.total([j.usage for j in jobs])
        return cls(step=step, usage=usage + Usage(seconds=seconds) if seconds else usage,
                   cached=bool(jobs) and all(j.cached for j in jobs))


class GateFeatures(BaseModel):
    profile_strength: float
    draft_confidence: float
    retrieval_score: float


class RetrievalDecision(BaseModel):
    mode: RetrievalMode
    retrieved: bool
    reason: str
    score: float | None = None
    features: GateFeatures | None = None
    passages: list[Hit] = Field(default_factory=list)


class RoutedExpert(BaseModel):
    """One expert a router chose: how it answers (its method), its weight, its slots."""

    expert: str
    method: str
    weight: float | None = None
    slots: int = 1


class RouteDecision(BaseModel):
    """What a router decided for one query, before any expert answers (``Symoe.route``)."""

    question: str
    router: str
    routed: bool
    format: AnswerFormat
    skills: list[str] = Field(default_factory=list)
    experts: list[RoutedExpert] = Field(default_factory=list, description="who answers, heaviest first")
    combine: Combine
    aggregator: str | None = Field(None, description="who synthesises when the answers disagree")
    escalation: list[RoutedExpert] = Field(default_factory=list,
                                           description="a cascade: who answers when its first experts disagree")
    retrieval: RetrievalDecision | None = None
    reason: str = Field("", description="why these experts, in words")
    steps: list[StepUsage] = Field(default_factory=list, description="what deciding cost (annotation, gate)")
    seconds: float = 0.0


class AskResult(BaseModel):
    """The answer to one query and everything that explains it: the one answer record every
    face returns (the CLI prints it, the server and the chat model attach ``record()``,
    evaluation scores it)."""

    question: str
    query_id: str = ""
    answer: str
    extracted: bool = Field(True, description="the answer was found in the text in the query's format "
                                              "(False: ``answer`` is the whole text)")
    text: str
    method: str
    routed: bool
    format: AnswerFormat
    skills: list[str] = Field(default_factory=list)
    unknown_skills: list[str] = Field(default_factory=list)
    experts: list[str] = Field(default_factory=list, description="the distinct experts that answered, heaviest first")
    recruitment: Recruitment | None = None
    routing: str = Field("", description="why the method chose these experts, in words")
    escalated: bool | None = Field(None, description="a cascade: its first experts disagreed (None: no cascade)")
    first_answers: list[ExpertAnswer] = Field(default_factory=list, description="a cascade's first experts' answers")
    expert_answers: list[ExpertAnswer] = Field(default_factory=list)
    aggregator: str | None = None
    aggregated: bool = False
    fallback: str | None = Field(None, description="the expert that answered because every recruited one failed")
    retrieval: RetrievalDecision | None = None
    profile: str | None = None
    steps: list[StepUsage] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    seconds: float = Field(0.0, description="wall time of this call")
    error: str | None = Field(None, description="set when no expert could answer (ask raises it)")
    failed: int = Field(0, description="failed generations among the expert, fallback and aggregator jobs")
    succeeded: int = Field(0, description="successful generations among them")
    provenance: dict[str, object] = Field(default_factory=dict)

    def record(self) -> dict[str, object]:
        """Why this answer, from whom, at what cost: what the server's ``symoe`` object and the
        chat model's ``response_metadata["symoe"]`` carry."""
        rec = self.recruitment
        return {
            "method": self.method, "answer": self.answer, "format": self.format, "skills": self.skills,
            "experts": self.experts, "weights": rec.weights if rec else {}, "k": rec.k if rec else len(self.experts),
            "aggregator": self.aggregator, "aggregated": self.aggregated, "fallback": self.fallback,
            "escalated": self.escalated,
            "retrieval": self.retrieval.model_dump(exclude={"passages"}) if self.retrieval else None,
            "steps": [s.model_dump() for s in self.steps],
            "failed_experts": sorted({a.expert for a in self.expert_answers if not a.ok}),
            "seconds": self.seconds,
        }
