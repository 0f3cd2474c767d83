"""Aggregation rules: agreement, a cascade's acceptance, the majority vote, and the one
synthesis round.

The synthesis prompt follows Mixture-of-Agents (critically evaluate the responses, some may
be wrong, write one best answer). Reasoning tags are stripped from responses first.
Aggregation is skipped when every recruited answer states the same final answer. (Which
aggregator is best comes from the profile's aggregator test, built in ``eval.profiling``.)
"""

from __future__ import annotations

from collections import Counter

from agents.backends import GenerationRequest
from agents.prompts import strip_reasoning
from orchestrator.answers import INSTRUCTIONS, MAX_TOKENS, format_question
from orchestrator.records import AnswerFormat, ExpertAnswer

AGGREGATOR_SYSTEM = (
    "You are given several responses from other models to the user's question. Synthesise them "
    "into one correct answer. Evaluate the responses critically: some may be wrong or biased. "
    "Do not copy a response blindly; prefer the answer that is best supported."
)


def agreed_answer(answers: list[ExpertAnswer]) -> str | None:
    """The shared final answer if every successful expert states the same one."""
    stated = [a.answer for a in answers if a.ok]
    if stated and all(s is not None for s in stated) and len(set(stated)) == 1:
        return stated[0]
    return None


def accepted(answers: list[ExpertAnswer], margin: float | None) -> bool:
    """Whether a cascade's first answers stand: every expert answered, they state the same
    answer, and (where ``margin`` is set) each was at least that sure of its letter. The live
    cascade (``escalate``) and every replay of one on recorded answers ask this."""
    return (all(a.ok for a in answers) and agreed_answer(answers) is not None
            and (margin is None or all(a.margin is not None and a.margin >= margin for a in answers)))


def synthesis_request(question: str, choices: list[str], fmt: AnswerFormat,
                      responses: list[str], seed: int, temperature: float = 0.0) -> GenerationRequest:
    listed = "\n\n".join(f"Response {i + 1}:\n{strip_reasoning(r)[:1200]}" for i, r in enumerate(responses))
    user = (f"Question:\n{format_question(question, choices)}\n\nResponses from other models:\n\n{listed}\n\n"
            f"Write the single best answer to the question. {INSTRUCTIONS[fmt]}")
    return GenerationRequest.user(user, system=AGGREGATOR_SYSTEM, max_tokens=MAX_TOKENS[fmt],
                                  temperature=temperature, seed=seed)


def majority(answers: list[ExpertAnswer], weights: dict[str, float]) -> ExpertAnswer | None:
    """The most common stated answer; ties go to the answer of the heavier expert."""
    ok = [a for a in answers if a.ok and a.answer is not None]
    if not ok:
        ok = [a for a in answers if a.ok]
        return max(ok, key=lambda a: weights.get(a.expert, 0.0)) if ok else None
    counts = Counter(a.answer for a in ok)
    return max(ok, key=lambda a: (counts[a.answer], weights.get(a.expert, 0.0), -a.sample))
