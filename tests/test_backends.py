"""The llamacpp and transformers backends on real models of the default pool.

Content checks use questions the small experts were seen to answer right with greedy
decoding (SmolLM2-135M-Instruct; Gemma 3 270M base through a completion prompt). Memory is
process RSS (VmRSS); no timing is asserted anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agents.backends import BackendError, GenerationRequest, create_backend
from agents.backends.base import Backend, ChatMessage
from agents.pool import ExpertSpec

pytestmark = pytest.mark.real

MB = 1 << 20

#: Chat questions SmolLM2-135M answers right greedily (llama.cpp and transformers), with the
#: words a right answer contains. ("What is the capital of France?" it answers in French
#: nonsense under llama.cpp; this wording gets Paris from both engines.)
CHAT_QUESTIONS: list[tuple[str, tuple[str, ...]]] = [
    ("Which city is the capital of France?", ("paris",)),
    ("What is the capital of Japan?", ("tokyo",)),
    ("How many legs does a dog have?", ("four", "4")),
    ("What is 2+2?", ("4", "four")),
    ("What is the chemical symbol for gold?", ("au",)),
    ("What language is spoken in Spain?", ("spanish",)),
]


def _right(texts: list[str], questions: list[tuple[str, tuple[str, ...]]]) -> list[bool]:
    return [any(w in t.lower() for w in words) for t, (_, words) in zip(texts, questions, strict=True)]


def _check_batch(out: list[Any], questions: list[tuple[str, tuple[str, ...]]], name: str, max_tokens: int) -> None:
    assert len(out) == len(questions)
    right = _right([g.text for g in out], questions)
    assert right[0], out[0].text  # Paris
    assert sum(right) >= len(questions) - 1, [g.text for g in out]
    for g in out:
        assert g.ok and g.model == name
        assert g.usage.prompt_tokens > 5 and 0 < g.usage.completion_tokens <= max_tokens
        assert g.usage.seconds > 0


def _sampled(seed: int, max_tokens: int = 20) -> GenerationRequest:
    return GenerationRequest.user("Tell me a short story about a cat.", max_tokens=max_tokens,
                                  temperature=0.8, seed=seed)


def _memory_cycle(backend: Backend, rss: Callable[[], int]) -> tuple[int, int]:
    """(bytes a load added, bytes the unload gave back), measured on a warm process."""
    assert not backend.loaded
    before = rss()
    backend.load()
    loaded = rss()
    backend.unload()
    after = rss()
    return loaded - before, loaded - after


# ---------------------------------------------------------------- llama.cpp


@pytest.fixture(scope="module")
def smol_cpp(pool_expert: Callable[..., ExpertSpec]) -> Iterator[Backend]:
    backend = create_backend(pool_expert("smollm2-135m"))
    yield backend
    backend.unload()


def test_llamacpp_batch_in_one_call(smol_cpp: Backend) -> None:
    out = smol_cpp.generate([GenerationRequest.user(q, max_tokens=24) for q, _ in CHAT_QUESTIONS])
    _check_batch(out, CHAT_QUESTIONS, "smollm2-135m", 24)
    assert all(g.finish_reason in {"stop", "length"} for g in out)


def test_llamacpp_base_model_gets_a_completion_prompt(pool_expert: Callable[..., ExpertSpec]) -> None:
    spec = pool_expert("gemma3-270m")
    assert spec.chat_template is False
    questions = [("What is the capital of France?", ("paris",)), ("What is the capital of Japan?", ("tokyo",)),
                 ("What is 2+2?", ("4",)), ("What color is the sky on a clear day?", ("blue",))]
    with create_backend(spec) as backend:
        out = backend.generate([GenerationRequest.user(q, max_tokens=24) for q, _ in questions])
    _check_batch(out, questions, "gemma3-270m", 24)
    for g in out:
        # the completion stops end the answer before the base model invents the next question
        assert "Question" not in g.text and "\n\n" not in g.text and g.usage.completion_tokens < 24


def test_llamacpp_seed_makes_sampling_repeatable(smol_cpp: Backend) -> None:
    a, b, c, d = smol_cpp.generate([_sampled(1), _sampled(1), _sampled(2), _sampled(3)])
    (again,) = smol_cpp.generate([_sampled(1)])
    assert a.usage.completion_tokens > 5
    assert a.text == b.text == again.text
    assert len({a.text, c.text, d.text}) > 1  # three seeds giving one text would mean no sampling


def test_llamacpp_stop_and_max_tokens(smol_cpp: Backend) -> None:
    short, stopped = smol_cpp.generate([
        GenerationRequest.user("Which city is the capital of France?", max_tokens=3),
        GenerationRequest.user("Which city is the capital of France?", max_tokens=32, stop=["Paris"]),
    ])
    assert short.usage.completion_tokens == 3 and short.finish_reason == "length"
    assert stopped.text and "Paris" not in stopped.text and stopped.finish_reason == "stop"


def test_llamacpp_logprob_draft_matches_greedy_text(smol_cpp: Backend, pool_expert: Callable[..., ExpertSpec]) -> None:
    """GenerationRequest(logprobs=5): a greedy draft with each token's log-prob and top-5."""
    questions = [q for q, _ in CHAT_QUESTIONS[:2]] + ["Name a primary colour."]
    plain = smol_cpp.generate([GenerationRequest.user(q, max_tokens=16) for q in questions])
    drafts = smol_cpp.generate([GenerationRequest.user(q, max_tokens=16, logprobs=5) for q in questions])
    for p, d in zip(plain, drafts, strict=True):
        assert d.ok and d.text == p.text  # the same greedy answer as create_chat_completion
        assert d.usage.prompt_tokens == p.usage.prompt_tokens
        assert d.token_logprobs is not None and len(d.token_logprobs) == d.usage.completion_tokens > 0
        for tok in d.token_logprobs:
            assert len(tok.top) <= 5 and tok.token in tok.top
            assert tok.logprob <= 0 and tok.logprob == pytest.approx(max(tok.top.values()))
            assert sum(math.exp(v) for v in tok.top.values()) <= 1 + 1e-6
        assert "".join(t.token for t in d.token_logprobs).strip() == d.text
    # confident on an easy answer: the first token of "The capital of Japan is Tokyo." is likely
    assert max(t.logprob for t in drafts[1].token_logprobs or []) > math.log(0.5)
    # a base model: completion prompt and completion stops, same text as create_completion
    with create_backend(pool_expert("gemma3-270m")) as base:
        req = GenerationRequest.user("What is the capital of France?", max_tokens=16)
        (p,) = base.generate([req])
        (d,) = base.generate([req.model_copy(update={"logprobs": 5})])
    assert d.text == p.text and "paris" in d.text.lower() and d.finish_reason == "stop"


def test_llamacpp_unload_gives_memory_back(pool_expert: Callable[..., ExpertSpec], rss: Callable[[], int]) -> None:
    spec = pool_expert("qwen-coder-0.5b")  # 491 MB file: a clear signal over allocator noise
    backend = create_backend(spec)
    backend.load()  # warm-up: first-use imports and library state stay in the process
    backend.unload()
    added, returned = _memory_cycle(backend, rss)
    assert added > 300 * MB, added // MB  # the weights really were resident
    # llama.cpp maps the file and frees its buffers: 85% or more comes back (slack: KV cache
    # pages and heap the allocator keeps).
    assert returned > 0.85 * added, (added // MB, returned // MB)
    backend.load()  # reload works and answers
    (g,) = backend.generate([GenerationRequest.user("What is the capital of France?", max_tokens=16)])
    backend.unload()
    assert "paris" in g.text.lower()
    assert not backend.loaded


def test_llamacpp_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    spec = ExpertSpec(name="ghost", backend="llamacpp", path=tmp_path / "nope.gguf")
    with pytest.raises(BackendError, match="not found.*symoe models prepare"):
        create_backend(spec).load()


def test_llamacpp_bad_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 1000)
    with pytest.raises(BackendError, match="llama.cpp could not load"):
        create_backend(ExpertSpec(name="bad", backend="llamacpp", path=bad)).load()


# ------------------------------------------------------------- transformers


@pytest.fixture(scope="module")
def tf_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh home, so the GGUF -> safetensors conversion really runs in these tests."""
    return tmp_path_factory.mktemp("symoe-tf-home")


@pytest.fixture(scope="module")
def smol_tf(pool_expert: Callable[..., ExpertSpec], tf_home: Path) -> Iterator[Backend]:
    spec = pool_expert("smollm2-135m", backend="transformers", params={"home": str(tf_home)})
    backend = create_backend(spec)
    backend.load()
    yield backend
    backend.unload()


def test_transformers_batch_in_one_generate_call(smol_tf: Backend) -> None:
    model = smol_tf._model  # type: ignore[attr-defined]
    calls: list[int] = []
    real = model.generate

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(int(kwargs["input_ids"].shape[0]))
        return real(*args, **kwargs)

    model.generate = counting
    questions = CHAT_QUESTIONS[:5]
    try:
        out = smol_tf.generate([GenerationRequest.user(q, max_tokens=24) for q, _ in questions])
    finally:
        del model.generate
    assert calls == [len(questions)]  # one padded batch, not a loop over requests
    _check_batch(out, questions, "smollm2-135m", 24)


def test_transformers_seed_makes_sampling_repeatable(smol_tf: Backend) -> None:
    # a copy of a request in the same batch gets the same text; another seed another text
    a, b, c = smol_tf.generate([_sampled(1, 12), _sampled(1, 12), _sampled(2, 12)])
    (again,) = smol_tf.generate([_sampled(1, 12)])
    assert a.usage.completion_tokens > 5
    assert a.text == b.text == again.text
    assert a.text != c.text


def test_transformers_conversion_cached_once_and_reused(
    smol_tf: Backend, tf_home: Path, pool_expert: Callable[..., ExpertSpec]
) -> None:
    folder = tf_home / "hf" / "smollm2-135m"
    weights = sorted(folder.glob("*.safetensors"))
    assert (folder / "config.json").exists() and weights, sorted(p.name for p in folder.iterdir())
    stamps = {p: p.stat().st_mtime_ns for p in weights}
    assert [p.name for p in tf_home.joinpath("hf").iterdir()] == ["smollm2-135m"]  # no leftover temp folder
    # a new backend over the same home (another process would be the same) reads the folder
    spec = pool_expert("smollm2-135m", backend="transformers", params={"home": str(tf_home)})
    with create_backend(spec) as second:
        (g,) = second.generate([GenerationRequest.user("What is the capital of Japan?", max_tokens=12)])
    assert "tokyo" in g.text.lower()
    assert {p: p.stat().st_mtime_ns for p in weights} == stamps  # not converted again


def test_transformers_unload_gives_memory_back(smol_tf: Backend, rss: Callable[[], int]) -> None:
    smol_tf.unload()
    # float32 weights are converted into process memory, so a load shows in RSS; bfloat16 ones
    # (the default where the CPU computes them natively) are mapped from the safetensors file.
    f32 = create_backend(smol_tf.spec.model_copy(update={"params": {**smol_tf.spec.params, "dtype": "float32"}}))
    added, returned = _memory_cycle(f32, rss)
    # 135M parameters as float32 are 540 MB
    assert added > 300 * MB, added // MB
    # 70% or more comes back: glibc keeps some freed heap even after malloc_trim (seen: 80-90%).
    assert returned > 0.7 * added, (added // MB, returned // MB)
    smol_tf.load()
    (g,) = smol_tf.generate([GenerationRequest.user("What is the capital of Japan?", max_tokens=12)])
    assert "tokyo" in g.text.lower()


def test_transformers_base_model_prompt_and_stops(smol_tf: Backend) -> None:
    """``chat_template: false`` uses the completion prompt and its stops (same converted folder)."""
    spec = smol_tf.spec.model_copy(update={"chat_template": False, "name": "smollm2-135m"})
    turns = ["What is the capital of Italy?", "Rome.", "What is the capital of Germany?", "Berlin."]
    roles = ["user", "assistant"] * 2
    shots = [ChatMessage(role=r, content=t) for r, t in zip(roles, turns, strict=True)]  # type: ignore[arg-type]
    requests = [GenerationRequest(messages=[*shots, ChatMessage(role="user", content=f"What is the capital of {c}?")],
                                  max_tokens=16) for c in ("France", "Japan")]
    smol_tf.unload()
    base = create_backend(spec)
    try:
        out = base.generate(requests)
    finally:
        base.unload()
    for g, city in zip(out, ("paris", "tokyo"), strict=True):
        assert city in g.text.lower() and "Question" not in g.text, g.text
