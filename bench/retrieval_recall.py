"""Retrieval quality: recall@1/5/10 of the gold paragraph for SQuAD questions over the offline corpus.

    python bench/retrieval_recall.py [--index DIR] [--rebuild] [--split all|validation|test]
                                     [--json out.json]

Builds the built-in corpus index (``eval.corpus.build_corpus``: SQuAD's Wikipedia
paragraphs plus the BoolQ and SciQ passages, all ~4.6k of them) into a fresh temporary
folder, or into ``--index DIR`` (incremental there: an existing index is reused, and the
build time then only covers what changed; ``--rebuild`` starts it from empty). Then every
SQuAD question (1000, or one split) is searched with k=10; a question counts for recall@k
when a chunk of its gold paragraph (``Question.passage_id``) is among the first k hits.

Printed: corpus size, build time (reading, chunking, embedding, writing), and query
throughput (questions/s, embedding the questions and searching, in one batch).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from agents.progress import stage_bars  # noqa: E402
from eval.corpus import build_corpus  # noqa: E402
from eval.datasets import load_task, split_of  # noqa: E402
from orchestrator.config import load_config  # noqa: E402
from retrieval.index import open_index  # noqa: E402

KS = (1, 5, 10)


def recall(questions: list, hits: list[list]) -> dict[int, float]:
    found = {k: 0 for k in KS}
    for q, row in zip(questions, hits, strict=True):
        ranks = [i for i, h in enumerate(row) if h.doc_id == q.passage_id]
        for k in KS:
            found[k] += bool(ranks and ranks[0] < k)
    return {k: 100 * found[k] / len(questions) for k in KS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", type=Path, help="index folder to build or reuse (default: a fresh temp folder)")
    parser.add_argument("--rebuild", action="store_true", help="rebuild --index from empty")
    parser.add_argument("--split", default="all", choices=("all", "validation", "test"))
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args()

    cfg = load_config()
    err = Console(stderr=True)
    with tempfile.TemporaryDirectory(prefix="symoe-recall-") as tmp:
        index_dir = args.index or Path(tmp) / "index"
        with stage_bars(err) as progress:
            report = build_corpus(cfg.home, index_dir, cfg.embedding, rebuild=args.rebuild, progress=progress)
        retriever = open_index(index_dir, cfg.embedding)
        questions = [q for q in load_task("squad", cfg.home)
                     if args.split == "all" or split_of(q) == args.split]
        start = time.perf_counter()
        hits = retriever.search_many([q.question for q in questions], k=max(KS))
        query_seconds = time.perf_counter() - start
        docs = sum(f.documents for f in retriever.meta.files.values())
        figures = {
            "questions": len(questions), "split": args.split, "passages": docs, "chunks": len(retriever),
            "embedding": retriever.meta.embedding.describe(),
            "build_seconds": report.seconds, "chunks_embedded": report.chunks_added,
            "query_seconds": round(query_seconds, 2),
            "queries_per_second": round(len(questions) / query_seconds, 1),
            **{f"recall@{k}": round(v, 1) for k, v in recall(questions, hits).items()},
        }

    table = Table(title=f"SQuAD gold-paragraph recall over the offline corpus ({figures['split']} questions)")
    for col in ("questions", "passages", "chunks", "recall@1", "recall@5", "recall@10", "build s",
                "chunks embedded", "queries/s"):
        table.add_column(col, justify="right")
    table.add_row(str(figures["questions"]), str(docs), str(figures["chunks"]),
                  *(f"{figures[f'recall@{k}']:.1f}%" for k in KS), f"{report.seconds:.1f}",
                  str(report.chunks_added), f"{figures['queries_per_second']:.1f}")
    Console(width=140).print(table)
    print(f"embedding: {figures['embedding']}; query time {figures['query_seconds']} s "
          "(embedding the questions and searching, one batch)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
