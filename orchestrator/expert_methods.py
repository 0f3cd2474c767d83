"""Expert methods: how an expert turns a question into a request and its reply into an answer.

An expert is a model *and* a method (``ExpertSpec.method``): the same Qwen2.5-Coder-1.5B can
answer ``direct`` (the answer alone), with ``cot`` (chain of thought within a token budget,
then the answer) or with a ``program`` (it writes ``solution()``, which ``agents.sandbox``
runs; the return value is the answer, and a failed or timed-out run is an expert failure
like any other). Experts on one model share its load (``ExpertSpec.uses``), so the pipeline
runs all of one model's methods in one batch.

Methods are a registry: subclass ``ExpertMethod``, implement ``instruction`` (and ``read``
when the reply is not the answer itself), and ``@expert_methods.register("name")``; an
expert in the config then names it as its ``method``. Built in:

- ``standard``: direct for options, chain of thought for numbers and free text (what every
  expert without a ``method`` does);
- ``direct``, ``cot``, ``program`` (the last runs only while ``sandbox.enabled``).
"""

from __future__ import annotations

import abc
import re
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from agents.backends import GenerationRequest
from agents.registry import Registry
from agents.sandbox import SandboxLimits, run_program
from orchestrator.answers import INSTRUCTIONS, MAX_TOKENS, expert_request, extract
from orchestrator.records import AnswerFormat, Query


class SandboxConfig(BaseModel):
    """Where the ``program`` method's code runs (``sandbox:``); ``enabled: false`` turns it off."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="false: program experts are not recruited, and fail if named")
    limits: SandboxLimits = Field(default_factory=SandboxLimits)


class Reading(BaseModel):
    """What a method read from an expert's reply: its answer, or why there is none."""

    answer: str | None = None
    #: what the expert said, as shown and as handed to an aggregator (None: the reply itself)
    text: str | None = None
    #: set when the method failed although the model replied (a program that crashed)
    error: str | None = None
    #: time the method spent after generation (running the program)
    seconds: float = 0.0


class ExpertMethod(abc.ABC):
    """One way for a model to answer. ``instruction`` and ``max_tokens`` shape the request;
    ``read`` turns the reply into an answer (by default: the answer the text states)."""

    description: ClassVar[str] = ""
    #: True when ``read`` runs code the model wrote (off while ``sandbox.enabled`` is false)
    runs_code: ClassVar[bool] = False
    #: generated tokens allowed per answer format (a query's own ``max_tokens`` wins)
    budget: ClassVar[dict[str, int]] = MAX_TOKENS

    @abc.abstractmethod
    def instruction(self, fmt: AnswerFormat) -> str:
        """What the expert is told to produce, after the question."""

    def max_tokens(self, fmt: AnswerFormat) -> int:
        return self.budget[fmt]

    def request(self, query: Query, fmt: AnswerFormat, context: str | None, temperature: float,
                seed: int) -> GenerationRequest:
        return expert_request(query.question, query.choices, fmt, context, temperature, seed,
                              max_tokens=query.max_tokens or self.max_tokens(fmt), instruction=self.instruction(fmt))

    def read(self, text: str, query: Query, fmt: AnswerFormat, sandbox: SandboxConfig) -> Reading:
        return Reading(answer=extract(text, fmt, len(query.choices), query.choices))


expert_methods: Registry[type[ExpertMethod]] = Registry("expert method")


def expert_method(name: str) -> ExpertMethod:
    """An instance of the registered method (one line naming the known ones if unknown)."""
    return expert_methods.get(name)()


@expert_methods.register("standard")
class Standard(ExpertMethod):
    description = "the letter alone for options; brief steps, then the answer, for numbers and text"

    def instruction(self, fmt: AnswerFormat) -> str:
        return INSTRUCTIONS[fmt]


@expert_methods.register("direct")
class Direct(ExpertMethod):
    description = "the answer alone: a letter, a number, a short phrase"

    _SAY: ClassVar[dict[str, str]] = {
        "choice": INSTRUCTIONS["choice"],  # the standard request: both share its generations
        "number": "Reply with 'Answer:' followed by the final number, and nothing else.",
        "text": "Reply with 'Answer:' followed by a short answer of a few words, and nothing else.",
    }
    budget: ClassVar[dict[str, int]] = {"choice": MAX_TOKENS["choice"], "number": 24, "text": 32}

    def instruction(self, fmt: AnswerFormat) -> str:
        return self._SAY[fmt]


@expert_methods.register("cot")
class ChainOfThought(ExpertMethod):
    description = "reasons step by step within a token budget, then states the answer"

    _SAY: ClassVar[dict[str, str]] = {
        "choice": "Think it through step by step, briefly. Finish with a last line 'Answer: <letter>'.",
        "number": INSTRUCTIONS["number"],  # the standard request: both share its generations
        "text": INSTRUCTIONS["text"],
    }
    budget: ClassVar[dict[str, int]] = {**MAX_TOKENS, "choice": 256}

    def instruction(self, fmt: AnswerFormat) -> str:
        return self._SAY[fmt]


_FENCE = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)(?:```|$)", re.DOTALL | re.IGNORECASE)


def program_source(text: str) -> str | None:
    """The code in a reply: the fenced block that defines ``solution``, else the whole reply
    if it defines it, or None when there is none."""
    blocks = [b.strip() for b in _FENCE.findall(text)]
    for block in blocks:
        if re.search(r"^\s*def\s+solution\s*\(", block, re.MULTILINE):
            return block
    if re.search(r"^\s*def\s+solution\s*\(", text, re.MULTILINE):
        return text.strip()
    return None


@expert_methods.register("program")
class Program(ExpertMethod):
    description = "writes a Python function solution(); symoe runs it in the sandbox and returns its value"
    runs_code = True

    budget: ClassVar[dict[str, int]] = dict.fromkeys(MAX_TOKENS, 384)
    _RETURNS: ClassVar[dict[str, str]] = {
        "choice": "the letter of the correct option (a string such as 'A')",
        "number": "the final number",
        "text": "the answer as a short string",
    }

    def instruction(self, fmt: AnswerFormat) -> str:
        return (f"Write a Python function `solution()` that takes no arguments, works the answer out and "
                f"returns {self._RETURNS[fmt]}. Use only the standard library. Reply with the code in one "
                "```python block, and nothing else.")

    def read(self, text: str, query: Query, fmt: AnswerFormat, sandbox: SandboxConfig) -> Reading:
        if not sandbox.enabled:
            return Reading(error="program: the sandbox is off (sandbox.enabled: false)")
        source = program_source(text)
        if source is None:
            return Reading(error="program: the reply holds no `def solution()`")
        run = run_program(source, "solution", sandbox.limits)
        if not run.ok:
            return Reading(error=f"program: {run.reason}", seconds=run.seconds)
        value = (run.value or "").strip().strip("'\"")
        if not value or value == "null":
            return Reading(error="program: solution() returned nothing", seconds=run.seconds)
        stated = f"```python\n{source}\n```\nThe program returned {value}.\nAnswer: {value}"
        answer = extract(f"Answer: {value}", fmt, len(query.choices), query.choices)
        if answer is None:
            return Reading(error=f"program: solution() returned {value[:60]!r}, not a {fmt} answer",
                           seconds=run.seconds)
        return Reading(answer=answer, text=stated, seconds=run.seconds)
