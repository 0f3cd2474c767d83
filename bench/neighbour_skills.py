"""How well the neighbours' skills match the LLM annotator's, leave-one-out on a profile.

    .venv/bin/python bench/neighbour_skills.py [--profile PATH] [--k 8]

Every labelled question of the profile (the annotator's five-sample vote) is held out in
turn; its nearest other labelled questions vote its skills (``skills.source: neighbours``).
Prints, for ``neighbours`` and for ``hybrid`` (where the vote is not confident the LLM's own
annotation stands, as it would be asked for): the share of questions whose LLM top skill the
vote contains, the mean Jaccard overlap of the two skill sets, and the share of questions
that would still call the LLM. No model is run: one embedding per question.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.config import load_config  # noqa: E402
from orchestrator.profiles import load_profile  # noqa: E402
from skills.neighbours import NeighbourSkills, confident  # noqa: E402


def jaccard(a: list[str], b: list[str]) -> float:
    return len(set(a) & set(b)) / len(set(a) | set(b)) if a or b else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", type=Path)
    parser.add_argument("--k", type=int)
    args = parser.parse_args()
    config = load_config()
    profile, path = load_profile(config, args.profile)
    settings = config.skills
    voter = NeighbourSkills(profile.examples, config.embedding, args.k or settings.neighbours, settings.neighbour_share)
    labelled = voter.examples
    if not labelled:
        sys.exit(f"error: profile {path} has no labelled questions; rebuild it with `symoe profile build`")
    votes = voter.vote([e.question for e in labelled], exclude=list(range(len(labelled))))
    sure = [confident(v, settings.hybrid_min_similarity, settings.hybrid_min_agreement) for v in votes]
    rows = {"neighbours": [v.skills for v in votes],
            "hybrid": [v.skills if ok else e.skills for v, ok, e in zip(votes, sure, labelled, strict=True)]}
    print(f"{len(labelled)} labelled questions of {path} (leave-one-out, k={voter.k}, share {voter.share}; "
          f"hybrid: nearest >= {settings.hybrid_min_similarity}, agreement >= {settings.hybrid_min_agreement})")
    print("| skills from | LLM top skill found | mean Jaccard | LLM calls |")
    print("|---|---|---|---|")
    for name, got in rows.items():
        top = sum(e.skills[0] in g for e, g in zip(labelled, got, strict=True)) / len(labelled)
        jac = sum(jaccard(e.skills, g) for e, g in zip(labelled, got, strict=True)) / len(labelled)
        calls = 0.0 if name == "neighbours" else 1 - sum(sure) / len(sure)
        print(f"| {name} | {100 * top:.0f}% | {jac:.2f} | {100 * calls:.0f}% |")
    print("| llm (5 samples) | 100% (by definition) | 1.00 | 100% |")


if __name__ == "__main__":
    main()
