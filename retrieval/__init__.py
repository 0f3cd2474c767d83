"""Retrieval: a faiss index over sentence-transformers embeddings of a document corpus."""
