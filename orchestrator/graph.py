"""The query pipeline as a langgraph StateGraph.

    annotate -> recruit -> gate -> expert (one Send per slot, in parallel) -> aggregate -> extract

``Router`` holds what the nodes need (config, loaded pool, profile, skill matcher, caches,
the retriever and the retrieval gate);
``build_graph(router)`` compiles the graph; ``Router.run`` runs one query into an AskResult.
A failing expert becomes an answer with an error (the query goes on with the others); if
all fail, the default expert answers; if the aggregator fails, the majority answer stands.
"""

from __future__ import annotations

import operator
import time
from collections import Counter
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

from agents.backends import GenerationRequest
from agents.cache import GenerationCache, generate_cached
from agents.errors import SymoeError
from agents.runtime import LoadedPool
from orchestrator.aggregate import agreed_answer, synthesis_request
from orchestrator.answers import (
    EXPERT_SYSTEM,
    MAX_TOKENS,
    AnswerFormat,
    detect_format,
    expert_user_prompt,
    extract,
    split_inline_choices,
)
from orchestrator.config import SymoeConfig
from orchestrator.gate import (
    GateFeatures,
    GateModel,
    RetrieverLike,
    draft_confidence,
    format_passages,
    profile_strength,
)
from orchestrator.profiles import Profile
from orchestrator.records import ExpertAnswer, RetrievalDecision, StepUsage
from orchestrator.recruit import Recruitment, Slot, recruit
from skills.annotate import SkillAnnotation, annotate_many
from skills.vocabulary import SkillMatcher


class QueryState(TypedDict, total=False):
    question: str
    choices: list[str]
    fmt: AnswerFormat
    context: str | None
    seed: int
    k: int | None
    retrieval_mode: str
    retrieval: RetrievalDecision
    annotation: SkillAnnotation
    recruitment: Recruitment
    expert_answers: Annotated[list[ExpertAnswer], operator.add]
    steps: Annotated[list[StepUsage], operator.add]
    aggregator: str | None
    aggregated: bool
    text: str
    answer: str


class SlotTask(TypedDict):
    slot: Slot
    question: str
    choices: list[str]
    fmt: AnswerFormat
    context: str | None


def expert_request(question: str, choices: list[str], fmt: AnswerFormat, context: str | None,
                   temperature: float, seed: int, max_tokens: int | None = None) -> GenerationRequest:
    return GenerationRequest.user(expert_user_prompt(question, choices, fmt, context), system=EXPERT_SYSTEM,
                                  max_tokens=max_tokens or MAX_TOKENS[fmt], temperature=temperature, seed=seed)


def majority(answers: list[ExpertAnswer], weights: dict[str, float]) -> ExpertAnswer | None:
    """The most common stated answer; ties go to the answer of the heavier expert."""
    ok = [a for a in answers if a.error is None and a.answer is not None]
    if not ok:
        ok = [a for a in answers if a.error is None]
        return max(ok, key=lambda a: weights.get(a.expert, 0.0)) if ok else None
    counts = Counter(a.answer for a in ok)
    return max(ok, key=lambda a: (counts[a.answer], weights.get(a.expert, 0.0), -a.sample))


class Router:
    """Everything the query graph's nodes use; one per process, models stay loaded."""

    def __init__(self, config: SymoeConfig, pool: LoadedPool, profile: Profile,
                 cache: GenerationCache | None = None, retriever: RetrieverLike | None = None,
                 gate: GateModel | None = None, retriever_error: str | None = None) -> None:
        self.config = config
        self.pool = pool
        self.profile = profile
        self.cache = cache
        self.retriever = retriever
        self.retriever_error = retriever_error
        self.gate_model = gate or GateModel()
        self._matcher: SkillMatcher | None = None
        self.graph = build_graph(self)

    @property
    def matcher(self) -> SkillMatcher:
        if self._matcher is None:
            self._matcher = SkillMatcher(self.config.embedding, self.config.skills.match_threshold)
        return self._matcher

    @property
    def annotator(self) -> str:
        return self.config.skills.annotator or self.config.default_expert

    def generate(self, expert: str, request: GenerationRequest) -> ExpertAnswer:
        start = time.perf_counter()
        try:
            gen = generate_cached(self.pool.get(expert), [request], self.cache)[0]
        except SymoeError as exc:
            return ExpertAnswer(expert=expert, text="", error=str(exc), seconds=time.perf_counter() - start)
        return ExpertAnswer(expert=expert, text=gen.text, error=gen.error, prompt_tokens=gen.prompt_tokens,
                            completion_tokens=gen.completion_tokens, seconds=time.perf_counter() - start,
                            temperature=request.temperature)

    # -- nodes ---------------------------------------------------------------------------
    def annotate(self, state: QueryState) -> dict[str, Any]:
        start = time.perf_counter()
        annotation = annotate_many([state["question"]], self.pool.get(self.annotator), self.matcher,
                                   self.config.skills, seed=state["seed"], cache=self.cache)[0]
        fmt = state.get("fmt") or detect_format(state["question"], state["choices"], annotation.skills)
        return {"annotation": annotation, "fmt": fmt,
                "steps": [StepUsage(step="annotate", seconds=time.perf_counter() - start)]}

    def recruit(self, state: QueryState) -> dict[str, Any]:
        start = time.perf_counter()
        rec = recruit(state["annotation"].skills, self.profile.experts, self.config.router,
                      seed=state["seed"], k=state.get("k"))
        return {"recruitment": rec, "steps": [StepUsage(step="recruit", seconds=time.perf_counter() - start)]}

    def gate_features(self, question: str, choices: list[str], fmt: AnswerFormat, experts: list[str],
                      skills: list[str], seed: int) -> tuple[GateFeatures, list[Any]]:
        hits = self.retriever.search(question, self.config.retrieval.top_k) if self.retriever else []
        strongest = max(experts, key=lambda e: self.profile.experts[e].global_competence
                        if e in self.profile.experts else -1e9)
        draft = expert_request(question, choices, fmt, None, 0.0, seed,
                               max_tokens=self.gate_model.draft_tokens).model_copy(update={"logprobs": 2})
        gen = generate_cached(self.pool.get(strongest), [draft], self.cache)[0]
        features = GateFeatures(profile_strength=profile_strength(self.profile, experts, skills),
                                draft_confidence=draft_confidence(gen),
                                retrieval_score=max((h.score for h in hits), default=0.0))
        return features, hits

    def gate(self, state: QueryState) -> dict[str, Any]:
        """Decide whether to retrieve; put the passages into the state's context."""
        start = time.perf_counter()
        mode = state.get("retrieval_mode") or self.config.retrieval.mode
        if mode == "never":
            decision = RetrievalDecision(mode="never", retrieved=False, reason="retrieval off (--retrieval never)")
        elif self.retriever is None:
            decision = RetrievalDecision(mode=mode, retrieved=False,  # type: ignore[arg-type]
                                         reason=self.retriever_error or "no index configured")
        else:
            experts = [r.expert for r in state["recruitment"].recruits]
            if mode == "always":
                hits = self.retriever.search(state["question"], self.config.retrieval.top_k)
                go, why, score = True, "retrieval forced (--retrieval always)", None
            else:
                features, hits = self.gate_features(state["question"], state["choices"], state["fmt"], experts,
                                                    state["annotation"].skills, state["seed"])
                go, why = self.gate_model.decide(features)
                score = self.gate_model.score(features)
            passages = [{"rank": i + 1, "score": round(float(h.score), 4), "title": getattr(h, "title", None),
                         "source": getattr(h, "source", None), "text": h.text}
                        for i, h in enumerate(hits)] if go else []
            decision = RetrievalDecision(mode=mode, retrieved=go, reason=why, score=score,  # type: ignore[arg-type]
                                         passages=passages)
            if go:
                step = StepUsage(step="gate", seconds=time.perf_counter() - start)
                return {"retrieval": decision, "context": format_passages(hits), "steps": [step]}
        return {"retrieval": decision, "steps": [StepUsage(step="gate", seconds=time.perf_counter() - start)]}

    def fan_out(self, state: QueryState) -> list[Send]:
        return [Send("expert", SlotTask(slot=slot, question=state["question"], choices=state["choices"],
                                        fmt=state["fmt"], context=state.get("context")))
                for slot in state["recruitment"].slots]

    def expert(self, task: SlotTask) -> dict[str, Any]:
        slot = task["slot"]
        request = expert_request(task["question"], task["choices"], task["fmt"], task["context"],
                                 slot.temperature, slot.seed)
        answer = self.generate(slot.expert, request)
        answer.sample = slot.sample
        answer.answer = extract(answer.text, task["fmt"], len(task["choices"]), task["choices"])
        step = StepUsage(step=f"expert:{slot.expert}#{slot.sample}", seconds=answer.seconds,
                         prompt_tokens=answer.prompt_tokens, completion_tokens=answer.completion_tokens)
        return {"expert_answers": [answer], "steps": [step]}

    def aggregate(self, state: QueryState) -> dict[str, Any]:
        answers = sorted(state["expert_answers"], key=lambda a: (a.expert, a.sample))
        weights = state["recruitment"].weights
        ok = [a for a in answers if a.error is None]
        extra: list[ExpertAnswer] = []
        if not ok:  # every recruited expert failed: the default expert answers alone
            fallback = self.config.default_expert
            request = expert_request(state["question"], state["choices"], state["fmt"], state.get("context"),
                                     0.0, state["seed"])
            answer = self.generate(fallback, request)
            answer.answer = extract(answer.text, state["fmt"], len(state["choices"]), state["choices"])
            if answer.error:
                raise SymoeError(f"every recruited expert failed and so did {fallback!r}: {answer.error}")
            extra, ok = [answer], [answer]
        if len(ok) == 1 or agreed_answer(ok) is not None:
            best = majority(ok, weights)
            assert best is not None
            return {"text": best.text, "aggregator": None, "aggregated": False, "expert_answers": extra}
        aggregator = self.profile.best_aggregator(state["annotation"].skills)
        start = time.perf_counter()
        request = synthesis_request(state["question"], state["choices"], state["fmt"],
                                    [a.text for a in ok], seed=state["seed"])
        result = self.generate(aggregator, request)
        step = StepUsage(step=f"aggregate:{aggregator}", seconds=time.perf_counter() - start,
                         prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens)
        if result.error or not result.text.strip():
            best = majority(ok, weights)
            assert best is not None
            return {"text": best.text, "aggregator": None, "aggregated": False, "steps": [step],
                    "expert_answers": extra}
        return {"text": result.text, "aggregator": aggregator, "aggregated": True, "steps": [step],
                "expert_answers": extra}

    def extract(self, state: QueryState) -> dict[str, Any]:
        fmt = state["fmt"]
        answer = extract(state["text"], fmt, len(state["choices"]), state["choices"])
        if answer is None:  # the synthesis stated no clear answer: keep the majority's
            best = majority(state["expert_answers"], state["recruitment"].weights)
            answer = best.answer if best and best.answer else state["text"].strip()
        return {"answer": answer}

    # -- running -------------------------------------------------------------------------
    def run(self, question: str, choices: list[str] | None = None, fmt: AnswerFormat | None = None,
            context: str | None = None, seed: int | None = None, k: int | None = None,
            retrieval: str | None = None) -> QueryState:
        if not choices:
            question, choices = split_inline_choices(question)
        state: QueryState = {"question": question, "choices": choices or [], "context": context,
                             "seed": self.config.seed if seed is None else seed, "k": k,
                             "retrieval_mode": retrieval or self.config.retrieval.mode,
                             "expert_answers": [], "steps": []}
        if fmt:
            state["fmt"] = fmt
        return self.graph.invoke(state)  # type: ignore[return-value]


def build_graph(router: Router) -> Any:
    graph = StateGraph(QueryState)
    graph.add_node("annotate", router.annotate)
    graph.add_node("recruit", router.recruit)
    graph.add_node("gate", router.gate)
    graph.add_node("expert", router.expert)  # type: ignore[arg-type]
    graph.add_node("aggregate", router.aggregate)
    graph.add_node("extract", router.extract)
    graph.add_edge(START, "annotate")
    graph.add_edge("annotate", "recruit")
    graph.add_edge("recruit", "gate")
    graph.add_conditional_edges("gate", router.fan_out, ["expert"])
    graph.add_edge("expert", "aggregate")
    graph.add_edge("aggregate", "extract")
    graph.add_edge("extract", END)
    return graph.compile()
