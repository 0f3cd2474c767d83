"""A method of your own: subclass ``Method``, implement ``assign``, register it by name. The
pipeline around it (annotation, the retrieval gate, grouped execution, combination, answer
extraction, evaluation and reports) is written once and does not change.

    python examples/custom_method.py

``cheap_pair`` asks the two least expensive experts (by model file size) and lets the profile's
best aggregator settle disagreements: a cost-minded baseline. It is used here through the
Python API and through ``evaluate`` on 6 ARC-Challenge test questions, beside ``best_single``.
"""

from __future__ import annotations

from pathlib import Path

from eval.datasets import load_split
from eval.runner import EvalArgs, evaluate, summarise
from orchestrator import Assignment, Method, MethodContext, Query, Symoe, load_config, methods
from orchestrator.methods import greedy


@methods.register("cheap_pair")
class CheapPair(Method):
    """The two smallest experts answer; the best aggregator synthesises when they disagree."""

    def assign(self, ctx: MethodContext, query: Query, skills: list[str], variant: str | None) -> Assignment:
        def size(name: str) -> int:
            source = ctx.config.experts[name].source
            return source.size if source and source.size else 1 << 40

        pair = sorted(ctx.config.experts, key=size)[:2]
        profile = ctx.need_profile("cheap_pair")
        return Assignment(slots=[greedy(e, ctx.seed) for e in pair], combine="symoe",
                          aggregator=profile.best_aggregator(skills))


def main(output: Path = Path("runs/example-cheap-pair")) -> None:
    config = load_config()
    with Symoe(config) as symoe:
        result = symoe.ask("Which gas do plants take in from the air?", choices=["Oxygen", "Carbon dioxide", "Helium"],
                           router="cheap_pair")
        print("cheap_pair:", result.answer, "| experts:", ", ".join(result.experts), "| aggregated:",
              result.aggregated)
    questions = load_split("arc_challenge", "test", config.home, limit=6, seed=0)
    args = EvalArgs(tasks=["arc_challenge:6"], methods=["cheap_pair", "best_single"], output=output)
    samples, stats = evaluate(config, args, questions=questions)
    for method, rows in summarise(samples)["accuracy"].items():
        print(f"{method}: {rows['all']['accuracy']:.1f}% on {rows['all']['n']} questions")


if __name__ == "__main__":
    main()
