"""Benchmark of bulk generation on llama.cpp: today's path (one sequence after another) against
the multi-sequence path (agents/backends/llamacpp_multiseq.py), same prompts, one process.

    python bench/multiseq.py [--model qwen-coder-1.5b] [--expert qwen-1.5b-cot] [--tasks gsm8k,mmlu]
                             [--questions 8] [--max-tokens 128] [--batches 1,4,8] [--repeats 3]
                             [--threads 2] [--json out.json]

The prompts are the requests the pool's expert method sends (``ExpertMethod.request``, greedy,
seed 0) for the first test questions of each task, ``max_tokens`` capped at ``--max-tokens``.
One model load serves every mode; each round runs every mode once, in order, and the figures
are the median over rounds (the machine may be shared: the load average is recorded):

- today b1: ``backend.generate([request])`` per request (what ``symoe ask`` does per expert call);
- today b8: ``backend.generate(requests)``: the backend runs them one after another;
- bulk bN: ``generate_many(backend, requests, n_seq=N)``: at most N sequences decoded together.

tokens/s = completion tokens / wall seconds of the whole set (prompts included); decode tokens/s
leaves the prompts out (bulk: measured; today: its wall less bulk b1's prompt seconds of the
same round, the same prompts evaluated in the same chunks). The answers
of each mode are compared with today b1's: identical texts, else the first differing token,
and whether the answer the method extracts is the same.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build(args: argparse.Namespace) -> tuple[Any, list[Any], list[Any]]:
    """The backend as ``symoe ask`` makes it (n_threads set), the queries and their requests."""
    from agents.backends import create_backend
    from agents.runtime import resolve
    from eval.datasets import load_split
    from orchestrator.config import load_config
    from orchestrator.expert_methods import expert_method

    cfg = load_config()
    spec = resolve(cfg.expert(args.model), cfg.home)
    spec = spec.model_copy(update={"params": {**spec.params, "n_threads": args.threads}})
    method = expert_method(cfg.expert(args.expert).method)
    tasks = [t for t in args.tasks.split(",") if t]
    per_task = -(-args.questions // len(tasks))
    queries = [q.query() for t in tasks for q in load_split(t, "test", cfg.home, limit=per_task, seed=0)]
    queries = queries[: args.questions]
    requests = []
    for q in queries:
        r = method.request(q, q.format, None, 0.0, 0)
        requests.append(r.model_copy(update={"max_tokens": min(r.max_tokens, args.max_tokens)}))
    return create_backend(spec), queries, requests


def first_difference(llm: Any, a: str, b: str) -> dict[str, Any]:
    """Where two texts part: the index of the first differing token and the text around it."""
    ta = llm.tokenize(a.encode(), add_bos=False, special=True)
    tb = llm.tokenize(b.encode(), add_bos=False, special=True)
    i = next((k for k, (x, y) in enumerate(zip(ta, tb, strict=False)) if x != y), min(len(ta), len(tb)))
    head = llm.detokenize(ta[:i]).decode(errors="ignore")
    return {"token": i, "tokens": [len(ta), len(tb)], "before": head[-60:],
            "reference": llm.detokenize(ta[i:i + 8]).decode(errors="ignore"),
            "this": llm.detokenize(tb[i:i + 8]).decode(errors="ignore")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen-coder-1.5b")
    parser.add_argument("--expert", default="qwen-1.5b-cot", help="whose method builds the requests")
    parser.add_argument("--tasks", default="gsm8k,mmlu")
    parser.add_argument("--questions", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--batches", default="1,4,8", help="bulk path batch sizes")
    parser.add_argument("--today", default="1,8", help="today's path batch sizes (1, 8 or both)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()

    from agents.backends.llamacpp_multiseq import engine_for, generate_many
    from orchestrator.answers import extract

    backend, queries, requests = build(args)
    batches = [int(b) for b in args.batches.split(",") if b]
    t0 = time.perf_counter()
    backend.load()
    load_s = time.perf_counter() - t0
    llm = backend._llm
    t0 = time.perf_counter()
    engine = engine_for(llm, max(batches))  # the extra context: once per loaded model
    context_s = time.perf_counter() - t0
    warm = requests[0].model_copy(update={"max_tokens": 2})
    backend.generate([warm])
    generate_many(backend, [warm], n_seq=max(batches))

    today = {"today b1": lambda: [g for r in requests for g in backend.generate([r])],
             "today b8": lambda: backend.generate(requests)}
    modes: dict[str, Any] = {
        **{f"today b{n}": today[f"today b{n}"] for n in args.today.split(",") if n},
        **{f"bulk b{n}": (lambda n=n: generate_many(backend, requests, n_seq=n)) for n in batches},
    }
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    loads = []
    for round_ in range(args.repeats):
        for mode, fn in modes.items():
            load_before = os.getloadavg()[0]
            prompt_s, step_s = engine.prompt_seconds, engine.step_seconds
            start = time.perf_counter()
            gens = fn()
            wall = time.perf_counter() - start
            tokens = sum(g.usage.completion_tokens for g in gens)
            run = {"wall_s": round(wall, 2), "completion_tokens": tokens,
                   "tokens_per_s": round(tokens / wall, 2), "load1": load_before,
                   "failed": sum(not g.ok for g in gens), "texts": [g.text for g in gens]}
            if mode.startswith("bulk"):
                run["prompt_s"] = round(engine.prompt_seconds - prompt_s, 2)
                run["decode_s"] = round(engine.step_seconds - step_s, 2)
            runs[mode].append(run)
            loads.append(load_before)
            print(f"round {round_ + 1} {mode}: {tokens} tokens in {wall:.1f} s = {tokens / wall:.1f} tok/s "
                  f"(load {load_before:.1f}{'; prompts ' + str(run['prompt_s']) + ' s' if 'prompt_s' in run else ''})",
                  flush=True)
        # decode alone: bulk modes measure it; today's path evaluates the same prompts in the same
        # chunks, so its decode time is its wall less bulk b1's prompt seconds of this round
        prompts_b1 = runs["bulk b1"][-1]["prompt_s"] if "bulk b1" in runs else None
        for rs in runs.values():
            r = rs[-1]
            decode = r.get("decode_s", r["wall_s"] - prompts_b1 if prompts_b1 is not None else None)
            r["decode_tokens_per_s"] = round(r["completion_tokens"] / decode, 2) if decode and decode > 0 else None

    reference = runs["today b1"][0]["texts"]
    fmt_of = [q.format for q in queries]
    ref_answers = [extract(t, f, len(q.choices), q.choices) for t, f, q in zip(reference, fmt_of, queries, strict=True)]
    summary: dict[str, Any] = {}
    for mode, rs in runs.items():
        texts = rs[0]["texts"]
        answers = [extract(t, f, len(q.choices), q.choices) for t, f, q in zip(texts, fmt_of, queries, strict=True)]
        summary[mode] = {
            "tokens_per_s_median": statistics.median(r["tokens_per_s"] for r in rs),
            "wall_s_median": statistics.median(r["wall_s"] for r in rs),
            "tokens_per_s": [r["tokens_per_s"] for r in rs],
            "decode_tokens_per_s_median": statistics.median(
                [r["decode_tokens_per_s"] for r in rs if r["decode_tokens_per_s"]] or [0]),
            "completion_tokens": rs[0]["completion_tokens"],
            "same_over_rounds": all(r["texts"] == texts for r in rs),
            "identical_texts": sum(a == b for a, b in zip(texts, reference, strict=True)),
            "same_answers": sum(a == b for a, b in zip(answers, ref_answers, strict=True)),
            "differences": [{"question": i, **first_difference(llm, reference[i], texts[i])}
                            for i in range(len(texts)) if texts[i] != reference[i]],
        }
    base = summary["today b1"]["tokens_per_s_median"]
    n = len(requests)
    print(f"\n{args.model} (llama.cpp, n_threads {args.threads}), {n} requests of {args.expert} "
          f"({args.tasks}), max_tokens <= {args.max_tokens}, greedy; {args.repeats} rounds, median; "
          f"load average 1-min over the runs {min(loads):.1f}-{max(loads):.1f}; model load {load_s:.1f} s, "
          f"multi-sequence context {context_s:.2f} s")
    base_d = summary["today b1"]["decode_tokens_per_s_median"] or 1
    print("| path | batch | tokens | wall s | tokens/s | x today b1 | decode tokens/s | x today b1 | identical texts "
          "| same answers |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for mode, s in summary.items():
        path, batch = mode.split(" b")
        print(f"| {path} | {batch} | {s['completion_tokens']} | {s['wall_s_median']} | {s['tokens_per_s_median']} | "
              f"{s['tokens_per_s_median'] / base:.2f} | {s['decode_tokens_per_s_median']} | "
              f"{s['decode_tokens_per_s_median'] / base_d:.2f} | {s['identical_texts']}/{n} | "
              f"{s['same_answers']}/{n} |")
    for mode, s in summary.items():
        for d in s["differences"]:
            print(f"{mode}: question {d['question']} differs at token {d['token']} (of {d['tokens']}): "
                  f"...{d['before']!r} | today {d['reference']!r} | {mode} {d['this']!r}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({
            "args": vars(args), "model_load_s": load_s, "context_s": context_s,
            "questions": [q.id for q in queries], "reference_answers": ref_answers,
            "summary": summary, "runs": runs}, indent=1))
    from agents.backends.llamacpp_multiseq import release

    release(llm)
    backend.unload()


if __name__ == "__main__":
    main()
