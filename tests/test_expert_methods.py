"""Expert methods (direct, cot, program): the pool's method experts, their requests, the
program method's sandboxed run, one load per model, and a failed program degrading a query.

The pipeline tests use scripted (fake) models for control flow; the programs they return run
for real in ``agents.sandbox``. Real-model method runs are in test_routing_real.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agents.backends import Generation, Usage
from agents.cache import GenerationCache, request_key
from agents.pool import ExpertSpec
from agents.registry import RegistryError
from agents.runtime import LoadedPool
from orchestrator.config import ConfigError, SymoeConfig, load_config
from orchestrator.expert_methods import (
    ExpertMethod,
    SandboxConfig,
    expert_method,
    expert_methods,
    finished,
    program_source,
)
from orchestrator.graph import run
from orchestrator.methods import MethodSpec
from orchestrator.pipeline import Pipeline
from orchestrator.profiles import ExpertProfile, Profile, SkillCount
from orchestrator.records import Query

WORD_PROBLEM = Query(question="Tom has 3 bags of 4 apples and eats 2. How many apples are left?", format="number")


def test_the_default_pool_routes_method_experts_that_share_two_model_loads():
    config = SymoeConfig()
    assert config.routing_pool == ["qwen-1.5b-direct", "qwen-1.5b-cot", "qwen-1.5b-program",
                                   "qwen-0.5b-direct", "qwen-0.5b-program"]
    assert {config.experts[e].load_as for e in config.routing_pool} == {"qwen-coder-1.5b", "qwen-coder-0.5b"}
    program = config.experts["qwen-1.5b-program"]
    base = config.experts["qwen-coder-1.5b"]
    assert program.method == "program" and program.source == base.source and program.n_ctx == base.n_ctx
    assert program.model_file(config.home) == base.model_file(config.home)  # one file, assembled once
    for name in ("qwen-coder-1.5b", "smollm2-135m", "gemma3-270m"):
        assert not config.experts[name].routed  # named only (default expert, or one config block away)


def test_turning_the_sandbox_off_takes_program_experts_out_of_routing():
    config = SymoeConfig(sandbox={"enabled": False})
    assert config.routing_pool == ["qwen-1.5b-direct", "qwen-1.5b-cot", "qwen-0.5b-direct"]
    reading = expert_method("program").read("```python\ndef solution():\n    return 5\n```", WORD_PROBLEM,
                                            "number", config.sandbox)
    assert reading.answer is None and reading.error == "program: the sandbox is off (sandbox.enabled: false)"


def test_a_config_file_adds_a_method_expert_and_puts_a_model_back_into_routing(tmp_path: Path):
    path = tmp_path / "symoe.yaml"
    path.write_text("experts:\n  smollm2-135m: {routed: true}\n"
                    "  smol-cot: {uses: smollm2-135m, method: cot}\n"
                    "  qwen-coder-1.5b: {n_ctx: 4096}\n")
    config = load_config(path)
    assert "smollm2-135m" in config.routing_pool and config.experts["smol-cot"].load_as == "smollm2-135m"
    assert config.experts["qwen-1.5b-cot"].n_ctx == 4096  # method experts follow their model's settings


@pytest.mark.parametrize(("entry", "says"), [
    ({"uses": "nope", "method": "cot"}, "uses 'nope', which is not in the pool"),
    ({"uses": "qwen-1.5b-cot", "method": "direct"}, "which itself uses 'qwen-coder-1.5b'; name 'qwen-coder-1.5b'"),
    ({"uses": "qwen-coder-1.5b", "n_ctx": 512}, "cannot set n_ctx; give it an entry of its own"),
    ({"uses": "qwen-coder-1.5b", "method": "cott"}, "unknown expert method 'cott'; did you mean 'cot'?"),
])
def test_a_bad_method_expert_is_one_line_naming_what_to_fix(tmp_path: Path, entry: dict, says: str):
    path = tmp_path / "symoe.yaml"
    path.write_text(f"experts:\n  mine: {entry}\n".replace("'", ""))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_direct_on_options_and_cot_on_numbers_are_the_standard_requests_and_share_its_generations():
    config = SymoeConfig()
    mc = Query(question="Which planet is red?", choices=["Venus", "Mars"])
    standard, direct, cot = (expert_method(m) for m in ("standard", "direct", "cot"))
    base, direct_spec = config.experts["qwen-coder-1.5b"], config.experts["qwen-1.5b-direct"]
    assert direct.request(mc, "choice", None, 0.0, 0) == standard.request(mc, "choice", None, 0.0, 0)
    assert cot.request(WORD_PROBLEM, "number", None, 0.0, 0) == standard.request(WORD_PROBLEM, "number", None, 0.0, 0)
    same = standard.request(mc, "choice", None, 0.0, 0)
    assert request_key(direct_spec, same) == request_key(base, same)  # one cache row for both
    assert direct.request(WORD_PROBLEM, "number", None, 0.0, 0).max_tokens == 24
    assert cot.request(mc, "choice", None, 0.0, 0).max_tokens == 256
    assert "solution()" in expert_method("program").request(WORD_PROBLEM, "number", None, 0.0, 0).messages[-1].content


def test_program_source_takes_the_block_that_defines_solution():
    two_blocks = "Here:\n```python\nx = 1\n```\nthen\n```python\ndef solution():\n    return 2\n```"
    assert program_source(two_blocks) == "def solution():\n    return 2"
    assert program_source("def solution():\n    return 3\n") == "def solution():\n    return 3"
    assert program_source("```python\ndef solution():\n    return 4") == "def solution():\n    return 4"  # cut off
    assert program_source("The answer is 5.") is None


def test_the_program_method_runs_the_code_and_reads_its_return_value():
    program = expert_method("program")
    sandbox = SandboxConfig()
    reply = "```python\ndef solution():\n    bags, per_bag, eaten = 3, 4, 2\n    return bags * per_bag - eaten\n```"
    reading = program.read(reply, WORD_PROBLEM, "number", sandbox)
    assert reading.answer == "10" and reading.error is None and reading.seconds > 0
    assert reading.text is not None and reading.text.endswith("The program returned 10.\nAnswer: 10")
    mc = Query(question="Which is larger?", choices=["2**10", "10**2"])
    assert program.read("```python\ndef solution():\n    return 'A' if 2**10 > 10**2 else 'B'\n```", mc, "choice",
                        sandbox).answer == "A"
    assert program.read("```python\ndef solution():\n    return 'seven'\n```", WORD_PROBLEM, "number",
                        sandbox).error == "program: solution() returned 'seven', not a number answer"
    assert program.read("I think 10.", WORD_PROBLEM, "number", sandbox).error == \
        "program: the reply holds no `def solution()`"


@pytest.mark.parametrize(("body", "reason"), [
    ("    while True:\n        pass", "program: CPU time limit (2 s)"),
    ("    import os\n    os.system('touch /tmp/symoe-pwned')\n    return 1", "program: refused: "),
    ("    import socket\n    socket.create_connection(('127.0.0.1', 22))\n    return 1", "program: refused: "),
    ("    open('/etc/symoe-pwned', 'w').write('x')\n    return 1", "program: refused: "),
    ("    return 1 / 0", "program: error: ZeroDivisionError"),
])
def test_a_hostile_or_broken_program_is_an_expert_failure_with_one_line(body: str, reason: str):
    sandbox = SandboxConfig(limits={"wall_seconds": 3, "cpu_seconds": 2})
    reading = expert_method("program").read(f"```python\ndef solution():\n{body}\n```", WORD_PROBLEM, "number", sandbox)
    assert reading.answer is None and reading.error is not None and reading.error.startswith(reason)
    assert "\n" not in reading.error
    assert not os.path.exists("/tmp/symoe-pwned") and not os.path.exists("/etc/symoe-pwned")


def test_a_user_registers_a_method_without_touching_the_pipeline():
    @expert_methods.register("shout")
    class Shout(ExpertMethod):
        def instruction(self, fmt):
            return "SHOUT THE ANSWER: 'Answer: <number>'."

    try:
        config = SymoeConfig(experts={"m": ExpertSpec(backend="fake"), "loud": ExpertSpec(uses="m", method="shout")},
                             default_expert="m")
        assert config.experts["loud"].method == "shout"
        assert "SHOUT" in expert_method("shout").request(WORD_PROBLEM, "number", None, 0.0, 0).messages[-1].content
    finally:
        expert_methods._entries.pop("shout")
    with pytest.raises(RegistryError):
        expert_method("shout")


# -- the pipeline with scripted models: one load per model, a failed program degrades -------
class WordMatcher:
    def canonical(self, keywords):
        return list(dict.fromkeys(keywords)), []


HOSTILE = "```python\ndef solution():\n    import os\n    os.system('echo pwned > /tmp/symoe-pwned')\n    return 1\n```"
GOOD = "```python\ndef solution():\n    return 3 * 4 - 2\n```"


def method_pipeline(tmp_path: Path, program_reply: str) -> Pipeline:
    answers = {"Which skills": "Keywords: arithmetic", "Write a Python function": program_reply,
               "Reply with 'Answer:' followed by the final number": "Answer: 10",
               "step by step": "3*4 = 12, 12 - 2 = 10.\nAnswer: 10"}
    experts = {"model": ExpertSpec(backend="fake", params={"answers": answers}, routed=False),
               "m-direct": ExpertSpec(uses="model", method="direct"),
               "m-cot": ExpertSpec(uses="model", method="cot"),
               "m-program": ExpertSpec(uses="model", method="program")}
    config = SymoeConfig(home=tmp_path, experts=experts, default_expert="model",
                         sandbox={"limits": {"wall_seconds": 5}}, retrieval={"mode": "never"},
                         recruit={"k": 3, "adaptive_k": False, "allow_samples": False})
    scores = {"m-program": 6, "m-direct": 5, "m-cot": 4}
    profile = Profile(pool={}, annotator="model", experts={
        n: ExpertProfile(skills={"arithmetic": SkillCount(right=s)}, tasks={"t": SkillCount(right=s)})
        for n, s in scores.items()})
    ctx = Pipeline(config, pool=LoadedPool(config.experts, tmp_path), profile=profile)
    ctx._matcher = WordMatcher()  # type: ignore[assignment]
    return ctx


def test_three_methods_of_one_model_run_on_one_load_in_one_batch(tmp_path: Path):
    ctx = method_pipeline(tmp_path, GOOD)
    plans = run(ctx, [WORD_PROBLEM], [MethodSpec.parse("symoe", ctx.config)])
    assert ctx.pool.loads == ["model"]
    by_expert = {a.expert: a for a in plans[0].answers}
    assert {e: (a.method, a.answer) for e, a in by_expert.items()} == {
        "m-program": ("program", "10"), "m-direct": ("direct", "10"), "m-cot": ("cot", "10")}
    assert plans[0].answer == "10" and not plans[0].aggregated  # the methods agree: no synthesis
    step = next(s for s in plans[0].steps if s.step == "expert:m-program#0")
    assert step.usage.seconds >= by_expert["m-program"].method_seconds > 0  # the program's run is its cost


def test_a_hostile_program_fails_its_expert_and_the_others_answer(tmp_path: Path):
    ctx = method_pipeline(tmp_path, HOSTILE)
    p = run(ctx, [WORD_PROBLEM], [MethodSpec.parse("symoe", ctx.config)])[0]
    failed = [a for a in p.answers if not a.ok]
    assert [a.expert for a in failed] == ["m-program"]
    assert failed[0].error is not None and failed[0].error.startswith("program: refused: ")
    assert p.answer == "10" and p.error is None
    assert not os.path.exists("/tmp/symoe-pwned")


# -- the second turn: reasoning cut before its answer is asked for it --------------------------
MC = Query(question="Which planet is red?", choices=["Venus", "Mars", "Jupiter", "Saturn"])


def test_cot_asks_for_the_answer_only_when_its_reply_states_none():
    cot, direct = expert_method("cot"), expert_method("direct")
    request = cot.request(MC, "choice", None, 0.0, 7)
    cut = Generation(text="Mars looks red because of iron oxide, while Venus", model="m", finish_reason="length")
    turn = cot.finish(request, cut, MC, "choice")
    assert turn is not None and turn.seed == 7 and turn.max_tokens == 8
    assert [m.role for m in turn.messages] == ["system", "user", "assistant", "user"]
    assert turn.messages[2].content == cut.text and turn.messages[:2] == request.messages
    said = Generation(text="Iron oxide.\nAnswer: B", model="m", finish_reason="stop")
    assert cot.finish(request, said, MC, "choice") is None  # it stated its answer
    assert direct.finish(request, cut, MC, "choice") is None  # direct never reasons: read as it is
    number = Query(question="What is 3 * 4 - 2?", format="number")
    req = cot.request(number, "number", None, 0.0, 0)
    assert cot.finish(req, Generation(text="3*4 = 12, minus 2 is 10", model="m", finish_reason="stop"),
                      number, "number") is None  # it finished; its last number is its answer
    assert cot.finish(req, Generation(text="3*4 = 12, minus", model="m", finish_reason="length"),
                      number, "number") is not None  # cut: the 12 is not its answer
    assert cot.finish(req, Generation.failure("m", "boom"), number, "number") is None


def test_the_second_turn_is_joined_into_the_reply_and_its_cost_counted():
    first = Generation(text="Mars is", model="m", usage=Usage(prompt_tokens=50, completion_tokens=256, seconds=2.0),
                       finish_reason="length")
    second = Generation(text="Answer: B", model="m", usage=Usage(prompt_tokens=320, completion_tokens=3, seconds=0.5),
                        finish_reason="stop")
    joined = finished(first, second)
    assert joined.text == "Mars is\nAnswer: B" and joined.usage == Usage(prompt_tokens=370, completion_tokens=259,
                                                                         seconds=2.5)
    failed = finished(first, Generation.failure("m", "boom", seconds=0.1))
    assert failed.text == first.text and failed.usage.seconds == pytest.approx(2.1)


def test_the_pipeline_runs_the_second_turn_and_reads_its_answer(tmp_path: Path):
    answers = {"Think it through": "Venus is hot and Mars is red, but on the other", "Stop there.": "Answer: B"}
    experts = {"model": ExpertSpec(backend="fake", params={"answers": answers}, routed=False),
               "m-cot": ExpertSpec(uses="model", method="cot")}
    config = SymoeConfig(home=tmp_path, experts=experts, default_expert="model", retrieval={"mode": "never"})
    cache = GenerationCache(tmp_path / "cache.sqlite")
    ctx = Pipeline(config, pool=LoadedPool(config.experts, tmp_path), cache=cache)
    p = run(ctx, [MC], [MethodSpec.parse("single:m-cot", config)])[0]
    assert p.answer == "B" and p.answers[0].text.endswith("Answer: B")
    assert ctx.stats.generated == 2 and p.usage.completion_tokens == 11 + 2  # both turns are its cost
    again = Pipeline(config, pool=LoadedPool(config.experts, tmp_path), cache=cache)
    q = run(again, [MC], [MethodSpec.parse("single:m-cot", config)])[0]
    assert q.answer == "B" and again.stats.generated == 0 and again.stats.from_cache == 2  # both turns cached
