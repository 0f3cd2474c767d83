"""Evaluation: datasets in one JSONL question format, batch benchmark runs with baselines,
resumable caching of every generation, and reports (JSON, markdown, CSV, PNG)."""
