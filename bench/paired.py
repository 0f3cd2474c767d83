"""Paired comparison of methods in one evaluation run: is a difference more than noise?

    python bench/paired.py runs/eval-default [--against single:qwen-coder-1.5b] [--show symoe@never]

Reads the run's ``samples.jsonl`` (``symoe eval --log-samples``). For every method, on the
questions both it and the reference answered: accuracy, the difference in points with a 95%
paired-bootstrap interval (10,000 resamples of questions, seeded), and the questions only one
of the two got right. ``--show METHOD`` lists those questions for one method, with the experts
that answered, so a difference can be explained question by question.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from eval.stats import paired_interval


def load(run: Path) -> dict[str, dict[str, dict]]:
    path = run / "samples.jsonl"
    if not path.exists():
        sys.exit(f"error: {path} does not exist; run `symoe eval ... --log-samples --output {run}` first")
    by_method: dict[str, dict[str, dict]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        by_method.setdefault(row["method"], {})[row["question_id"]] = row
    return by_method


def tokens(row: dict) -> int:
    """A sample's prompt and completion tokens."""
    return row["usage"]["prompt_tokens"] + row["usage"]["completion_tokens"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--against", default="single:qwen-coder-1.5b")
    parser.add_argument("--show", action="append", default=[])
    args = parser.parse_args()
    methods = load(args.run)
    if args.against not in methods:
        sys.exit(f"error: no method {args.against!r} in this run; it has {', '.join(methods)}")
    ref = methods[args.against]
    print(f"paired against {args.against} ({len(ref)} questions); 95% paired-bootstrap interval")
    print("| method | accuracy | ref | diff (points) | 95% interval | only it right | only ref right |")
    print("|---|---|---|---|---|---|---|")
    for name, rows in methods.items():
        ids = sorted(set(rows) & set(ref))
        a, b = [rows[i]["correct"] for i in ids], [ref[i]["correct"] for i in ids]
        lo, hi = paired_interval(a, b)
        acc, racc = 100 * sum(a) / len(ids), 100 * sum(b) / len(ids)
        wins = sum(x and not y for x, y in zip(a, b, strict=True))
        losses = sum(y and not x for x, y in zip(a, b, strict=True))
        print(f"| {name} | {acc:.1f} | {racc:.1f} | {acc - racc:+.1f} | [{lo:+.1f}, {hi:+.1f}] | {wins} | {losses} |")
    for name in args.show:
        if name not in methods:
            sys.exit(f"error: no method {name!r} in this run")
        print(f"\nquestions where {name} and {args.against} differ in correctness:")
        for qid, row in sorted(methods[name].items()):
            other = ref.get(qid)
            if other is None or other["correct"] == row["correct"]:
                continue
            print(f"- {qid} ({row['task']}): {name} {row['answer']!r} ({'right' if row['correct'] else 'wrong'}, "
                  f"experts {', '.join(row['experts'])}{', retrieved' if row.get('retrieved') else ''}"
                  f"{', fallback ' + row['fallback'] if row.get('fallback') else ''}), {args.against} "
                  f"{other['answer']!r}, gold {row['gold']}")


if __name__ == "__main__":
    main()
