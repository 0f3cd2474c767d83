"""Cluster routing against skill routing, leave-one-out on a profile's graded questions.

    .venv/bin/python bench/cluster_routing.py [--profile PATH] [--clusters 6] [--prior 2]

Every graded validation question of the profile is held out in turn. The rest build the
routers as the pipeline would: k-means clusters scored per expert (the ``clusters`` method,
top-1), the skill profile (the ``symoe`` method's heaviest recruit for the question's
annotated skills), the task's best single expert (``best_single``). The held-out question is
routed and scored by the outcome its chosen expert had when the profile was built, so no
model runs: one embedding per question. Prints accuracy with standard errors, tokens per
question, the paired 95% interval of clusters against each, and how often the two routers
pick the same expert. This compares routers on validation data; ``symoe eval --methods
symoe,clusters,best_single`` measures the answers themselves on test questions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from agents.embedder import encode  # noqa: E402
from eval.stats import compare, standard_error  # noqa: E402
from orchestrator.clusters import ClusterRouter  # noqa: E402
from orchestrator.config import load_config  # noqa: E402
from orchestrator.methods import best_single_expert  # noqa: E402
from orchestrator.profiles import Outcome, Profile, load_profile, profile_from_outcomes  # noqa: E402
from orchestrator.recruit import recruit_weights  # noqa: E402


def skill_profile(profile: Profile, keep: list[int], experts: list[str]) -> Profile:
    """The profile the kept questions alone would have built."""
    outcomes = [Outcome(expert=e, question_id=str(i), task=x.task, skills=x.skills, correct=x.correct[e])
                for i in keep for x in [profile.examples[i]] for e in experts if e in x.correct]
    return profile.model_copy(update={"experts": profile_from_outcomes(outcomes, experts)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", type=Path)
    parser.add_argument("--clusters", type=int)
    parser.add_argument("--prior", type=float)
    args = parser.parse_args()
    config = load_config()
    profile, path = load_profile(config, args.profile)
    graded = [i for i, x in enumerate(profile.examples) if x.correct]
    if len(graded) < 4:
        sys.exit(f"profile {path} has {len(graded)} graded questions; rebuild it with `symoe profile build`")
    settings = config.clusters.model_copy(update={k: v for k, v in (("count", args.clusters), ("prior", args.prior))
                                                  if v is not None})
    examples = [profile.examples[i] for i in graded]
    experts = sorted(profile.experts)
    vectors = encode([x.question for x in examples], config.embedding)
    chosen: dict[str, list[str]] = {"clusters": [], "symoe (skills)": [], "best_single": []}
    for held in range(len(examples)):
        keep = [i for i in range(len(examples)) if i != held]
        router = ClusterRouter([examples[i] for i in keep], vectors[keep], settings, seed=config.seed)
        cluster = router.nearest(vectors[held:held + 1])[0]
        chosen["clusters"].append(cluster.ranking(experts)[0])
        loo = skill_profile(profile.model_copy(update={"examples": examples}), keep, experts)
        weights, *_ = recruit_weights(examples[held].skills, loo.experts, config.router.temperature)
        chosen["symoe (skills)"].append(max(sorted(weights), key=lambda e: weights[e]))
        chosen["best_single"].append(best_single_expert(loo, examples[held].task))
    for e in experts:
        chosen[f"single:{e}"] = [e] * len(examples)
    right = {m: [examples[i].correct.get(e, False) for i, e in enumerate(picks)] for m, picks in chosen.items()}
    oracle = [any(x.correct.values()) for x in examples]
    tokens = {m: float(np.mean([examples[i].tokens.get(e, 0) for i, e in enumerate(picks)]))
              for m, picks in chosen.items()}
    print(f"profile {path}: {len(examples)} graded questions, {len(router.scores)} clusters "
          f"(count {settings.count}, prior {settings.prior}), leave-one-out\n")
    print(f"{'router':<28} {'accuracy':>9} {'± se':>6} {'tokens/q':>9}   clusters minus it [95% CI]")
    for m, r in right.items():
        acc = 100 * sum(r) / len(r)
        line = f"{m:<28} {acc:>8.1f}% {standard_error(r):>6.1f} {tokens[m]:>9.1f}"
        if m != "clusters":
            c = compare(right["clusters"], r, m, seed=config.seed)
            line += f"   {c.diff:+.1f} [{c.low:+.1f}, {c.high:+.1f}]"
        print(line)
    print(f"{'oracle (any expert right)':<28} {100 * sum(oracle) / len(oracle):>8.1f}%")
    same = sum(a == b for a, b in zip(chosen["clusters"], chosen["symoe (skills)"], strict=True))
    print(f"\nclusters and skill routing pick the same top expert on {same}/{len(examples)} questions")


if __name__ == "__main__":
    main()
