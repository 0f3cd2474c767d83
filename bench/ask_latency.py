"""Latency of one uncached ``symoe ask`` on mixed questions, every router in one run, and of a cold process.

    .venv/bin/python bench/ask_latency.py [--questions 20] [--tasks mmlu,arc_challenge,medmcqa,gsm8k,math,nq_open]
        [--routers default,best_single,clusters,budget,cascade,learned:knn] [--no-hand-written]
        [--cold 2] [--cold-routers default,best_single] [--json PATH]

The questions: ``--questions`` test questions drawn in turn from the tasks (options from
mmlu, arc_challenge and medmcqa; numbers from gsm8k and math; open text from nq_open), then
the ten hand-written mixed questions of ``bench/mixed_questions.jsonl`` (four with options,
three word problems, three open factual questions). Each is asked as a user asks it: the
question and its options, no task and no declared format (the pipeline detects it).
``default`` stands for the router a call that names none gets (the profile's, else symoe).

Warm part: one session (``Symoe``) with no generation cache, so every generation runs now;
every model of the routing pool is loaded first, and each router answers one question
untimed (its clusters, learned router, sandbox warm); before each ask every loaded engine
forgets the prompt state it kept (llama.cpp would reuse a primed prompt), so no router
reuses another's work. For each router: mean and 90th-percentile wall seconds per question,
the ratio of its mean to best_single's, generated tokens per question, errors, fallbacks,
right answers (graded against the gold answers, informational), mean seconds per format,
and where the time went (annotate, gate, experts, aggregate, fallback: the steps of the
answer's record). For a router that decides without generating (skills from neighbours or
none, no retrieval gate), its decision alone (``Symoe.route``: skills, plan, recruitment) is
timed before the ask: mean and largest milliseconds (issue 25's bound: 50 ms).

Cold part (``--cold N``): ``symoe ask --explain --no-cache`` as a new process (start, imports,
load, answer: every generation made now) on a multiple-choice question, N times per router (the first may still find the
page cache cold): the process's wall seconds; their split into start, imports and session
setup (the process less the ask's own wall, ``--explain``'s total), what the ask spent
outside its steps (loading the models, the embedder, the profile, the index), and
``--explain``'s step split (annotate, gate, each expert, fallback, aggregate).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from pydantic import BaseModel, Field

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval.datasets import load_split  # noqa: E402
from orchestrator.answers import detect_format, is_correct  # noqa: E402
from orchestrator.config import load_config  # noqa: E402
from orchestrator.queries import make_query  # noqa: E402
from orchestrator.session import Symoe  # noqa: E402

MIXED = ROOT / "bench" / "mixed_questions.jsonl"
TASKS = "mmlu,arc_challenge,medmcqa,gsm8k,math,nq_open"
ROUTERS = "default,best_single,clusters,budget,cascade,learned:knn"


class Asked(BaseModel):
    """One question of the bench, with its gold answer (graded, informational)."""

    question: str
    choices: list[str] = Field(default_factory=list)
    answer: str
    aliases: list[str] = Field(default_factory=list)
    kind: str
    gold_format: str


class Row(BaseModel):
    """One router's answer to one question."""

    seconds: float
    tokens: int = 0
    format: str = ""
    where: dict[str, float] = Field(default_factory=dict)
    error: str | None = None
    fallback: str | None = None
    right: bool = False
    experts: list[str] = Field(default_factory=list)
    decide_ms: float | None = None  # the routing decision alone (``Symoe.route``), where it makes no generation


def step_kind(step: str) -> str:
    """'expert:qwen-1.5b-cot#0' -> 'experts'; 'aggregate:x' -> 'aggregate'; 'annotate' stays."""
    head = step.partition(":")[0]
    return {"expert": "experts", "first": "experts (cascade's first)"}.get(head, head)


def p90(values: list[float]) -> float:
    """The 90th percentile (nearest rank)."""
    ranked = sorted(values)
    return ranked[max(0, -(-9 * len(ranked) // 10) - 1)]


def mixed_questions(home: Path, tasks: list[str], count: int, skip: int, hand_written: bool) -> list[Asked]:
    """``count`` test questions drawn from the tasks in turn (after the first ``skip`` of each,
    kept unseen), then the hand-written ones."""
    per_task = -(-count // len(tasks)) if count else 0
    drawn = {t: load_split(t, "test", home, limit=skip + per_task, seed=0)[skip:] for t in tasks}
    asked = []
    for rank in range(per_task):
        for task in tasks:
            if rank < len(drawn[task]) and len(asked) < count:
                q = drawn[task][rank]
                asked.append(Asked(question=q.question, choices=q.choices, answer=q.answer, aliases=q.aliases,
                                   kind=task, gold_format=q.answer_format))
    if hand_written:
        for line in MIXED.read_text().splitlines():
            row = json.loads(line)
            fmt = "choice" if row.get("choices") else ("number" if row["kind"] == "word problem" else "text")
            asked.append(Asked(**row, gold_format=fmt))
    return asked


def decides_without_generating(symoe: Symoe, router: str) -> bool:
    """Whether ``router`` decides with no LLM call: no LLM skills, no retrieval gate's draft."""
    spec = symoe.router(router)
    llm_skills = spec.needs_skills and spec.configured(symoe.config).skills.source != "neighbours"
    return not llm_skills and spec.retrieval != "auto"


def ask_warm(symoe: Symoe, router: str, q: Asked) -> Row:
    """One uncached ask, timed: the engines forget their prompt state first. Where the router
    decides without generating, its decision is timed alone first (``Symoe.route``)."""
    symoe.pool.forget_state()
    query = make_query(q.question, q.choices or None)
    decide_ms = None
    if decides_without_generating(symoe, router):
        start = time.perf_counter()
        symoe.route(query, router)
        decide_ms = 1000 * (time.perf_counter() - start)
    start = time.perf_counter()
    result = symoe.ask_query(query, router)
    wall = time.perf_counter() - start
    where: dict[str, float] = defaultdict(float)
    for s in result.steps:
        where[step_kind(s.step)] += s.usage.seconds
    return Row(seconds=wall, tokens=result.usage.completion_tokens, format=result.format, where=dict(where),
               decide_ms=decide_ms,
               error=result.error, fallback=result.fallback, experts=result.experts,
               right=not result.error and is_correct(result.answer, q.answer, q.gold_format, q.aliases))  # type: ignore[arg-type]


def warm_part(args: argparse.Namespace, asked: list[Asked]) -> dict[str, list[Row]]:
    config = load_config()
    rows: dict[str, list[Row]] = defaultdict(list)
    with Symoe(config, use_cache=False) as symoe:  # every ask generates: uncached latency
        default = symoe.default_router()
        routers = [default if r == "default" else r for r in args.routers]
        names = {r: (f"default ({default})" if r == default and "default" in args.routers else r) for r in routers}
        for model in dict.fromkeys(config.experts[e].load_as for e in [*config.routing_pool, config.default_expert]):
            symoe.pool.get(model)  # every model loaded before any timing
        warm = [q for q in asked if not q.choices][:1] + [q for q in asked if q.choices][:1]
        for router in dict.fromkeys(routers):  # each router's own setup (clusters, learned fit), untimed
            for q in warm:
                symoe.ask_query(make_query(q.question, q.choices or None), router)
        for i, q in enumerate(asked):
            for router in dict.fromkeys(routers):
                row = ask_warm(symoe, router, q)
                rows[names[router]].append(row)
                print(f"  q{i + 1} ({q.kind}, {row.format}) {names[router]}: {row.seconds:.1f} s, {row.tokens} tokens, "
                      f"{'+'.join(row.experts)}" + (f", fallback {row.fallback}" if row.fallback else "")
                      + (f", ERROR {row.error}" if row.error else "") + (", right" if row.right else ""), flush=True)
    return rows


def decisions(rows: list[Row]) -> str:
    """Mean and largest decision time, or why there is none (the decision generates)."""
    timed = [r.decide_ms for r in rows if r.decide_ms is not None]
    return f"{statistics.mean(timed):.0f}, {max(timed):.0f}" if timed else "- (it generates)"


def print_warm(rows: dict[str, list[Row]], asked: list[Asked]) -> None:
    kinds = defaultdict(int)
    for q in asked:
        kinds[q.kind] += 1
    print(f"\n{len(asked)} questions ({', '.join(f'{k} {n}' for k, n in kinds.items())}), uncached, one at a time, "
          "models loaded:\n")
    base = next((r for r in rows if r == "best_single" or r.endswith("(best_single)")), next(iter(rows)))
    base_mean = statistics.mean(r.seconds for r in rows[base])
    print("| router | mean s/q | p90 s/q | x best_single | tokens/q | errors | fallbacks | right | "
          "decision ms (mean, max) | mean s/q by format | where the time went (s/q) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, rs in rows.items():
        n = len(rs)
        seconds = [r.seconds for r in rs]
        by_format = defaultdict(list)
        for r in rs:
            by_format[r.format].append(r.seconds)
        where: dict[str, float] = defaultdict(float)
        for r in rs:
            for k, v in r.where.items():
                where[k] += v / n
        print(f"| {name} | {statistics.mean(seconds):.1f} | {p90(seconds):.1f} | "
              f"{statistics.mean(seconds) / base_mean:.2f}x | {statistics.mean(r.tokens for r in rs):.0f} | "
              f"{sum(r.error is not None for r in rs)} | {sum(r.fallback is not None for r in rs)} | "
              f"{sum(r.right for r in rs)}/{n} | {decisions(rs)} | "
              + ", ".join(f"{f} {statistics.mean(v):.1f}" for f, v in sorted(by_format.items())) + " | "
              + ", ".join(f"{k} {v:.1f}" for k, v in sorted(where.items(), key=lambda kv: -kv[1])) + " |")


STEP = re.compile(r"^\W*((?:annotate|gate|expert|first|fallback|aggregate)\S*)\s*\W\s*(\d+)\s*\W\s*(\d+)\s*\W\s*"
                  r"([\d.]+)")
TOTAL = re.compile(r"total.*?([\d.]+) s wall")


def cold_part(args: argparse.Namespace, asked: list[Asked]) -> list[dict[str, object]]:
    """``symoe ask --explain`` as a new process on a multiple-choice question."""
    q = next(q for q in asked if q.choices)
    text = q.question + "\n" + "\n".join(f"{chr(65 + i)}) {c}" for i, c in enumerate(q.choices))
    exe = Path(sys.executable).with_name("symoe")
    runs = []
    for router in args.cold_routers:
        for attempt in range(args.cold):
            cmd = [str(exe), "ask", "--explain", "--no-cache", *([] if router == "default" else ["--router", router]),
                   text]
            start = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900,
                                  env={**os.environ, "COLUMNS": "200", "HF_HUB_OFFLINE": "1"})
            wall = time.perf_counter() - start
            lines = proc.stdout.splitlines()
            total = next((float(m.group(1)) for line in lines if (m := TOTAL.search(line))), None)
            steps = [(m.group(1), float(m.group(4))) for line in lines if (m := STEP.match(line))]
            answer = lines[-1].strip() if lines else ""
            runs.append({"router": router, "run": attempt + 1, "wall": wall, "ask": total, "steps": steps,
                         "answer": answer, "right": answer.upper() == q.answer, "rc": proc.returncode,
                         "error": proc.stderr.strip().splitlines()[-1] if proc.returncode else None})
            print(f"  cold {router} #{attempt + 1}: {wall:.1f} s, answer {answer!r}", flush=True)
    print(f"\ncold `symoe ask --explain` (a new process) on {q.question[:60]!r} ({len(q.choices)} options):\n")
    print("| router | run | process s | start + imports + setup s | ask s (--explain) | of which loads s | "
          "steps (s) | answer |")
    print("|---|---|---|---|---|---|---|---|")
    for r in runs:
        ask, steps = r["ask"], r["steps"]
        assert isinstance(steps, list)
        setup = f"{r['wall'] - ask:.1f}" if isinstance(ask, float) else "?"  # type: ignore[operator]
        loads = f"{ask - sum(v for _, v in steps):.1f}" if isinstance(ask, float) else "?"
        shown = ask if ask is not None else "?"
        print(f"| {r['router']} | {r['run']} | {r['wall']:.1f} | {setup} | {shown} | {loads} | "
              + ", ".join(f"{s} {v:.2f}" for s, v in steps)
              + f" | {r['answer'] if not r['rc'] else 'ERROR ' + str(r['error'])} |")
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=20, help="test questions from the tasks (then the 10 "
                                                                  "hand-written ones)")
    parser.add_argument("--tasks", default=TASKS)
    parser.add_argument("--routers", "--methods", dest="routers", default=ROUTERS,
                        help="'default' is the router `symoe ask` uses when none is named")
    parser.add_argument("--no-hand-written", dest="hand_written", action="store_false")
    parser.add_argument("--skip", type=int, default=300, help="test questions skipped first (keeps them unseen)")
    parser.add_argument("--cold", type=int, default=2, help="cold `symoe ask` processes per router (0: none)")
    parser.add_argument("--cold-routers", default="default,best_single")
    parser.add_argument("--json", type=Path, help="write every row here")
    args = parser.parse_args()
    args.routers = [r.strip() for r in args.routers.split(",") if r.strip()]
    args.cold_routers = [r.strip() for r in args.cold_routers.split(",") if r.strip()]
    home = load_config().home
    asked = mixed_questions(home, [t for t in args.tasks.split(",") if t], args.questions, args.skip,
                            args.hand_written)
    detected = defaultdict(int)
    for q in asked:
        detected[detect_format(q.question, q.choices)] += 1
    print(f"{len(asked)} questions; formats as detected: {dict(detected)}", flush=True)
    rows = warm_part(args, asked) if args.routers else {}
    if rows:
        print_warm(rows, asked)
    cold = cold_part(args, asked) if args.cold and args.cold_routers else []
    if args.json:
        args.json.write_text(json.dumps({"questions": [q.model_dump() for q in asked],
                                         "warm": {k: [r.model_dump() for r in v] for k, v in rows.items()},
                                         "cold": cold}, indent=1))


if __name__ == "__main__":
    main()
