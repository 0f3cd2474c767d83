"""What routing costs per question: skills from the LLM annotator vs from neighbours, in one run.

    .venv/bin/python bench/routing_cost.py [--questions 12] [--tasks mmlu,gsm8k,arc_challenge]

Routes the same test questions twice through the pipeline's ``plan`` stage (annotate, then
recruit with ``symoe``), once with ``skills.source: llm`` (five annotator samples, no
generation cache) and once with ``neighbours`` (the profile's labelled questions vote),
and prints seconds and generated tokens per question, the ratio, and how often the two
recruit the same experts. Experts do not answer here: this is the price of routing alone.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eval.datasets import load_split  # noqa: E402
from orchestrator.config import load_config  # noqa: E402
from orchestrator.pipeline import plan  # noqa: E402
from orchestrator.session import Symoe  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=12)
    parser.add_argument("--tasks", default="mmlu,gsm8k,arc_challenge")
    args = parser.parse_args()
    tasks = [t for t in args.tasks.split(",") if t]
    base = load_config()
    per_task = -(-args.questions // len(tasks))
    queries = [q.query() for t in tasks for q in load_split(t, "test", base.home, limit=per_task, seed=3)]
    queries = queries[: args.questions]
    results = {}
    for source in ("llm", "neighbours"):
        config = load_config(skills={**base.skills.model_dump(), "source": source})
        symoe = Symoe(config, use_cache=False)  # every annotation runs
        ctx = symoe.pipeline
        method = symoe.router("symoe", retrieval="never")
        try:
            ctx.pool.get(ctx.annotator) if source == "llm" else ctx.neighbours  # loads outside the timing
            start = time.perf_counter()
            plans = plan(ctx, queries, [method], seed=0)
            seconds = time.perf_counter() - start
        finally:
            symoe.close()
        tokens = sum(j.usage.completion_tokens for p in plans for j in p.annotation_jobs)
        results[source] = {"seconds": seconds, "tokens": tokens, "experts": [p.experts for p in plans],
                           "skills": [p.skills for p in plans]}
    n = len(queries)
    llm, near = results["llm"], results["neighbours"]
    same = sum(a == b for a, b in zip(llm["experts"], near["experts"], strict=True))
    overlap = sum(bool(set(a) & set(b)) for a, b in zip(llm["skills"], near["skills"], strict=True))
    annotator = base.skills.annotator or base.default_expert
    print(f"{n} test questions ({', '.join(tasks)}), routed by symoe; annotator {annotator}")
    print("| skills from | s/question | generated tokens/question |")
    print("|---|---|---|")
    for source, r in results.items():
        print(f"| {source} | {r['seconds'] / n:.2f} | {r['tokens'] / n:.0f} |")
    print(f"ratio llm/neighbours: {llm['seconds'] / max(near['seconds'], 1e-9):.0f}x; same recruited experts on "
          f"{same}/{n} questions; a skill in common on {overlap}/{n}")


if __name__ == "__main__":
    main()
