"""What routing costs per question: skills from the LLM annotator vs from neighbours, in one run;
with ``--decisions``, the milliseconds of each routing decision of the methods that call no LLM.

    .venv/bin/python bench/routing_cost.py [--questions 12] [--tasks mmlu,gsm8k,arc_challenge]
    .venv/bin/python bench/routing_cost.py --decisions [--questions 30]
        [--tasks mmlu,arc_challenge,medmcqa,gsm8k,math,nq_open]
        [--routers best_single,task_best,clusters,cascade,budget,learned:knn] [--profile PATH]

Routes the same test questions twice through the pipeline's ``plan`` stage (annotate, then
recruit with ``symoe``), once with ``skills.source: llm`` (five annotator samples, no
generation cache) and once with ``neighbours`` (the profile's labelled questions vote),
and prints seconds and generated tokens per question, the ratio, and how often the two
recruit the same experts. Experts do not answer here: this is the price of routing alone.

``--decisions`` times, for each router, one ``plan`` call per question, one question at a
time as ``symoe ask`` routes it (its embedding, its nearest cluster or learned scores, the
format filter, the method's choice), after each router has planned one question untimed (so
the embedder, the profile, the clusters and the learned routers are loaded and fitted), and
the index search the retrieval gate runs for the routers that retrieve (separately: the gate's
draft is a generation). Skills come from the profile's neighbours (``skills.source:
neighbours``: no LLM), so ``cascade`` is timed without an annotation. It prints the mean,
90th percentile and largest milliseconds per question (the issue's bar: under 50 ms).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eval.datasets import load_split  # noqa: E402
from orchestrator.config import load_config  # noqa: E402
from orchestrator.pipeline import embed_few, plan  # noqa: E402
from orchestrator.session import Symoe  # noqa: E402

DECIDING = "best_single,task_best,clusters,cascade,budget,learned:knn"
MIXED_TASKS = "mmlu,arc_challenge,medmcqa,gsm8k,math,nq_open"


def p90(values: list[float]) -> float:
    """The 90th percentile (nearest rank)."""
    ranked = sorted(values)
    return ranked[max(0, -(-9 * len(ranked) // 10) - 1)]


def decisions(args: argparse.Namespace) -> None:
    """Milliseconds of each router's decision per question, models and embeddings loaded."""
    tasks = [t for t in (args.tasks or MIXED_TASKS).split(",") if t]
    base = load_config()
    config = load_config(skills={**base.skills.model_dump(), "source": "neighbours"})
    per_task = -(-args.questions // len(tasks))
    picked = [[q.query() for q in load_split(t, "test", base.home, limit=per_task + 1, seed=3)] for t in tasks]
    warm = picked[0][0]
    queries = [q for rank in range(per_task) for qs in picked for q in qs[1 + rank:2 + rank]][: args.questions]
    routers = [r for r in (args.routers or DECIDING).split(",") if r]
    with Symoe(config, profile=args.profile, use_cache=False) as symoe:
        ctx = symoe.pipeline
        specs = [symoe.router(r, retrieval="never") for r in routers]
        start = time.perf_counter()
        for spec in specs:  # load and fit what each router needs, untimed
            plan(ctx, [warm], [spec], seed=0)
        setup = time.perf_counter() - start
        times: dict[str, list[float]] = {r: [] for r in routers}
        chosen: dict[str, list[str]] = {r: [] for r in routers}
        for q in queries:
            for name, spec in zip(routers, specs, strict=True):
                start = time.perf_counter()
                (p,) = plan(ctx, [q], [spec], seed=0)
                times[name].append((time.perf_counter() - start) * 1000)
                chosen[name].append(f"{p.format}:{'+'.join(p.experts)}")
        retriever, problem = ctx.retriever()
        search: list[float] = []
        if retriever is not None:
            embed_few(partial(retriever.search, warm.question, config.retrieval.top_k), 1)
            for q in queries:
                start = time.perf_counter()
                embed_few(partial(retriever.search, q.question, config.retrieval.top_k), 1)  # as the gate searches
                search.append((time.perf_counter() - start) * 1000)
        examples = len(ctx.graded_examples())
    formats = {f: sum(q.format == f for q in queries) for f in ("choice", "number", "text")}
    print(f"{len(queries)} test questions ({', '.join(tasks)}; {formats['choice']} with options, "
          f"{formats['number']} numbers, {formats['text']} open text), one at a time; profile "
          f"{symoe.pipeline.profile_path or 'shipped'} ({examples} graded questions); skills from neighbours; "
          f"loading and fitting first: {setup:.1f} s")
    print("| router | mean ms | p90 ms | max ms | experts chosen (format: experts, count) |")
    print("|---|---|---|---|---|")
    for name in routers:
        t = times[name]
        counts = sorted({c: chosen[name].count(c) for c in chosen[name]}.items(), key=lambda kv: -kv[1])
        print(f"| {name} | {statistics.mean(t):.1f} | {p90(t):.1f} | {max(t):.1f} | "
              + ", ".join(f"{c} x{n}" for c, n in counts[:4]) + " |")
    if search:
        print(f"| (index search, routers that retrieve) | {statistics.mean(search):.1f} | {p90(search):.1f} | "
              f"{max(search):.1f} | top {config.retrieval.top_k} passages |")
    else:
        print(f"(no index search timed: {problem})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=12)
    parser.add_argument("--tasks", default=None, help="default: mmlu,gsm8k,arc_challenge "
                                                      f"(--decisions: {MIXED_TASKS})")
    parser.add_argument("--decisions", action="store_true",
                        help="time each router's decision per question (no LLM call) instead")
    parser.add_argument("--routers", default=None, help=f"with --decisions (default: {DECIDING})")
    parser.add_argument("--profile", type=Path, default=None, help="with --decisions: the profile to route by")
    args = parser.parse_args()
    if args.decisions:
        decisions(args)
        return
    tasks = [t for t in (args.tasks or "mmlu,gsm8k,arc_challenge").split(",") if t]
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
