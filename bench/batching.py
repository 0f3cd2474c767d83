"""Benchmark of batched loading: the same routed questions answered (a) naively, loading each
recruited expert for each call, and (b) grouped by expert, each model loaded once and run as
a batch. Prints wall time, model loads and peak RSS of each, and their ratio.

    python bench/batching.py --questions 102 --backend transformers [--dtype float32] [--method symoe:k3-distinct]

Both modes run the pipeline's own stages (``answer``, ``combine``, ``extract``) on the same
plans: the parent routes the questions once (annotation + recruitment, cached), each mode
then runs in its own subprocess (so peak RSS is its own) with no generation cache. The only
difference is the pipeline's ``grouped`` switch and whether the executor keeps models loaded.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.backends.transformers_backend import default_dtype  # noqa: E402
from agents.runtime import LoadedPool  # noqa: E402
from eval.datasets import load_split  # noqa: E402
from orchestrator.config import SymoeConfig, load_config  # noqa: E402
from orchestrator.executor import LocalExecutor  # noqa: E402
from orchestrator.pipeline import Pipeline, Plan, answer, combine, extract_answers, plan  # noqa: E402
from orchestrator.session import Symoe  # noqa: E402


def build_plans(args: argparse.Namespace) -> list[Plan]:
    """Route the test questions once with the default pool (annotation cached in the home)."""
    config = load_config()
    per_task = -(-args.questions // len(args.tasks))
    questions = [q for t in args.tasks for q in load_split(t, "test", config.home, limit=per_task, seed=0)]
    with Symoe(config) as symoe:
        return plan(symoe.pipeline, [q.query() for q in questions[: args.questions]],
                    [symoe.router(args.method, retrieval="never")], seed=0)


def mode_config(backend: str, dtype: str | None, batch_size: int | None) -> SymoeConfig:
    config = load_config()
    params: dict[str, object] = {"dtype": dtype} if dtype else {}
    if batch_size:
        params["batch_size"] = batch_size
    experts = {n: s.model_copy(update={"backend": backend, "params": {**s.params, **params}})
               for n, s in config.experts.items()}
    return config.model_copy(update={"experts": experts})


def run_mode(mode: str, plans: list[Plan], config: SymoeConfig) -> dict:
    """The stages after planning on a pipeline of their own: what is measured here is the
    executor below the session (grouped, or the naive baseline's load per call)."""
    grouped = mode == "grouped"
    pool = LoadedPool(config.experts, config.home)
    ctx = Pipeline(config, pool=pool, executor=LocalExecutor(pool, keep_loaded=grouped), grouped=grouped)
    start = time.perf_counter()
    answer(ctx, plans)
    combine(ctx, plans)
    extract_answers(ctx, plans)
    wall = time.perf_counter() - start
    ctx.close()
    return {"mode": mode, "wall_seconds": round(wall, 2), "loads": len(pool.loads), "loaded": pool.loads,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "expert_calls": sum(len(p.answer_jobs) for p in plans),
            "aggregations": sum(p.synthesis_job is not None for p in plans),
            "failed": ctx.stats.failed,
            "answers": {p.query.id: [a.answer for a in p.answers] for p in plans},
            "final": {p.query.id: p.answer for p in plans}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=100)
    parser.add_argument("--tasks", default="mmlu,arc_challenge,medmcqa")
    parser.add_argument("--backend", default="transformers")
    parser.add_argument("--router", "--method", dest="method", default="symoe",
                        help="the router of the plans: symoe, symoe:k3-distinct, ...")
    parser.add_argument("--dtype", help="transformers compute dtype (default: the backend's choice)")
    parser.add_argument("--batch-size", type=int, help="requests per generate call (default: the backend's)")
    parser.add_argument("--mode", choices=["naive", "grouped"], help=argparse.SUPPRESS)
    parser.add_argument("--plans", help=argparse.SUPPRESS)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    args.tasks = [t for t in args.tasks.split(",") if t]
    if args.mode:  # child process
        plans = [Plan.model_validate(p) for p in json.loads(Path(args.plans).read_text())]
        print(json.dumps(run_mode(args.mode, plans, mode_config(args.backend, args.dtype, args.batch_size))))
        return
    plans = build_plans(args)
    distinct = sorted({e for p in plans for e in p.experts})
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump([p.model_dump(mode="json") for p in plans], handle)
    if args.backend == "transformers" and not args.dtype:
        args.dtype = default_dtype()
    results = {}
    for mode in ("grouped", "naive"):
        proc = subprocess.run([sys.executable, __file__, "--mode", mode, "--plans", handle.name, "--backend",
                               args.backend, *(["--dtype", args.dtype] if args.dtype else []),
                               *(["--batch-size", str(args.batch_size)] if args.batch_size else [])],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"{mode} run failed:\n{proc.stderr[-2000:]}")
        results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    g, n = results["grouped"], results["naive"]
    same = sum(g["answers"][q] == n["answers"][q] for q in g["answers"])
    print(f"{len(plans)} questions routed by {args.method}, backend {args.backend} (dtype {args.dtype or 'default'}, "
          f"batch {args.batch_size or 'default'}); distinct recruited experts: {len(distinct)} ({', '.join(distinct)})")
    print("| mode | wall s | model loads | peak RSS MB | expert calls | aggregations | failed |")
    print("|---|---|---|---|---|---|---|")
    for r in (n, g):
        print(f"| {r['mode']} | {r['wall_seconds']} | {r['loads']} | {r['peak_rss_mb']} | {r['expert_calls']} | "
              f"{r['aggregations']} | {r['failed']} |")
    print(f"speed-up grouped vs naive: {n['wall_seconds'] / g['wall_seconds']:.1f}x; "
          f"loads {n['loads']} -> {g['loads']}; same expert answers for {same}/{len(plans)} questions")
    if args.json:
        Path(args.json).write_text(json.dumps({"plan_questions": len(plans), "method": args.method,
                                               "backend": args.backend, "dtype": args.dtype, "results": results},
                                              indent=1))


if __name__ == "__main__":
    main()
