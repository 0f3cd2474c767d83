"""Local vs Ray: the same ``symoe eval`` run with ``--executor local`` and ``--executor ray``
(a local Ray cluster on this machine, one actor per model), each in its own process with a
fresh cache. Prints wall time of each, the ratio, model loads, and whether the answers match.

    python bench/executors.py [--questions 24] [--experts smollm2-135m,gemma3-270m]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval.datasets import load_split  # noqa: E402
from orchestrator.config import default_pool  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=24)
    parser.add_argument("--experts", default="smollm2-135m,gemma3-270m")
    parser.add_argument("--routers", "--methods", dest="methods", default="single,majority")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    experts = [e for e in args.experts.split(",") if e]
    rows = {}
    with tempfile.TemporaryDirectory(prefix="symoe-executors-") as tmp:
        root = Path(tmp)
        task = root / "arc.jsonl"
        task.write_text("".join(q.model_dump_json() + "\n"
                                for q in load_split("arc_challenge", "test", limit=args.questions, seed=2)))
        drop = "".join(f"  {name}: null\n" for name in default_pool() if name not in experts)
        config = root / "config.yaml"
        config.write_text(f"default_expert: {experts[0]}\nexperts:\n{drop}")
        for kind in ("local", "ray"):
            out = root / kind
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "eval", "-c", str(config), "--tasks",
                                   str(task), "--routers", args.methods, "--output", str(out), "--log-samples",
                                   "--executor", kind], capture_output=True, text=True, cwd=ROOT)
            wall = time.perf_counter() - start
            if proc.returncode != 0:
                sys.exit(f"{kind} run failed: {proc.stderr[-2000:]}")
            stats = json.loads((out / "results.json").read_text())["stats"]
            answers = {(r["method"], r["question_id"]): r["answer"]
                       for r in map(json.loads, (out / "samples.jsonl").read_text().splitlines())}
            rows[kind] = {"wall_s": round(wall, 1), "eval_wall_s": stats["wall_seconds"], "loads": stats["loads"],
                          "generated": stats["generated"], "answers": answers}
    same = rows["local"]["answers"] == rows["ray"]["answers"]
    print(f"{args.questions} ARC-Challenge questions, experts {', '.join(experts)}, routers {args.methods}")
    print("| executor | wall s (process) | wall s (eval) | model loads | generated |")
    print("|---|---|---|---|---|")
    for kind, r in rows.items():
        print(f"| {kind} | {r['wall_s']} | {r['eval_wall_s']} | {len(r['loads'])} ({', '.join(r['loads'])}) | "
              f"{r['generated']} |")
    print(f"ray / local wall time: {rows['ray']['wall_s'] / rows['local']['wall_s']:.2f}x; "
          f"answers identical: {same} ({len(rows['local']['answers'])} answers)")
    if args.json:
        args.json.write_text(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "answers"} | {"same": same}
                                         for k, v in rows.items()}, indent=1))


if __name__ == "__main__":
    main()
