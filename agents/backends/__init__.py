"""Inference backends behind one interface, each registered by name (see ``registry``).

Importing this package registers the built-in backends; a backend whose engine is not
installed registers anyway and fails with a clear message when it is loaded.
"""

# Built-in backends register themselves on import.
from agents.backends import fake as _fake  # noqa: E402,F401
from agents.backends import llamacpp as _llamacpp  # noqa: E402,F401
from agents.backends import openai_backend as _openai  # noqa: E402,F401
from agents.backends import recorded as _recorded  # noqa: E402,F401
from agents.backends import transformers_backend as _transformers  # noqa: E402,F401
from agents.backends import vllm_backend as _vllm  # noqa: E402,F401
from agents.backends.base import (
    Backend,
    BackendError,
    ChatMessage,
    Generation,
    GenerationRequest,
    TokenLogprob,
    Usage,
)
from agents.backends.registry import available_backends, create_backend, register_backend

__all__ = [
    "Backend",
    "BackendError",
    "ChatMessage",
    "Generation",
    "GenerationRequest",
    "TokenLogprob",
    "Usage",
    "available_backends",
    "create_backend",
    "register_backend",
]
