"""The routers on the test questions new since an earlier matrix, against best_single and task_best.

    python fresh_questions.py RUN/samples.jsonl OLD-MATRIX.jsonl.gz

Here: the samples of `symoe eval --matrix data/matrices/default-pool.jsonl.gz --log-samples` and
`git show b41ca66:data/matrices/default-pool.jsonl.gz > m480.jsonl.gz` (the 480-question matrix).
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[3]), str(Path(__file__).resolve().parents[2])]

from paired import load, tokens  # noqa: E402  (bench/paired.py)

from eval.stats import paired_interval  # noqa: E402

ROUTERS = ["best_single", "task_best", "format_best", "learned:logreg", "learned:mlp", "learned:mf", "clusters",
           "cascade", "budget", "majority"]


def main(samples_path: str, old_matrix: str) -> None:
    with gzip.open(old_matrix, "rt") as f:
        old = {json.loads(line)["id"] for line in f}
    by = load(Path(samples_path).parent)
    fresh = sorted(q for q in by["best_single"] if q not in old)
    print(f"{len(fresh)} new test questions (of {len(by['best_single'])})")
    for m in [m for m in by if m.startswith("single:")] + [m for m in ROUTERS if m in by]:
        right = [by[m][q]["correct"] for q in fresh]
        line = (f"{m:28s} {100 * sum(right) / len(right):5.1f}% ({sum(right)}/{len(right)}) tokens/q "
                f"{sum(tokens(by[m][q]) for q in fresh) / len(fresh):6.0f}")
        for ref in ("best_single", "task_best"):
            other = [by[ref][q]["correct"] for q in fresh]
            lo, hi = paired_interval(right, other)
            line += f" | vs {ref} {100 * (sum(right) - sum(other)) / len(right):+5.1f} [{lo:+.1f}, {hi:+.1f}]"
        print(line)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
