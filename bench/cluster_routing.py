"""Cluster routing against skill routing, leave-one-out on a profile's graded questions.

    .venv/bin/python bench/cluster_routing.py [--profile PATH] [--clusters 6] [--prior 2]

Every graded validation question of the profile is held out in turn. The rest build the
routers as the pipeline would: k-means clusters scored per expert (the ``clusters`` method,
top-1), the skill profile (the ``symoe`` method's own route for the question's annotated
skills: recruit's draw of its slots, adaptive k, under the method's per-question seed), the
task's best single expert (``best_single``). The held-out question is routed and scored by
the outcomes its chosen experts had when the profile was built, so no model runs: one
embedding per question. A team of several slots is scored by the pipeline's majority rule
on their recorded answers (``orchestrator.clusters.vote_correct``); where they disagree the
live pipeline synthesises instead, which a replay cannot. Prints accuracy with standard
errors, tokens per question (each slot's generated tokens), the paired 95% interval of
clusters against each, and how often clusters' expert is symoe's heaviest recruit. This
compares routers on validation data; ``symoe eval --routers symoe,clusters,best_single``
measures the answers themselves on test questions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from agents.embedder import encode  # noqa: E402
from eval.stats import compare, standard_error  # noqa: E402
from orchestrator.clusters import ClusterRouter, vote_correct  # noqa: E402
from orchestrator.config import ClusterConfig, SymoeConfig, load_config  # noqa: E402
from orchestrator.methods import Assignment, MethodContext, SkillRouting, best_single_expert  # noqa: E402
from orchestrator.profiles import (  # noqa: E402
    Outcome,
    Profile,
    ProfiledExample,
    load_profile,
    profile_from_outcomes,
)
from orchestrator.records import Query  # noqa: E402

Team = tuple[list[str], dict[str, float]]  # a router's experts for a question (a slot each) and their weights


def skill_profile(profile: Profile, keep: list[int], experts: list[str]) -> Profile:
    """The profile the kept questions alone would have built."""
    outcomes = [Outcome(expert=e, question_id=str(i), task=x.task, skills=x.skills, correct=x.correct[e])
                for i in keep for x in [profile.examples[i]] for e in experts if e in x.correct]
    return profile.model_copy(update={"experts": profile_from_outcomes(outcomes, experts)})


def symoe_team(loo: Profile, x: ProfiledExample, config: SymoeConfig) -> Assignment:
    """The ``symoe`` method's own route for a held-out question under the profile of the others."""
    return SkillRouting().assign(MethodContext(config=config, profile=loo, seed=config.seed),
                                 Query(question=x.question, task=x.task or None), x.skills, None)


def route_all(profile: Profile, examples: list[ProfiledExample], vectors: np.ndarray, settings: ClusterConfig,
              config: SymoeConfig) -> tuple[dict[str, list[Team]], int]:
    """Each router's team for each held-out question, and the number of clusters."""
    experts = sorted(profile.experts)
    chosen: dict[str, list[Team]] = {"clusters": [], "symoe (skills)": [], "best_single": []}
    for held in range(len(examples)):
        keep = [i for i in range(len(examples)) if i != held]
        router = ClusterRouter([examples[i] for i in keep], vectors[keep], settings, seed=config.seed)
        cluster = router.nearest(vectors[held:held + 1])[0]
        chosen["clusters"].append(([cluster.ranking(experts)[0]], {}))
        loo = skill_profile(profile.model_copy(update={"examples": examples}), keep, experts)
        team = symoe_team(loo, examples[held], config)
        chosen["symoe (skills)"].append(([s.expert for s in team.slots], team.weights))
        chosen["best_single"].append(([best_single_expert(loo, examples[held].task)], {}))
    for e in experts:
        chosen[f"single:{e}"] = [([e], {})] * len(examples)
    return chosen, len(router.scores)


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
    vectors = encode([x.question for x in examples], config.embedding)
    chosen, clusters = route_all(profile, examples, vectors, settings, config)
    right = {m: [vote_correct(examples[i], team, weights) for i, (team, weights) in enumerate(teams)]
             for m, teams in chosen.items()}
    oracle = [any(x.correct.values()) for x in examples]
    tokens = {m: float(np.mean([sum(examples[i].tokens.get(e, 0) for e in team) for i, (team, _) in enumerate(teams)]))
              for m, teams in chosen.items()}
    print(f"profile {path}: {len(examples)} graded questions, {clusters} clusters "
          f"(count {settings.count}, prior {settings.prior}), leave-one-out\n")
    print(f"{'router':<28} {'accuracy':>9} {'± se':>6} {'tokens/q':>9}   clusters minus it [95% CI]")
    for m, r in right.items():
        line = f"{m:<28} {100 * sum(r) / len(r):>8.1f}% {standard_error(r):>6.1f} {tokens[m]:>9.1f}"
        if m != "clusters":
            c = compare(right["clusters"], r, m, seed=config.seed)
            line += f"   {c.diff:+.1f} [{c.low:+.1f}, {c.high:+.1f}]"
        print(line)
    print(f"{'oracle (any expert right)':<28} {100 * sum(oracle) / len(oracle):>8.1f}%")
    slots = [len(team) for team, _ in chosen["symoe (skills)"]]
    same = sum(a[0][0] == max(b[0], key=lambda e: b[1].get(e, 0.0))
               for a, b in zip(chosen["clusters"], chosen["symoe (skills)"], strict=True))
    print(f"\nsymoe drew {np.mean(slots):.1f} slots per question; clusters' expert is symoe's heaviest recruit "
          f"on {same}/{len(examples)} questions")


if __name__ == "__main__":
    main()
