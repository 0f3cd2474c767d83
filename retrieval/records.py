"""The records retrieval hands out: plain pydantic, importable without faiss or an index."""

from __future__ import annotations

from pydantic import BaseModel


class Hit(BaseModel):
    """One search result; ``score`` is the cosine similarity of query and chunk."""

    chunk_id: int
    score: float
    text: str
    source: str
    title: str
    doc_id: str
    file: str
    start: int
    end: int
    line: int | None = None


def best_score(hits: list[Hit]) -> float:
    """The retrieval signal of the gate: the best hit's score, 0.0 without hits."""
    return max((float(h.score) for h in hits), default=0.0)


def format_passages(hits: list[Hit]) -> str:
    """Hits as numbered passages for a prompt: ``[1] (title) text``."""
    return "\n".join(f"[{i}] ({hit.title or hit.source}) {hit.text.strip()}" for i, hit in enumerate(hits, 1))
