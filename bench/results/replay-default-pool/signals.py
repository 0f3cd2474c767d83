"""Which signals in the default pool's matrix separate right answers from wrong: the numbers
behind "what would close the gap" (issue 24).

    python bench/results/replay-default-pool/signals.py data/matrices/default-pool.jsonl.gz [--split test]

For each answer format and pair of experts: how often the two state the same answer (the
cascade's agreement: ``orchestrator.aggregate.agreed_answer``'s equality of extracted answers)
and how often that agreed answer is right; when they differ, how often only the first, only
the second, or neither is right (what a perfect chooser between the two would gain over the
better one). Then the direct 1.5B's letter margin on options, by quartile: accuracy where the
expert is sure and where it is not. Descriptive only: the replay table is what claims a
router's accuracy.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from eval.matrix import Matrix, read_matrix

PAIRS = [("qwen-1.5b-program", "qwen-1.5b-cot"), ("qwen-1.5b-direct", "qwen-1.5b-cot"),
         ("qwen-1.5b-direct", "qwen-0.5b-direct"), ("qwen-1.5b-program", "qwen-0.5b-program")]


def pct(mask: np.ndarray, of: np.ndarray) -> float:
    """The share of ``of``'s questions that ``mask`` holds, in percent."""
    return 100.0 * float(mask.sum()) / max(1, int(of.sum()))


def pair_table(matrix: Matrix) -> list[str]:
    lines = ["| format | first | second | questions | agree % | right when agreeing % | differ: only first right %"
             " | only second right % | neither % | best of the two % | perfect chooser % |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for fmt in ("choice", "number", "text"):
        rows = [r for r in matrix.rows if r.answer_format == fmt]
        for a, b in PAIRS:
            if not rows or a not in matrix.experts or b not in matrix.experts:
                continue
            oa, ob = [r.outcomes[a] for r in rows], [r.outcomes[b] for r in rows]
            agree = np.array([x.answer is not None and x.error is None and y.error is None and x.answer == y.answer
                              for x, y in zip(oa, ob, strict=True)])
            ra = np.array([x.correct for x in oa]) >= 1.0
            rb = np.array([y.correct for y in ob]) >= 1.0
            n, d = len(rows), ~agree
            lines.append(f"| {fmt} | {a} | {b} | {n} | {100 * agree.mean():.1f} | "
                         f"{100 * ra[agree].mean() if agree.any() else 0:.1f} | {pct(d & ra & ~rb, d):.1f} | "
                         f"{pct(d & rb & ~ra, d):.1f} | {pct(d & ~ra & ~rb, d):.1f} | "
                         f"{100 * max(ra.mean(), rb.mean()):.1f} | {100 * (ra | rb).mean():.1f} |")
    return lines


def margin_table(matrix: Matrix, expert: str = "qwen-1.5b-direct") -> list[str]:
    rows = [r for r in matrix.rows if r.answer_format == "choice" and r.outcomes[expert].margin is not None]
    if not rows:
        return []
    margins = np.array([r.outcomes[expert].margin for r in rows])
    right = np.array([r.outcomes[expert].correct >= 1.0 for r in rows])
    cot = np.array([r.outcomes["qwen-1.5b-cot"].correct >= 1.0 for r in rows]) \
        if "qwen-1.5b-cot" in matrix.experts else None
    edges = np.quantile(margins, [0, 0.25, 0.5, 0.75, 1.0])
    lines = [f"| {expert} margin quartile | range | questions | its accuracy % | chain of thought's % |",
             "|---|---|---|---|---|"]
    for q in range(4):
        mask = (margins >= edges[q]) & ((margins < edges[q + 1]) if q < 3 else (margins <= edges[q + 1]))
        lines.append(f"| {q + 1} | {edges[q]:.2f}-{edges[q + 1]:.2f} | {mask.sum()} | {100 * right[mask].mean():.1f} | "
                     + (f"{100 * cot[mask].mean():.1f} |" if cot is not None else "|"))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("matrix", type=Path)
    parser.add_argument("--split", choices=["validation", "test"], default=None, help="one split (default: both)")
    args = parser.parse_args()
    matrix = read_matrix(args.matrix)
    if args.split:
        matrix = Matrix([r for r in matrix.rows if r.split == args.split], matrix.experts, matrix.source)
    print(f"{args.matrix}: {len(matrix)} questions" + (f" ({args.split})" if args.split else ""))
    print("\n".join(["", *pair_table(matrix), "", *margin_table(matrix)]))


if __name__ == "__main__":
    main()
