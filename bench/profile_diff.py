"""Two profiles of the same validation questions, expert by expert, and what letter margins say.

    .venv/bin/python bench/profile_diff.py OLD.json NEW.json [--bar 0.43]

For every expert both profiles graded: accuracy on the questions both hold (per answer
format: options, numbers and text), how often it stated no answer, generated tokens per
question, and the paired 95% bootstrap interval of NEW minus OLD. Then, for the experts
whose answers in NEW carry a letter margin, the threshold the cascade would calibrate
(the lowest margin whose answers were right at least ``--bar`` of the time, default the best
expert's overall accuracy in NEW, over at least 5 answers), the share it accepts and how
often those were right. No model runs: it reads the two files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eval.stats import paired_interval  # noqa: E402
from orchestrator.profiles import Profile, ProfiledExample, margin_threshold, read_profile  # noqa: E402

FORMATS = {"mmlu": "options", "arc_challenge": "options", "medmcqa": "options", "gsm8k": "numbers",
           "math": "numbers"}


def kind(x: ProfiledExample) -> str:
    return FORMATS.get(x.task or "", "text")


def compare(old: Profile, new: Profile) -> None:
    before = {x.question: x for x in old.examples if x.correct}
    pairs = [(before[x.question], x) for x in new.examples if x.correct and x.question in before]
    experts = [e for e in new.experts if e in old.experts]
    print(f"{len(pairs)} questions in both profiles\n")
    print("| expert | questions | old right | new right | new - old [95% CI] | old no answer | new no answer "
          "| old tokens/q | new tokens/q |")
    print("|---|---|---|---|---|---|---|---|---|")
    for e in experts:
        for group in ("options", "numbers", "all"):
            both = [(a, b) for a, b in pairs if e in a.correct and e in b.correct
                    and (group == "all" or kind(b) == group)]
            if not both:
                continue
            a = [x.correct[e] for x, _ in both]
            b = [y.correct[e] for _, y in both]
            lo, hi = paired_interval(b, a)
            n = len(both)
            print(f"| {e} ({group}) | {n} | {sum(a)} | {sum(b)} | {100 * (sum(b) - sum(a)) / n:+.1f} "
                  f"[{lo:+.1f}, {hi:+.1f}] | {sum(x.answers.get(e) is None for x, _ in both)} "
                  f"| {sum(y.answers.get(e) is None for _, y in both)} "
                  f"| {sum(x.tokens.get(e, 0) for x, _ in both) / n:.0f} "
                  f"| {sum(y.tokens.get(e, 0) for _, y in both) / n:.0f} |")


def margins(new: Profile, bar: float | None) -> None:
    graded = [x for x in new.examples if x.correct]
    overall = {e: sum(x.correct.get(e, False) for x in graded) / len(graded) for e in new.experts}
    need = bar if bar is not None else max(overall.values())
    print(f"\nletter margins (precision needed: {need:.0%})\n")
    print("| expert | answers with a margin | right | threshold | accepted | right when accepted |")
    print("|---|---|---|---|---|---|")
    for e in new.experts:
        scored = new.margins(e)
        if not scored:
            continue
        found = margin_threshold(scored, need, 5)
        right = sum(c for _, c in scored)
        if found is None:
            print(f"| {e} | {len(scored)} | {right} | none | | |")
            continue
        threshold, accepted, precise = found
        print(f"| {e} | {len(scored)} | {right} | {threshold:.2f} | {accepted} ({100 * accepted / len(scored):.0f}%) "
              f"| {precise} ({100 * precise / accepted:.0f}%) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--bar", type=float, default=None, help="precision an accepted letter needs")
    args = parser.parse_args()
    old, new = read_profile(args.old), read_profile(args.new)
    compare(old, new)
    margins(new, args.bar)


if __name__ == "__main__":
    main()
