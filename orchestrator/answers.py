"""Answer formats, the prompts that ask for them, and robust answer extraction.

Three formats: ``choice`` (a letter among the options), ``number`` (a final number) and
``text`` (a short free answer). Extraction looks for the explicit final-answer forms the
prompts ask for, then for well-delimited fallbacks; it never takes a stray capital letter
from anywhere in the text (a known fault of the original Symbolic-MoE scripts).
"""

from __future__ import annotations

import re
import string

from agents.backends import GenerationRequest, TokenLogprob
from agents.prompts import strip_reasoning
from orchestrator.records import AnswerFormat

LETTERS = string.ascii_uppercase

MATH_SKILLS = {"arithmetic", "algebra", "word problems", "geometry", "calculus",
               "probability and statistics", "number theory"}

_INLINE_CHOICE = re.compile(r"^\s*\(?([A-Z])[\).:]\s+(.+)$", re.MULTILINE)


def split_inline_choices(question: str) -> tuple[str, list[str]]:
    """Split 'stem\\nA) x\\nB) y' into (stem, [x, y]) when the lines form A, B, C... in order."""
    found = _INLINE_CHOICE.findall(question)
    letters = [f[0] for f in found]
    if len(found) >= 2 and letters == list(LETTERS[: len(found)]):
        stem = question[: _INLINE_CHOICE.search(question).start()].strip()  # type: ignore[union-attr]
        return stem, [f[1].strip() for f in found]
    return question, []


def detect_format(question: str, choices: list[str], skills: list[str] | None = None) -> AnswerFormat:
    """The answer format of a query that declares none: options make it ``choice``; digits with
    an arithmetic cue or a math skill make it ``number``; anything else is ``text``."""
    if choices:
        return "choice"
    has_digit = bool(re.search(r"\d", question))
    looks_math = bool(re.search(r"\d\s*[-+*/x×^]\s*\d|how many|how much|calculate|compute|solve", question,
                                re.IGNORECASE))
    if has_digit and (looks_math or set(skills or []) & MATH_SKILLS):
        return "number"
    return "text"


def declared_format(answer: str, choices: list[str]) -> AnswerFormat:
    """The format a benchmark declares by its gold answer: options make it ``choice``, a gold
    that parses as a number ``number``, anything else ``text``."""
    if choices:
        return "choice"
    try:
        float(answer.replace(",", ""))
    except ValueError:
        return "text"
    return "number"


def format_question(question: str, choices: list[str]) -> str:
    if not choices:
        return question.strip()
    options = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))
    return f"{question.strip()}\n\n{options}"


INSTRUCTIONS: dict[AnswerFormat, str] = {
    "choice": "Reply with 'Answer:' followed by the letter of the correct option, and nothing else.",
    "number": "Solve it step by step, briefly. Finish with a last line 'Answer: <number>'.",
    "text": "Answer correctly and concisely. Finish with a last line 'Answer: <short answer>'.",
}

MAX_TOKENS: dict[AnswerFormat, int] = {"choice": 16, "number": 320, "text": 160}

EXPERT_SYSTEM = "You are a knowledgeable expert who answers questions accurately."


def expert_user_prompt(question: str, choices: list[str], fmt: AnswerFormat, context: str | None = None,
                       instruction: str | None = None) -> str:
    body = format_question(question, choices)
    if context:
        body = (f"Use these passages if they help; cite a passage by its [number] when you use it.\n\n"
                f"{context}\n\n{body}")
    return f"{body}\n\n{instruction or INSTRUCTIONS[fmt]}"


def expert_request(question: str, choices: list[str], fmt: AnswerFormat, context: str | None,
                   temperature: float, seed: int, max_tokens: int | None = None,
                   instruction: str | None = None) -> GenerationRequest:
    """The request an expert answers: the question in its format, passages when retrieved, and
    what to reply (``instruction``: an expert method's; by default the format's own)."""
    return GenerationRequest.user(expert_user_prompt(question, choices, fmt, context, instruction),
                                  system=EXPERT_SYSTEM, max_tokens=max_tokens or MAX_TOKENS[fmt],
                                  temperature=temperature, seed=seed)


_ANSWER_MARK = re.compile(r"answer\s*(?:is|:)\s*:?\s*", re.IGNORECASE)


def _stated_answers(text: str) -> list[str]:
    """What follows each 'Answer:' / 'answer is' marker, up to the next marker or line end."""
    marks = list(_ANSWER_MARK.finditer(text))
    out = []
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        segment = text[m.end() : end].split("\n", 1)[0].strip()
        if segment:
            out.append(segment)
    return out
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")


def _clean_number(text: str) -> str | None:
    found = _NUMBER.findall(text)
    if not found:
        return None
    value = found[0].replace(",", "").replace("$", "")
    if "." in value:
        value = value.rstrip("0").rstrip(".")
    return value or None


def _marked(stated: str, fmt: AnswerFormat, valid: str) -> str | None:
    """The answer one 'Answer:' line states in the format, or None."""
    if fmt == "choice":
        m = re.match(r"^[\(\[\*\s]*([A-Z])(?:[\)\]\.\*:,\s]|$)", stated)
        return m.group(1) if m and m.group(1) in valid else None
    if fmt == "number":
        return _clean_number(stated)
    return stated.strip().rstrip(".").strip("*").strip() or None


def stated_answer(text: str, fmt: AnswerFormat, n_choices: int = 0) -> str | None:
    """The answer the text's last well-formed 'Answer: ...' line states, or None: what a reply
    that finished says, as against a number or letter picked out of unfinished reasoning."""
    valid = LETTERS[: max(n_choices, 1)] if n_choices else LETTERS
    for stated in reversed(_stated_answers(strip_reasoning(text or ""))):
        answer = _marked(stated, fmt, valid)
        if answer is not None:
            return answer
    return None


def extract(text: str, fmt: AnswerFormat, n_choices: int = 0, choices: list[str] | None = None) -> str | None:
    """The final answer in ``text`` for the format, or None if none is stated clearly."""
    text = strip_reasoning(text or "")
    if not text:
        return None
    marked = stated_answer(text, fmt, n_choices)
    if marked is not None:
        return marked
    lines = _stated_answers(text)
    if fmt == "choice":
        valid = LETTERS[: max(n_choices, 1)] if n_choices else LETTERS
        m = re.match(r"^[\(\[\*\s]*([A-Z])(?:[\)\]\.:]|\s*$)", text.strip())
        if m and m.group(1) in valid:
            return m.group(1)
        m = re.search(r"(?:option|choice)\s*\(?([A-Z])\)?\b", text, re.IGNORECASE)
        if m and m.group(1).upper() in valid:
            return m.group(1).upper()
        if choices:  # exactly one option's text stated in the answer
            low = text.lower()
            hits = [i for i, c in enumerate(choices) if c.strip() and c.strip().lower() in low]
            if len(hits) == 1:
                return LETTERS[hits[0]]
        return None
    if fmt == "number":
        boxed = re.findall(r"\\boxed\{([^}]*)\}", text)
        if boxed:
            return _clean_number(boxed[-1]) or boxed[-1].strip()
        numbers = _NUMBER.findall(text)
        return _clean_number(numbers[-1]) if numbers else None
    if lines:  # every marked line was empty once cleaned
        return lines[-1].strip().rstrip(".").strip("*").strip()
    first = text.strip().splitlines()[0]
    return first.strip().rstrip(".")


#: top alternatives per token an answer's margin is read from
MARGIN_TOP = 5


def answer_margin(logprobs: list[TokenLogprob] | None, answer: str | None) -> float | None:
    """How sure a reply was of the letter it stated: at the first token that is that letter,
    its log-prob minus the best other option letter's among the token's top alternatives (a
    letter not among them counts at the lowest listed log-prob, so the margin is a lower
    bound). None when the reply carries no log-probs or never emits the letter as a token."""
    if not logprobs or not answer or len(answer) != 1:
        return None

    def letter(token: str) -> str:
        return token.strip().strip("(*").upper()

    for tok in logprobs:
        if letter(tok.token) != answer:
            continue
        others = [lp for t, lp in tok.top.items() if len(letter(t)) == 1 and letter(t) in LETTERS
                  and letter(t) != answer]
        floor = min(tok.top.values(), default=tok.logprob)
        return round(tok.logprob - max(others, default=floor), 4)
    return None


def normalise_text(text: str) -> str:
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def is_correct(predicted: str | None, gold: str, fmt: AnswerFormat, aliases: list[str] | None = None) -> bool:
    if predicted is None:
        return False
    if fmt == "choice":
        return predicted.strip().upper() == gold.strip().upper()
    if fmt == "number":
        try:
            return abs(float(predicted) - float(_clean_number(gold) or "nan")) < 1e-6
        except ValueError:
            return False
    golds = [gold, *(aliases or [])]
    pred = normalise_text(predicted)
    return any(normalise_text(g) == pred or (normalise_text(g) and normalise_text(g) in pred) for g in golds)
