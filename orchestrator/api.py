"""The typed Python API: ``Symoe(config).ask(question) -> AskResult``.

The same object serves the CLI. Models stay loaded between calls until ``close()``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from agents.backends import GenerationRequest
from agents.errors import SymoeError
from agents.prompts import strip_reasoning
from agents.runtime import LoadedPool
from orchestrator.config import SymoeConfig, load_config
from orchestrator.provenance import provenance
from orchestrator.records import AskResult, ExpertAnswer, StepUsage

if TYPE_CHECKING:
    from orchestrator.gate import RetrieverLike
    from orchestrator.graph import Router

ANSWER_SYSTEM = "You are a knowledgeable expert. Answer the question correctly and concisely."


class Symoe:
    """A team of expert LLMs behind one ``ask``."""

    def __init__(self, config: SymoeConfig | None = None, config_path: Path | str | None = None):
        self.config = config or load_config(config_path)
        self.pool = LoadedPool(self.config.experts, self.config.home)
        self._router: Router | None = None
        self.profile_path: Path | None = None

    def router(self, profile: Path | None = None) -> Router:
        """The skill router over this pool (loads the profile; raises if there is none)."""
        if self._router is None:
            from agents.cache import GenerationCache
            from orchestrator.gate import load_gate
            from orchestrator.graph import Router
            from orchestrator.profiles import load_profile

            loaded, self.profile_path = load_profile(self.config, profile)
            cache = GenerationCache(self.config.home / "cache" / "ask.sqlite")
            retriever, problem = open_retriever(self.config)
            self._router = Router(self.config, self.pool, loaded, cache=cache, retriever=retriever,
                                  gate=load_gate(self.config.retrieval.gate, self.config.home), retriever_error=problem)
        return self._router

    def close(self) -> None:
        if self._router is not None and self._router.cache is not None:
            self._router.cache.close()
        self.pool.close()

    def __enter__(self) -> Symoe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ask_single(self, question: str, model: str | None = None, max_tokens: int = 256) -> AskResult:
        """Answer with one expert (``model``, default the config's strongest)."""
        question = _check_question(question)
        name = model or self.config.default_expert
        self.config.expert(name)  # raises a clear error for unknown names
        start = time.perf_counter()
        backend = self.pool.get(name)
        request = GenerationRequest.user(question, system=ANSWER_SYSTEM, max_tokens=max_tokens,
                                         seed=self.config.seed)
        gen = backend.generate([request])[0]
        if gen.error:
            raise SymoeError(f"expert {name!r} failed: {gen.error}")
        text = strip_reasoning(gen.text)
        seconds = time.perf_counter() - start
        return AskResult(
            question=question, answer=text, text=text, routed=False,
            expert_answers=[ExpertAnswer(expert=name, text=gen.text, answer=text,
                                         prompt_tokens=gen.prompt_tokens,
                                         completion_tokens=gen.completion_tokens,
                                         seconds=gen.seconds)],
            steps=[StepUsage(step="expert", seconds=seconds, prompt_tokens=gen.prompt_tokens,
                             completion_tokens=gen.completion_tokens)],
            prompt_tokens=gen.prompt_tokens, completion_tokens=gen.completion_tokens,
            seconds=seconds, provenance=provenance(self.config, mode="single", model=name),
        )

    def ask(self, question: str, model: str | None = None, max_tokens: int = 256,
            choices: list[str] | None = None, seed: int | None = None, k: int | None = None,
            profile: Path | None = None, retrieval: str | None = None) -> AskResult:
        """Route the question to the best-suited experts; ``model`` forces one expert instead."""
        if model is not None:
            return self.ask_single(question, model=model, max_tokens=max_tokens)
        question = _check_question(question)
        router = self.router(profile)
        start = time.perf_counter()
        state = router.run(question, choices=choices, seed=seed, k=k, retrieval=retrieval)
        seconds = time.perf_counter() - start
        answers = state["expert_answers"]
        steps = state["steps"]
        annotation = state["annotation"]
        return AskResult(
            question=question, answer=state["answer"], text=strip_reasoning(state["text"]), routed=True,
            skills=annotation.skills, unknown_skills=annotation.unknown,
            recruited=state["recruitment"].recruits, expert_answers=answers,
            aggregator=state.get("aggregator"), aggregated=bool(state.get("aggregated")),
            retrieval=state.get("retrieval"),
            profile=str(self.profile_path), steps=steps,
            prompt_tokens=sum(s.prompt_tokens for s in steps),
            completion_tokens=sum(s.completion_tokens for s in steps), seconds=seconds,
            provenance=provenance(self.config, mode="routed", profile=str(self.profile_path),
                                  annotator=router.annotator, k=state["recruitment"].k,
                                  recruit_reason=state["recruitment"].reason,
                                  weights=state["recruitment"].weights),
        )


def open_retriever(config: SymoeConfig) -> tuple[RetrieverLike | None, str | None]:
    """The configured index (``retrieval.index``, else the built-in corpus index if built),
    or None and the reason it is not there."""
    try:
        from retrieval.index import default_index_dir, open_index
    except ImportError as exc:
        return None, f"retrieval is unavailable ({exc})"

    path = config.retrieval.index or default_index_dir(config.home)
    if not path.exists():
        return None, f"no index at {path}; build one with `symoe index corpus` or `symoe index build PATH`"
    try:
        return open_index(path, config.embedding), None
    except SymoeError as exc:
        return None, str(exc)


def _check_question(question: str) -> str:
    question = (question or "").strip()
    if not question:
        raise SymoeError("the question is empty; pass a question, or '-' to read it from stdin")
    return question


def ask(question: str, **kwargs: object) -> AskResult:
    """One-shot helper: build ``Symoe`` from the default config, answer, free the models."""
    with Symoe() as symoe:
        return symoe.ask(question, **kwargs)  # type: ignore[arg-type]
