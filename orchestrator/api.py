"""The typed Python API: ``Symoe(config).ask(question) -> AskResult``.

The same object serves the CLI. Models stay loaded between calls until ``close()``.
"""

from __future__ import annotations

import time
from pathlib import Path

from agents.backends import GenerationRequest
from agents.errors import SymoeError
from agents.prompts import strip_reasoning
from agents.runtime import LoadedPool
from orchestrator.config import SymoeConfig, load_config
from orchestrator.provenance import provenance
from orchestrator.records import AskResult, ExpertAnswer, StepUsage

ANSWER_SYSTEM = "You are a knowledgeable expert. Answer the question correctly and concisely."


class Symoe:
    """A team of expert LLMs behind one ``ask``."""

    def __init__(self, config: SymoeConfig | None = None, config_path: Path | str | None = None):
        self.config = config or load_config(config_path)
        self.pool = LoadedPool(self.config.experts, self.config.home)

    def close(self) -> None:
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

    def ask(self, question: str, model: str | None = None, max_tokens: int = 256) -> AskResult:
        return self.ask_single(question, model=model, max_tokens=max_tokens)


def _check_question(question: str) -> str:
    question = (question or "").strip()
    if not question:
        raise SymoeError("the question is empty; pass a question, or '-' to read it from stdin")
    return question


def ask(question: str, **kwargs: object) -> AskResult:
    """One-shot helper: build ``Symoe`` from the default config, answer, free the models."""
    with Symoe() as symoe:
        return symoe.ask(question, **kwargs)  # type: ignore[arg-type]
