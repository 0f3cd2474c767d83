"""Retrieval: a faiss index over sentence-transformers embeddings of a document corpus.

* ``retrieval.records``: ``Hit`` (a search result, importable without faiss), ``best_score``,
  ``format_passages``.
* ``retrieval.chunking``: text/markdown/HTML/JSONL files -> documents -> chunks with offsets.
* ``retrieval.index``: the on-disk index, incremental ``build_index``, ``open_index`` ->
  ``Retriever.search(query, k)`` -> ``Hit`` records.

The embedding model is ``agents.embedder`` (shared with skills); the built-in corpus, which
reads benchmark data, is ``eval.corpus``; the commands are ``symoe index ...``.
"""
