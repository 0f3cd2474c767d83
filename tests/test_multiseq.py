"""Tests of agents/backends/llamacpp_multiseq.py: the scheduler on a scripted model (no model
file: continuous batching, one decode per step for every live sequence, max_tokens, stop
strings, end of generation, cancellation), and on the real 0.5B (``real``): a greedy batch of
three prompts gives each the text it gets alone, and today's backend's text; max_tokens and
stop strings hold."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from agents.backends.llamacpp_multiseq import MultiSeq, SeqRequest, SeqResult, to_generation

V = 32
EOG = 31


class _Llm:
    """Detokenizes token t as the letter chr(97 + t) (EOG as nothing)."""

    def detokenize(self, tokens: list[int], prev_tokens: list[int] | None = None, special: bool = False) -> bytes:
        return "".join(chr(97 + t) for t in tokens if t != EOG).encode()


class Scripted(MultiSeq):
    """A MultiSeq whose model is a script: after token t at position p the next token is
    ``nxt(t, p)``. Records every decode call."""

    def __init__(self, n_seq: int, nxt: Callable[[int, int], int], n_ctx_seq: int = 64, n_batch: int = 4) -> None:
        self.llm = _Llm()
        self.n_seq, self.n_ctx_seq, self.n_batch, self.n_vocab = n_seq, n_ctx_seq, n_batch, V
        self.nxt = nxt
        self.calls: list[list[tuple[int, int, int, bool]]] = []
        self.cleared: list[int] = []
        self.steps, self.prompt_seconds, self.step_seconds = 0, 0.0, 0.0
        self._closed = False

    def _decode(self, items: Any) -> None:
        self.calls.append(list(items))

    def _logits(self, i: int) -> np.ndarray:
        token, pos, _seq, wants = self.calls[-1][i]
        assert wants
        row = np.zeros(V, dtype=np.float32)
        row[self.nxt(token, pos)] = 1.0
        return row

    def _is_eog(self, token: int) -> bool:
        return token == EOG

    def _clear(self, seq: int) -> None:
        self.cleared.append(seq)


def count_up(token: int, pos: int) -> int:
    return (token + 1) % (V - 1)


def test_batched_equals_alone_and_one_decode_per_step() -> None:
    requests = [SeqRequest(tokens=[i, i + 1, i + 2], max_tokens=3 + i) for i in range(5)]
    batched = Scripted(n_seq=3, nxt=count_up)
    together = batched.run(requests)
    alone = [Scripted(n_seq=1, nxt=count_up).run([r])[0] for r in requests]
    assert [r.tokens for r in together] == [r.tokens for r in alone]
    assert [r.text for r in together] == [r.text for r in alone] == ["defgh"[:3], "efgh", "fghij", "ghijkl",
                                                                     "hijklmn"]
    steps = [c for c in batched.calls if all(wants for *_, wants in c)]
    assert max(len(c) for c in steps) == 3  # never more live sequences than slots
    for c in steps:  # one token per live sequence, each on its own sequence id
        assert len({seq for _, _, seq, _ in c}) == len(c)
    # continuous batching: 5 requests on 3 slots, every slot cleared before reuse
    assert len(batched.cleared) == 5 and set(batched.cleared) == {0, 1, 2}
    assert all(r.finish_reason == "length" and r.completion_tokens == req.max_tokens
               for r, req in zip(together, requests, strict=True))


def test_positions_continue_the_prompt() -> None:
    engine = Scripted(n_seq=2, nxt=count_up, n_batch=2)
    engine.run([SeqRequest(tokens=[0, 1, 2, 3, 4], max_tokens=2)])
    # the head [0..3] in chunks of n_batch=2 (logits for each chunk's last), then token 4 at position 4
    assert engine.calls[0] == [(0, 0, 0, False), (1, 1, 0, True)]
    assert engine.calls[1] == [(2, 2, 0, False), (3, 3, 0, True)]
    assert engine.calls[2] == [(4, 4, 0, True)]
    assert engine.calls[3] == [(5, 5, 0, True)]


def test_stop_string_and_end_of_generation() -> None:
    stop = Scripted(n_seq=2, nxt=count_up).run([SeqRequest(tokens=[0], max_tokens=10, stop=["de"])])[0]
    assert (stop.text, stop.finish_reason) == ("bc", "stop")
    assert stop.completion_tokens == 4  # the token that completed the stop string counts, as create_completion

    def ends(token: int, pos: int) -> int:
        return EOG if pos >= 3 else token + 1

    eog = Scripted(n_seq=2, nxt=ends).run([SeqRequest(tokens=[0, 1], max_tokens=10)])[0]
    assert (eog.text, eog.finish_reason, eog.completion_tokens) == ("cd", "stop", 2)


def test_logprobs_are_greedy_with_top_alternatives() -> None:
    result = Scripted(n_seq=1, nxt=count_up).run([SeqRequest(tokens=[0, 1], max_tokens=2, logprobs=3)])[0]
    assert result.text == "cd"
    assert result.token_logprobs is not None and len(result.token_logprobs) == 2
    first = result.token_logprobs[0]
    assert first.token == "c" and len(first.top) == 3 and max(first.top, key=first.top.get) == "c"


def test_cancelled_sequence_is_dropped_at_the_next_step() -> None:
    seen = {"n": 0}

    def after_three() -> bool:
        seen["n"] += 1
        return seen["n"] > 3

    engine = Scripted(n_seq=2, nxt=count_up)
    out = engine.run([SeqRequest(tokens=[0], max_tokens=20, cancelled=after_three),
                      SeqRequest(tokens=[5], max_tokens=6),
                      SeqRequest(tokens=[7], max_tokens=2, cancelled=lambda: True)])
    assert out[0].finish_reason == "cancelled" and 0 < out[0].completion_tokens < 20
    assert out[1].finish_reason == "length" and out[1].text == "ghijkl"
    assert out[2].finish_reason == "cancelled" and out[2].completion_tokens == 0
    generation = to_generation(out[0], "m")
    assert generation.was_cancelled and not generation.ok
    assert generation.usage.completion_tokens == out[0].completion_tokens


def test_too_long_prompt_fails_alone() -> None:
    out = Scripted(n_seq=2, nxt=count_up, n_ctx_seq=8).run([SeqRequest(tokens=list(range(8))),
                                                            SeqRequest(tokens=[0], max_tokens=3)])
    assert out[0].error and "context window" in out[0].error
    assert out[1].text == "bcd"
    assert not to_generation(out[0], "m").ok
    assert to_generation(SeqResult(text=" x ", finish_reason="stop"), "m").text == "x"


# ---------------------------------------------------------------------- the real 0.5B


@pytest.fixture(scope="module")
def backend(pool_expert: Callable[..., Any]) -> Any:
    from agents.backends import create_backend

    spec = pool_expert("qwen-coder-0.5b", params={"n_threads": 2})
    b = create_backend(spec)
    b.load()
    yield b
    from agents.backends.llamacpp_multiseq import release

    release(b._llm)
    b.unload()


@pytest.mark.real
def test_real_batch_equals_each_alone(backend: Any) -> None:
    from agents.backends import GenerationRequest
    from agents.backends.llamacpp_multiseq import generate_many

    requests = [GenerationRequest.user("What is 12 + 30? Answer with the number.", max_tokens=12),
                GenerationRequest.user("Name a primary colour.", max_tokens=6),
                GenerationRequest.user("Count from one to ten in words, separated by commas.", max_tokens=40,
                                       stop=["Six"]),
                GenerationRequest.user("Count from one to ten in words, separated by commas.", max_tokens=5)]
    together = generate_many(backend, requests, n_seq=3)  # four requests on three slots
    alone = [generate_many(backend, [r], n_seq=1)[0] for r in requests]
    today = backend.generate(requests)
    assert all(g.ok for g in together)
    assert [g.text for g in together] == [g.text for g in alone]
    assert [g.text for g in together] == [g.text for g in today]
    assert [g.usage.completion_tokens for g in together] == [g.usage.completion_tokens for g in today]
    assert together[1].usage.completion_tokens <= 6
    counting, cut = together[2], together[3]
    assert counting.finish_reason == "stop" and "Six" not in counting.text and "Five" in counting.text
    assert cut.finish_reason == "length" and cut.usage.completion_tokens == 5 and "Five" not in cut.text
    # the backend's own bulk path (``params.bulk``, what ``matrix build --bulk 3`` sets): the same texts
    backend.spec.params["bulk"] = 3
    try:
        assert backend.preferred_batch == 12
        bulk = backend.generate(requests)
    finally:
        del backend.spec.params["bulk"]
    assert [g.text for g in bulk] == [g.text for g in today]
    assert [g.usage.completion_tokens for g in bulk] == [g.usage.completion_tokens for g in today]


def test_bulk_schedules_without_changing_the_generation_key() -> None:
    """``--bulk`` turns on every llama.cpp model's bulk path and leaves the cache key as it was:
    a bulk-built matrix and a later one-at-a-time ``symoe eval`` share their generations."""
    from agents.cache import expert_identity
    from orchestrator.config import SymoeConfig

    cfg = SymoeConfig()
    bulk = cfg.with_bulk(8)
    assert cfg.with_bulk(1) is cfg
    for name, spec in bulk.experts.items():
        assert spec.params.get("bulk") == (8 if spec.backend == "llamacpp" else None)
        assert "bulk" not in cfg.experts[name].params  # the original config is untouched
        assert expert_identity(spec) == expert_identity(cfg.experts[name])
    other = cfg.experts["qwen-coder-0.5b"].model_copy(update={"params": {"n_threads": 1}})
    assert expert_identity(other) != expert_identity(cfg.experts["qwen-coder-0.5b"])  # engine params still count
