"""Latency of one uncached ``symoe ask``: routed methods against a single expert, in one run.

    .venv/bin/python bench/ask_latency.py [--questions 4] [--task mmlu] [--routers symoe,cascade,clusters]
                                          [--single qwen-1.5b-direct]

Each test question is asked one at a time, as a user would, through ``Symoe.ask`` (the
pipeline on a batch of one) with an empty generation cache of its own (a temporary file),
so every generation runs now; models stay loaded across questions, as in a session or a
server, and the first question is asked once beforehand (with another cache) so no method
pays a model's first load, and before each ask every loaded engine forgets the prompt state
it kept (llama.cpp reloads a primed prompt, so a method asking the prompt the one before it
asked would pay nothing for it). For each method it prints wall seconds per question, generated
tokens, the ratio to the single expert, and where the time went (annotate, gate, experts,
aggregate, ...: the steps of the answer's record).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eval.datasets import load_split  # noqa: E402
from orchestrator.config import load_config  # noqa: E402
from orchestrator.methods import best_single_expert  # noqa: E402
from orchestrator.session import Symoe  # noqa: E402


def step_kind(step: str) -> str:
    """'expert:qwen-1.5b-cot#0' -> 'experts'; 'aggregate:x' -> 'aggregate'; 'annotate' stays."""
    head = step.partition(":")[0]
    return {"expert": "experts", "first": "experts (cascade's first)"}.get(head, head)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=4)
    parser.add_argument("--task", default="mmlu")
    parser.add_argument("--routers", "--methods", dest="methods", default="symoe,cascade,clusters")
    parser.add_argument("--single", help="the single expert to compare with (default: the best on the task's "
                                         "validation questions, as best_single picks)")
    parser.add_argument("--skip", type=int, default=300, help="test questions skipped first (keeps them unseen)")
    args = parser.parse_args()
    config = load_config()
    questions = load_split(args.task, "test", config.home, limit=args.skip + args.questions + 1, seed=0)
    warm, asked = questions[args.skip], questions[args.skip + 1:args.skip + 1 + args.questions]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    with Symoe(config, use_cache=False) as symoe:  # every ask generates: uncached latency
        single = args.single or best_single_expert(symoe.pipeline.profile, args.task)
        runs = [f"single:{single}", *methods]
        for method in runs:  # load every model once, on a question not timed
            symoe.ask(warm.question, choices=warm.choices or None, router=method)
        rows: dict[str, list[tuple[float, int, dict[str, float]]]] = defaultdict(list)
        for i, q in enumerate(asked):
            for method in runs:
                symoe.pool.forget_state()  # no method reuses the prompt state another one left
                start = time.perf_counter()
                result = symoe.ask(q.question, choices=q.choices or None, router=method)
                wall = time.perf_counter() - start
                where: dict[str, float] = defaultdict(float)
                for s in result.steps:
                    where[step_kind(s.step)] += s.usage.seconds
                rows[method].append((wall, result.usage.completion_tokens, dict(where)))
                print(f"  q{i + 1} {method}: {wall:.1f} s, {result.usage.completion_tokens} tokens, "
                      f"experts {', '.join(result.experts)}", flush=True)
    base = sum(w for w, _, _ in rows[runs[0]]) / len(asked)
    print(f"\n{len(asked)} uncached {args.task} questions, one at a time, models loaded:\n")
    print(f"{'method':<28} {'s/question':>10} {'x single':>9} {'tokens/q':>9}   where the time went (s/question)")
    for method in runs:
        wall = sum(w for w, _, _ in rows[method]) / len(asked)
        tokens = sum(t for _, t, _ in rows[method]) / len(asked)
        where: dict[str, float] = defaultdict(float)
        for _, _, parts in rows[method]:
            for k, v in parts.items():
                where[k] += v / len(asked)
        print(f"{method:<28} {wall:>10.1f} {wall / base:>8.2f}x {tokens:>9.1f}   "
              + ", ".join(f"{k} {v:.1f}" for k, v in sorted(where.items(), key=lambda kv: -kv[1])))


if __name__ == "__main__":
    main()
