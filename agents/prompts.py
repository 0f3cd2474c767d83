"""Turning chat requests into what an engine takes.

Chat models get their own chat template (the engine applies it). Base models without a
template get a completion-style prompt from ``completion_prompt``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agents.backends.base import ChatMessage

_THINK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL)


#: Stops for completion-style prompts, so a base model does not invent the next question.
COMPLETION_STOPS = ["\nQuestion:", "\nAnswer:", "\n\n"]


def completion_prompt(messages: list[ChatMessage]) -> str:
    """A plain-text prompt for a base model: instructions, then the turns, ending in 'Answer:'."""
    parts: list[str] = []
    for message in messages:
        if message.role == "system":
            parts.append(message.content.strip())
        elif message.role == "user":
            parts.append(f"Question: {message.content.strip()}")
        else:
            parts.append(f"Answer: {message.content.strip()}")
    return "\n\n".join(parts) + "\nAnswer:"


def strip_reasoning(text: str) -> str:
    """Drop ``<think>...</think>`` blocks (an unterminated one runs to the end)."""
    if "</think>" in text and "<think>" not in text:
        text = text.split("</think>", 1)[1]
    return _THINK.sub("", text).strip()
