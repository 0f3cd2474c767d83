"""``symoe serve``: the router as an OpenAI-compatible model.

- ``config``: the ``server:`` section (limits, queue, batching window, cooldowns, deadline,
  the degrade rule).
- ``batching``: ``BatchingExecutor``, the request batcher behind the pipeline's executor
  seam: jobs that concurrent requests submit within a few milliseconds run as one batch
  per model; identical jobs run once, until no request wants them.
- ``health``: experts that keep failing are cooled down and left out of recruitment.
- ``schema``: the request bodies (OpenAI's shapes) and OpenAI's error shape.
- ``service``: strategies (model names) -> method specs, the admission (slots held until
  work stops, a bounded queue, 429/503), one request -> the pipeline under its cancel flag
  and deadline -> OpenAI response objects (``openai``'s own types) with a ``symoe`` record.
- ``app``: the FastAPI routes.
"""
