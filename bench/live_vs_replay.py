"""Does replay decide as live did? A live run against a replay of the same questions, router by router.

    python bench/live_vs_replay.py LIVE_RUN REPLAY_RUN [--show 20]

Both are ``symoe eval --log-samples`` folders: LIVE_RUN a live run (its experts generating or
served from the cache), REPLAY_RUN ``symoe eval --matrix M --profile P`` on a matrix holding the
same questions (``--split test`` to keep the matrix's test questions), under the profile the
live run used. For every router both ran, on the questions both answered: each side's accuracy
and tokens a question, and how many (question, router) pairs agree on the answer, its
correctness, the experts, the fallback and the tokens. Then the pairs that differ, each with
both sides, so a difference is explained question by question. Exit status 1 when any differs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from paired import load, tokens  # bench/paired.py: a run's samples by router and question

FIELDS = ("answer", "correct", "experts", "fallback")


def decision(row: dict) -> tuple:
    return (*(row.get(f) for f in FIELDS), tokens(row))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("live", type=Path)
    parser.add_argument("replay", type=Path)
    parser.add_argument("--show", type=int, default=20, help="differing pairs to list (default 20)")
    args = parser.parse_args()
    live, replayed = load(args.live), load(args.replay)
    routers = [r for r in live if r in replayed]
    if not routers:
        sys.exit(f"error: no router in both runs (live: {', '.join(live)}; replay: {', '.join(replayed)})")
    print("| router | questions | live % | replay % | live tokens/q | replay tokens/q | same decision |")
    print("|---|---|---|---|---|---|---|")
    differing: list[str] = []
    for router in routers:
        ids = sorted(set(live[router]) & set(replayed[router]))
        a, b = [live[router][q] for q in ids], [replayed[router][q] for q in ids]
        same = sum(decision(x) == decision(y) for x, y in zip(a, b, strict=True))
        print(f"| {router} | {len(ids)} | {100 * sum(x['correct'] for x in a) / len(ids):.1f} | "
              f"{100 * sum(y['correct'] for y in b) / len(ids):.1f} | {sum(map(tokens, a)) / len(ids):.0f} | "
              f"{sum(map(tokens, b)) / len(ids):.0f} | {same}/{len(ids)} |")
        differing += [f"- {router} {q}: live {decision(x)} | replay {decision(y)} (answer, correct, experts, "
                      f"fallback, tokens)" for q, x, y in zip(ids, a, b, strict=True) if decision(x) != decision(y)]
    print(f"\n{len(differing)} (router, question) pairs differ" + (":" if differing else "."))
    print("\n".join(differing[:args.show]))
    sys.exit(1 if differing else 0)


if __name__ == "__main__":
    main()
