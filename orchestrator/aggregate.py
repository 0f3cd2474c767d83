"""Aggregation: one synthesis round over the experts' answers, and the aggregator test.

The synthesis prompt follows Mixture-of-Agents (critically evaluate the responses, some may
be wrong, write one best answer). Reasoning tags are stripped from responses first.
Aggregation is skipped when every recruited answer states the same final answer.
The aggregator test (Symbolic-MoE) gives each candidate 1 correct and 2 incorrect responses
from validation outputs, shuffled, and grades its synthesis.
"""

from __future__ import annotations

import random

from pydantic import BaseModel

from agents.backends import GenerationRequest
from agents.prompts import strip_reasoning
from orchestrator.answers import INSTRUCTIONS, MAX_TOKENS, AnswerFormat, format_question
from orchestrator.records import ExpertAnswer

AGGREGATOR_SYSTEM = (
    "You are given several responses from other models to the user's question. Synthesise them "
    "into one correct answer. Evaluate the responses critically: some may be wrong or biased. "
    "Do not copy a response blindly; prefer the answer that is best supported."
)


def agreed_answer(answers: list[ExpertAnswer]) -> str | None:
    """The shared final answer if every successful expert states the same one."""
    stated = [a.answer for a in answers if a.error is None]
    if stated and all(s is not None for s in stated) and len(set(stated)) == 1:
        return stated[0]
    return None


def synthesis_request(question: str, choices: list[str], fmt: AnswerFormat,
                      responses: list[str], seed: int, temperature: float = 0.0) -> GenerationRequest:
    listed = "\n\n".join(f"Response {i + 1}:\n{strip_reasoning(r)[:1200]}" for i, r in enumerate(responses))
    user = (f"Question:\n{format_question(question, choices)}\n\nResponses from other models:\n\n{listed}\n\n"
            f"Write the single best answer to the question. {INSTRUCTIONS[fmt]}")
    return GenerationRequest.user(user, system=AGGREGATOR_SYSTEM, max_tokens=MAX_TOKENS[fmt],
                                  temperature=temperature, seed=seed)


class AggregationItem(BaseModel):
    """One synthetic aggregation question: responses shuffled, one of them correct."""

    question_id: str
    question: str
    choices: list[str]
    fmt: AnswerFormat
    answer: str
    task: str
    skills: list[str]
    responses: list[str]


def build_aggregation_test(items: list[dict[str, object]], seed: int, limit: int) -> list[AggregationItem]:
    """From graded validation outputs, questions with >=1 right and >=2 wrong responses.

    Each element of ``items`` has the question fields and ``right``/``wrong`` response lists.
    """
    rng = random.Random(seed)
    out: list[AggregationItem] = []
    for item in items:
        right = list(item["right"])  # type: ignore[call-overload]
        wrong = list(item["wrong"])  # type: ignore[call-overload]
        if not right or len(wrong) < 2:
            continue
        responses = [rng.choice(right), *rng.sample(wrong, 2)]
        rng.shuffle(responses)
        out.append(AggregationItem(
            question_id=str(item["id"]), question=str(item["question"]),
            choices=list(item["choices"]), fmt=item["fmt"],  # type: ignore[call-overload,arg-type]
            answer=str(item["answer"]), task=str(item["task"]), skills=list(item["skills"]),  # type: ignore[call-overload]
            responses=responses,
        ))
    rng.shuffle(out)
    return out[:limit]
