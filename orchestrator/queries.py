"""Turning what a caller gives into a checked ``Query``, and cutting a reply at stop strings.

Every face (the CLI, the Python API, the server, the lm-eval model, the chat model) builds its
queries here, so the same input is refused with the same one line everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

from agents.backends import ChatMessage
from agents.errors import SymoeError
from orchestrator.answers import split_inline_choices
from orchestrator.config import SymoeConfig
from orchestrator.records import AnswerFormat, Query

MAX_CHOICES = 26
MAX_TOKENS = 8192
#: characters per token when estimating a prompt's length before any tokenizer is loaded
CHARS_PER_TOKEN = 4


def make_query(question: str, choices: list[str] | None = None, format: AnswerFormat | None = None,
               task: str | None = None, max_tokens: int | None = None) -> Query:
    """A checked ``Query``: inline 'A) ...' options become choices."""
    question = (question or "").strip()
    if not question:
        raise SymoeError("the question is empty; pass a question, or '-' to read it from stdin")
    if not choices:
        question, choices = split_inline_choices(question)
    if len(choices) > MAX_CHOICES:
        raise SymoeError(f"{len(choices)} answer choices; at most {MAX_CHOICES} (A-Z) are supported")
    if max_tokens is not None and not 1 <= max_tokens <= MAX_TOKENS:
        raise SymoeError(f"max_tokens must be from 1 to {MAX_TOKENS}, not {max_tokens}")
    return Query(question=question, choices=choices, format=format, task=task, max_tokens=max_tokens)


def check_fits(query: Query, config: SymoeConfig) -> None:
    """Refuse, before any model runs, a query far longer than every expert's context."""
    text = query.question + "".join(query.choices) + "".join(m.content for m in query.history)
    tokens = len(text) // CHARS_PER_TOKEN
    longest = max((spec.n_ctx for spec in config.experts.values()), default=0)
    if longest and tokens > longest:
        name = max(config.experts, key=lambda n: config.experts[n].n_ctx)
        raise SymoeError(f"the question is about {tokens} tokens, longer than any expert's context (the longest: "
                         f"{longest} tokens, {name}'s n_ctx): shorten it, or add an expert with a longer context")


def conversation_query(turns: list[ChatMessage], max_tokens: int | None = None) -> Query:
    """A conversation as a query: the last user message is what is annotated and routed; the
    turns before it go to the experts and the aggregator as history."""
    last = max((i for i, t in enumerate(turns) if t.role == "user"), default=None)
    if last is None or not turns[last].content.strip():
        raise SymoeError("the conversation holds no user message with text to answer")
    return Query(question=turns[last].content.strip(), max_tokens=max_tokens, history=turns[:last])


def cut_at_stop(text: str, stop: str | Sequence[str] | None) -> str:
    """The text before the first stop sequence: OpenAI's ``stop`` or lm-eval's ``until``, each
    one string or a list of them (empty strings and None stop nothing)."""
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    ends = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return text[:min(ends)] if ends else text
