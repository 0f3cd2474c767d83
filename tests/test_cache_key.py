"""The generation cache's key covers every parameter that changes a generation."""

from __future__ import annotations

import hashlib

from agents.backends import GenerationRequest
from agents.cache import request_key
from agents.pool import ExpertSpec

REQUEST = GenerationRequest.user("What is 2 + 2?", max_tokens=8)


def test_engine_parameters_are_part_of_the_key():
    f32 = ExpertSpec(name="m", backend="transformers", path="/models/m", params={"dtype": "float32"})
    bf16 = f32.model_copy(update={"params": {"dtype": "bfloat16"}})
    assert request_key(f32, REQUEST) != request_key(bf16, REQUEST)
    reordered = f32.model_copy(update={"params": {"batch_size": 4, "dtype": "float32"}})
    same = f32.model_copy(update={"params": {"dtype": "float32", "batch_size": 4}})
    assert request_key(reordered, REQUEST) == request_key(same, REQUEST)  # order does not matter


def test_an_entry_without_parameters_keeps_the_key_it_had():
    """The default pool's entries have no parameters: their cached generations stay valid."""
    spec = ExpertSpec(name="m", backend="llamacpp", path="/models/m.gguf")
    before = f"m|llamacpp|{spec.path}|{spec.chat_template}\n{REQUEST.cache_key()}"  # the key's text until now
    assert request_key(spec, REQUEST) == hashlib.sha256(before.encode()).hexdigest()
    assert request_key(spec, REQUEST) != request_key(spec, REQUEST.model_copy(update={"temperature": 0.5}))
