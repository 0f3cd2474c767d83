"""Reading corpus files into documents and cutting documents into chunks with offsets.

This module owns:

* ``read_documents(path)``: the documents of one file. Plain text (``.txt``, ``.text``,
  ``.rst``), markdown (``.md``, ``.markdown``; title: the first ``#`` heading), HTML
  (``.html``, ``.htm``; tags stripped with the stdlib ``html.parser``, ``<script>``/``<style>``
  dropped, block tags become paragraph breaks, title: ``<title>`` or the first ``<h1>``) and
  JSONL (``.jsonl``; one document per line with a ``text`` field and optional ``title``,
  ``id`` and ``source``). A file that cannot be read or decoded raises ``UnreadableFile``
  with the reason, so an index build can report it and go on.
* ``chunk_text(text)``: character spans of at most ``max_words`` words, cut at paragraph
  (blank line) boundaries where possible, long paragraphs in overlapping word windows.
* ``chunk_document(doc)``: ``Chunk`` records (document id, title, source, offsets, text).

Offsets are character offsets into the document's text: for text and markdown files the
file's text, for HTML the extracted text, for JSONL the line's ``text`` field (``line`` says
which line).
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

from pydantic import BaseModel

from agents.errors import SymoeError

TEXT_SUFFIXES = (".txt", ".text", ".rst")
MARKDOWN_SUFFIXES = (".md", ".markdown")
HTML_SUFFIXES = (".html", ".htm")
JSONL_SUFFIXES = (".jsonl",)
SUFFIXES = TEXT_SUFFIXES + MARKDOWN_SUFFIXES + HTML_SUFFIXES + JSONL_SUFFIXES
MAX_WORDS = 180  # all-MiniLM-L6-v2 reads 256 word pieces; ~180 words fit
OVERLAP_WORDS = 30


class UnreadableFile(SymoeError):
    """A corpus file that could not be read or parsed; the message says why."""


class Document(BaseModel):
    """One document of a corpus file (a whole text/markdown/HTML file, or one JSONL line)."""

    doc_id: str
    title: str
    text: str
    source: str
    line: int | None = None


class Chunk(BaseModel):
    """A piece of a document, the unit that is embedded and searched."""

    doc_id: str
    title: str
    source: str
    text: str
    start: int
    end: int
    line: int | None = None


def is_supported(path: Path) -> bool:
    return path.suffix.lower() in SUFFIXES


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UnreadableFile(f"cannot read: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnreadableFile(f"not UTF-8 text (bad byte at offset {exc.start})") from None


class _HTMLText(HTMLParser):
    """Collects visible text; block-level tags end a paragraph."""

    SKIP = {"script", "style", "noscript", "template", "svg"}
    BLOCK = {"p", "div", "section", "article", "header", "footer", "main", "aside", "nav", "li",
             "ul", "ol", "table", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "blockquote",
             "dd", "dt", "dl", "figure", "figcaption", "br", "hr", "body", "title"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.paragraphs: list[str] = []
        self.current: list[str] = []
        self.skipping = 0
        self.stack: list[str] = []
        self.title = ""
        self.h1 = ""

    def _flush(self) -> None:
        text = " ".join("".join(self.current).split())
        if text:
            self.paragraphs.append(text)
        self.current = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self.skipping += 1
        elif tag in self.BLOCK:
            self._flush()
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP and self.skipping:
            self.skipping -= 1
        elif tag in self.BLOCK:
            self._flush()
        if tag in self.stack:
            while self.stack and self.stack.pop() != tag:
                pass

    def handle_data(self, data: str) -> None:
        if self.skipping:
            return
        inside = self.stack[-1] if self.stack else ""
        if inside == "title":
            self.title += data
            return  # the title is metadata, not body text
        if inside == "h1" and not self.h1:
            self.h1 = " ".join(data.split())
        self.current.append(data)


def html_to_text(html: str) -> tuple[str, str]:
    """(title, text) of an HTML page; paragraphs separated by blank lines."""
    parser = _HTMLText()
    parser.feed(html)
    parser.close()
    parser._flush()
    title = " ".join(parser.title.split()) or parser.h1
    return title, "\n\n".join(parser.paragraphs)


def _markdown_title(text: str) -> str:
    for line in text.splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return ""


def _jsonl_documents(path: Path, text: str) -> list[Document]:
    docs = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UnreadableFile(f"line {number} is not JSON ({exc.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise UnreadableFile(f"line {number} has no string `text` field")
        doc_id = str(row.get("id") or f"{path.name}:{number}")
        docs.append(Document(doc_id=doc_id, title=str(row.get("title") or ""), text=row["text"],
                             source=str(row.get("source") or path), line=number))
    return docs


def read_documents(path: Path) -> list[Document]:
    """The documents of one corpus file; raises ``UnreadableFile`` with the reason."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise UnreadableFile(f"unsupported file type {suffix or '(none)'}; "
                             f"supported: {' '.join(SUFFIXES)}")
    text = _read_text(path)
    if suffix in JSONL_SUFFIXES:
        return _jsonl_documents(path, text)
    if suffix in HTML_SUFFIXES:
        title, text = html_to_text(text)
    elif suffix in MARKDOWN_SUFFIXES:
        title = _markdown_title(text)
    else:
        title = ""
    return [Document(doc_id=str(path), title=title or path.stem, text=text, source=str(path))]


_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n")
_WORD = re.compile(r"\S+")


def _paragraphs(text: str) -> list[list[tuple[int, int]]]:
    """Word spans of each paragraph (paragraphs are separated by blank lines)."""
    out = []
    start = 0
    for brk in [*_PARAGRAPH_BREAK.finditer(text), None]:
        end = brk.start() if brk else len(text)
        words = [(start + m.start(), start + m.end()) for m in _WORD.finditer(text[start:end])]
        if words:
            out.append(words)
        if brk:
            start = brk.end()
    return out


def chunk_text(text: str, max_words: int = MAX_WORDS, overlap: int = OVERLAP_WORDS) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of the chunks of ``text``: whole paragraphs merged up
    to ``max_words`` words; a longer paragraph in windows of ``max_words`` overlapping by
    ``overlap`` words."""
    if max_words < 1 or not 0 <= overlap < max_words:
        raise ValueError("need max_words >= 1 and 0 <= overlap < max_words")
    spans: list[tuple[int, int]] = []
    pending: list[tuple[int, int]] = []  # word spans of the chunk being filled

    def flush() -> None:
        if pending:
            spans.append((pending[0][0], pending[-1][1]))
            pending.clear()

    for words in _paragraphs(text):
        if len(words) > max_words:
            flush()
            stride = max_words - overlap
            for i in range(0, len(words), stride):
                window = words[i:i + max_words]
                spans.append((window[0][0], window[-1][1]))
                if i + max_words >= len(words):
                    break
            continue
        if len(pending) + len(words) > max_words:
            flush()
        pending.extend(words)
    flush()
    return spans


def chunk_document(doc: Document, max_words: int = MAX_WORDS, overlap: int = OVERLAP_WORDS) -> list[Chunk]:
    return [Chunk(doc_id=doc.doc_id, title=doc.title, source=doc.source, text=doc.text[s:e],
                  start=s, end=e, line=doc.line)
            for s, e in chunk_text(doc.text, max_words, overlap)]
