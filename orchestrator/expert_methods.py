"""Expert methods: how an expert turns a question into a request and its reply into an answer.

An expert is a model *and* a method (``ExpertSpec.method``): the same Qwen2.5-Coder-1.5B can
answer ``direct`` (the answer alone), with ``cot`` (chain of thought within a token budget,
then the answer) or with a ``program`` (it writes ``solution()``, which ``agents.sandbox``
runs; the return value is the answer, and a failed or timed-out run is an expert failure
like any other). Experts on one model share its load (``ExpertSpec.uses``), so the pipeline
runs all of one model's methods in one batch.

Methods are a registry: subclass ``ExpertMethod``, implement ``instruction`` (and ``read``
when the reply is not the answer itself), and ``@expert_methods.register("name")``; an
expert in the config then names it as its ``method``. A method that reasons lists the
formats in ``finishes``: a reply of it cut at its token budget before 'Answer: ...' is
asked for the answer in a short second turn (``finish``), which the pipeline runs. A method
lists the answer formats it can produce in ``formats`` (``answers_in``): every router sends a
question only to experts whose method can produce its format (a program computes numbers and
picks letters; it cannot look up a fact, so no open ``text`` question goes to one). Built in:

- ``standard``: direct for options, chain of thought for numbers and free text (what every
  expert without a ``method`` does);
- ``direct``, ``cot``, ``program`` (the last runs only while ``sandbox.enabled``);
- ``recorded``: replay (``eval.replay``) reads an outcome matrix's recorded answer as the reply.
"""

from __future__ import annotations

import abc
import re
from typing import ClassVar, get_args

from pydantic import BaseModel, ConfigDict, Field

from agents.backends import ChatMessage, Generation, GenerationRequest
from agents.pool import ExpertSpec
from agents.registry import Registry
from agents.sandbox import SandboxLimits, run_program
from orchestrator.answers import INSTRUCTIONS, MARGIN_TOP, MAX_TOKENS, expert_request, extract, stated_answer
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
    #: formats whose reply, when it ran out before stating its answer, is asked for it in a
    #: short second turn (``finish``); empty: the reply is read as it is
    finishes: ClassVar[frozenset[str]] = frozenset()
    #: the answer formats this method can produce: routers send it questions of no other
    #: (``answers_in``)
    formats: ClassVar[frozenset[str]] = frozenset(get_args(AnswerFormat))
    #: formats whose request asks for the top log-probs of each token, so the stated answer
    #: carries its margin over the next option (a cascade's confidence signal)
    margins: ClassVar[frozenset[str]] = frozenset()

    @abc.abstractmethod
    def instruction(self, fmt: AnswerFormat) -> str:
        """What the expert is told to produce, after the question."""

    def max_tokens(self, fmt: AnswerFormat) -> int:
        return self.budget[fmt]

    def request(self, query: Query, fmt: AnswerFormat, context: str | None, temperature: float,
                seed: int) -> GenerationRequest:
        request = expert_request(query.question, query.choices, fmt, context, temperature, seed,
                                 max_tokens=query.max_tokens or self.max_tokens(fmt),
                                 instruction=self.instruction(fmt))
        return request.model_copy(update={"logprobs": MARGIN_TOP}) if fmt in self.margins else request

    def read(self, text: str, query: Query, fmt: AnswerFormat, sandbox: SandboxConfig) -> Reading:
        return Reading(answer=extract(text, fmt, len(query.choices), query.choices))

    def finish(self, request: GenerationRequest, generation: Generation, query: Query,
               fmt: AnswerFormat) -> GenerationRequest | None:
        """The second turn that asks a reply for the answer it did not state (None: it needs
        none). Reasoning cut at the token budget, or that never names an option, is told to
        stop and answer (zero-shot CoT's answer extraction); a reply that states 'Answer: ...'
        is never asked again."""
        if fmt not in self.finishes or not generation.ok or stated_answer(generation.text, fmt, len(query.choices)):
            return None
        if generation.finish_reason != "length" and extract(generation.text, fmt, len(query.choices),
                                                            query.choices) is not None:
            return None  # it finished and its answer can be read without the marker
        return request.model_copy(update={
            "messages": [*request.messages, ChatMessage(role="assistant", content=generation.text),
                         ChatMessage(role="user", content=FINISH[fmt])],
            "max_tokens": FINISH_TOKENS[fmt], "logprobs": None})


#: the second turn of ``ExpertMethod.finish``, and what it may generate
FINISH: dict[str, str] = {
    "choice": "Stop there. Reply with 'Answer:' followed by the letter of the option you choose, and nothing else.",
    "number": "Stop there. Reply with 'Answer:' followed by your final number, and nothing else.",
    "text": "Stop there. Reply with 'Answer:' followed by your short final answer, and nothing else.",
}
FINISH_TOKENS: dict[str, int] = {"choice": 8, "number": 24, "text": 32}


def finished(first: Generation, second: Generation) -> Generation:
    """A reply and its second turn as one generation: the texts joined, the costs added (a
    failed second turn leaves the reply as it was, with the time it took)."""
    if not second.ok or not second.text.strip():
        return first.model_copy(update={"usage": first.usage + second.usage})
    return first.model_copy(update={"text": f"{first.text}\n{second.text.strip()}", "usage": first.usage + second.usage,
                                    "finish_reason": second.finish_reason, "token_logprobs": None})


expert_methods: Registry[type[ExpertMethod]] = Registry("expert method")


def expert_method(name: str) -> ExpertMethod:
    """An instance of the registered method (one line naming the known ones if unknown)."""
    return expert_methods.get(name)()


def formats_of(expert: ExpertSpec) -> frozenset[str]:
    """The answer formats an expert can produce: its own ``formats`` where set (a recorded
    expert keeps its live one's), else its method's (``ExpertMethod.formats``)."""
    return frozenset(expert.formats) if expert.formats is not None else expert_methods.get(expert.method).formats


def answers_in(expert: ExpertSpec, fmt: str) -> bool:
    """Whether this expert can produce an answer in ``fmt`` (the one rule every router obeys)."""
    return fmt in formats_of(expert)


@expert_methods.register("standard")
class Standard(ExpertMethod):
    description = "the letter alone for options; brief steps, then the answer, for numbers and text"
    finishes = frozenset({"number", "text"})
    margins = frozenset({"choice"})

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
    margins = frozenset({"choice"})

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
    finishes = frozenset({"choice", "number", "text"})

    def instruction(self, fmt: AnswerFormat) -> str:
        return self._SAY[fmt]


#: the reply replay gives for an outcome whose answer the matrix did not record
UNRECORDED = "(no answer recorded)"
#: how replay's reply starts for an outcome the matrix records as a failure (``recorded_failure``)
FAILED = "(failed) "


def recorded_failure(error: str) -> str:
    """Replay's reply for an expert the matrix records as failed: read back as that failure, so a
    router that falls back asks its next expert, as it did live."""
    return FAILED + error


@expert_methods.register("recorded")
class Recorded(ExpertMethod):
    description = "replay: the reply is the answer an outcome matrix recorded for the expert"

    def instruction(self, fmt: AnswerFormat) -> str:
        return INSTRUCTIONS[fmt]

    def read(self, text: str, query: Query, fmt: AnswerFormat, sandbox: SandboxConfig) -> Reading:
        if text.startswith(FAILED):
            return Reading(error=text.removeprefix(FAILED))
        if text == UNRECORDED:  # answered, but with nothing the scorer could read: no text to extract from
            return Reading(text="")
        return Reading(answer=text)


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
    #: a program computes a number or picks a letter; an open question asks for a fact it cannot compute
    formats = frozenset({"choice", "number"})

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
