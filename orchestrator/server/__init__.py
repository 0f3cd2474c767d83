"""``symoe serve``: the router as an OpenAI-compatible model.

- ``config``: the ``server:`` section (limits, batching window, cooldowns, deadline).
- ``batching``: ``BatchingExecutor``, the request batcher behind the pipeline's executor
  seam: jobs that concurrent requests submit within a few milliseconds run as one batch
  per model.
- ``health``: experts that keep failing are cooled down and left out of recruitment.
- ``schema``: the request bodies (OpenAI's shapes) and OpenAI's error shape.
- ``service``: strategies (model names) -> method specs, one request -> the pipeline ->
  OpenAI response objects (``openai``'s own types) with a ``symoe`` record.
- ``app``: the FastAPI routes.
"""
