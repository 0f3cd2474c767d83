"""Retrieval: a faiss index over sentence-transformers embeddings of a document corpus.

* ``retrieval.embedder``: the offline embedding model (shared with skills), its identity.
* ``retrieval.chunking``: text/markdown/HTML/JSONL files -> documents -> chunks with offsets.
* ``retrieval.index``: the on-disk index, incremental ``build_index``, ``open_index`` ->
  ``Retriever.search(query, k)`` -> ``Hit`` records; ``best_score(hits)`` for the gate.
* ``retrieval.corpus``: the built-in offline corpus (SQuAD/BoolQ/SciQ paragraphs).
* ``retrieval.cli``: ``symoe index build|corpus|search|info``.
"""
