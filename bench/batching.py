"""Benchmark of batched loading: the same routed questions run (a) naively, loading each
recruited expert for each question, and (b) grouped by expert, each model loaded once and
run as a batch. Prints wall time, model loads and peak RSS of each, and their ratio.

    python bench/batching.py --questions 102 --backend transformers [--dtype float32] [--method symoe:k3-distinct]

Each mode runs in its own subprocess (so peak RSS is its own) with no generation cache.
Both modes answer the same plan: symoe's recruitment (annotation + profile) computed once.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build_plan(args: argparse.Namespace) -> list[dict]:
    """Routed questions: (question, choices, format, expert slots, aggregator)."""
    from agents.cache import GenerationCache
    from agents.runtime import LoadedPool
    from eval.datasets import load_split
    from eval.methods import EvalQuestion, MethodContext, get_method
    from orchestrator.config import load_config
    from orchestrator.profiles import load_profile
    from orchestrator.profiling import question_format
    from skills.annotate import annotate_many
    from skills.vocabulary import SkillMatcher

    config = load_config()
    per_task = -(-args.questions // len(args.tasks))
    questions = [q for t in args.tasks for q in load_split(t, "test", config.home, limit=per_task, seed=0)]
    questions = questions[: args.questions]
    pool = LoadedPool(config.experts, config.home)
    cache = GenerationCache(config.home / "cache" / "generations.sqlite")  # annotation only, shared
    annotator = config.skills.annotator or config.default_expert
    anns = annotate_many([q.question for q in questions], pool.get(annotator),
                         SkillMatcher(config.embedding, config.skills.match_threshold), config.skills, cache=cache)
    pool.close()
    profile, _ = load_profile(config)
    plan_fn = get_method(args.method)
    ctx = MethodContext(config=config, profile=profile, seed=0)
    out = []
    for q, ann in zip(questions, anns, strict=True):
        plan = plan_fn(ctx, EvalQuestion(id=q.id, task=q.task, skills=ann.skills))
        out.append({"id": q.id, "question": q.question, "choices": q.choices,
                    "fmt": question_format(q.choices, q.answer),
                    "slots": [s.model_dump() for s in plan.slots], "aggregator": plan.aggregator})
    return out


def run_mode(mode: str, plan: list[dict], backend: str, max_tokens: int, dtype: str | None,
             batch_size: int | None) -> dict:
    from agents.backends import create_backend
    from agents.runtime import resolve
    from orchestrator.aggregate import agreed_answer, synthesis_request
    from orchestrator.answers import extract
    from orchestrator.config import load_config
    from orchestrator.graph import expert_request
    from orchestrator.records import ExpertAnswer

    config = load_config()
    params: dict[str, object] = {"dtype": dtype} if dtype else {}
    if batch_size:
        params["batch_size"] = batch_size
    specs = {n: resolve(s.model_copy(update={"backend": backend, "params": {**s.params, **params}}), config.home)
             for n, s in config.experts.items()}
    loads: list[str] = []

    def request(item: dict, slot: dict):
        return expert_request(item["question"], item["choices"], item["fmt"], None, slot["temperature"],
                              slot["seed"], max_tokens=max_tokens)

    answers: dict[str, list[ExpertAnswer]] = {item["id"]: [] for item in plan}
    start = time.perf_counter()

    def run_group(expert: str, items: Sequence[tuple[object, object]]) -> list[str]:
        b = create_backend(specs[expert])
        b.load()
        loads.append(expert)
        texts = [g.text for g in b.generate([r for _, r in items])]  # type: ignore[misc]
        b.unload()
        return texts

    if mode == "naive":
        for item in plan:
            for slot in item["slots"]:
                text = run_group(slot["expert"], [(item["id"], request(item, slot))])[0]
                answers[item["id"]].append(ExpertAnswer(expert=slot["expert"], text=text,
                                                        answer=extract(text, item["fmt"], len(item["choices"]))))
    else:
        by_id = {item["id"]: item for item in plan}
        by_expert: dict[str, list[tuple[tuple[str, int], object]]] = {}  # ((question, slot index), request)
        for item in plan:
            for i, slot in enumerate(item["slots"]):
                by_expert.setdefault(slot["expert"], []).append(((item["id"], i), request(item, slot)))
        placed: dict[tuple[str, int], ExpertAnswer] = {}
        for expert, group in by_expert.items():
            for ((qid, i), _), text in zip(group, run_group(expert, group), strict=True):
                item = by_id[qid]
                placed[(qid, i)] = ExpertAnswer(expert=expert, text=text,
                                                answer=extract(text, item["fmt"], len(item["choices"])))
        for item in plan:  # back in slot order, as the naive run has them
            answers[item["id"]] = [placed[(item["id"], i)] for i in range(len(item["slots"]))]
    # aggregation where the recruited answers disagree, the same way in both modes
    synth: dict[str, list[tuple[str, object]]] = {}
    for item in plan:
        row = answers[item["id"]]
        if len(row) > 1 and agreed_answer(row) is None and item["aggregator"]:
            req = synthesis_request(item["question"], item["choices"], item["fmt"], [a.text for a in row], seed=0)
            req.max_tokens = max_tokens
            synth.setdefault(item["aggregator"], []).append((item["id"], req))
    final: dict[str, str] = {}
    if mode == "naive":
        for aggregator, items in synth.items():
            for qid, req in items:
                final[qid] = run_group(aggregator, [(qid, req)])[0]
    else:
        for aggregator, items in synth.items():
            final.update(zip([q for q, _ in items], run_group(aggregator, items), strict=True))
    wall = time.perf_counter() - start
    return {"mode": mode, "wall_seconds": round(wall, 2), "loads": len(loads), "loaded": loads,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "expert_calls": sum(len(v) for v in answers.values()), "aggregations": len(final),
            "answers": {qid: [a.answer for a in row] for qid, row in answers.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=100)
    parser.add_argument("--tasks", default="mmlu,arc_challenge,medmcqa")
    parser.add_argument("--backend", default="transformers")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--method", default="symoe", help="routing of the plan: symoe, symoe:k3-distinct, ...")
    parser.add_argument("--dtype", help="transformers compute dtype (default: the backend's choice)")
    parser.add_argument("--batch-size", type=int, help="requests per generate call (default: the backend's)")
    parser.add_argument("--mode", choices=["naive", "grouped"], help=argparse.SUPPRESS)
    parser.add_argument("--plan", help=argparse.SUPPRESS)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    args.tasks = [t for t in args.tasks.split(",") if t]
    if args.mode:  # child process
        plan = json.loads(Path(args.plan).read_text())
        print(json.dumps(run_mode(args.mode, plan, args.backend, args.max_tokens, args.dtype, args.batch_size)))
        return
    plan = build_plan(args)
    distinct = sorted({s["expert"] for p in plan for s in p["slots"]})
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(plan, handle)
    results = {}
    if args.backend == "transformers" and not args.dtype:
        from agents.backends.transformers_backend import default_dtype

        args.dtype = default_dtype()
    for mode in ("grouped", "naive"):
        proc = subprocess.run([sys.executable, __file__, "--mode", mode, "--plan", handle.name, "--backend",
                               args.backend, "--max-tokens", str(args.max_tokens),
                               *(["--dtype", args.dtype] if args.dtype else []),
                               *(["--batch-size", str(args.batch_size)] if args.batch_size else [])],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"{mode} run failed:\n{proc.stderr[-2000:]}")
        results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    g, n = results["grouped"], results["naive"]
    same = sum(g["answers"][q] == n["answers"][q] for q in g["answers"])
    print(f"{len(plan)} questions routed by {args.method}, backend {args.backend} (dtype {args.dtype or 'default'}, "
          f"batch {args.batch_size or 'default'}), "
          f"max_tokens {args.max_tokens}; "
          f"distinct recruited experts: {len(distinct)} ({', '.join(distinct)})")
    print("| mode | wall s | model loads | peak RSS MB | expert calls | aggregations |")
    print("|---|---|---|---|---|---|")
    for r in (n, g):
        print(f"| {r['mode']} | {r['wall_seconds']} | {r['loads']} | {r['peak_rss_mb']} | {r['expert_calls']} | "
              f"{r['aggregations']} |")
    print(f"speed-up grouped vs naive: {n['wall_seconds'] / g['wall_seconds']:.1f}x; "
          f"loads {n['loads']} -> {g['loads']}; same expert answers for {same}/{len(plan)} questions")
    if args.json:
        Path(args.json).write_text(json.dumps({"plan_questions": len(plan), "method": args.method,
                                               "backend": args.backend, "dtype": args.dtype, "results": results},
                                              indent=1))


if __name__ == "__main__":
    main()
