"""The Python API: a routed question and why it was answered so, one expert alone, and a batch.

    python examples/ask.py

Runs the default pool offline (``make ask`` prepares it). Every call goes through the same
query pipeline as ``symoe ask`` and ``symoe eval``.
"""

from __future__ import annotations

from orchestrator import Query, Symoe, load_config


def main() -> None:
    with Symoe(load_config()) as symoe:  # models stay loaded between calls
        routed = symoe.ask("What is 17 * 23?", retrieval="never")
        print("answer:", routed.answer)
        print("skills:", ", ".join(routed.skills))
        print("experts:", ", ".join(routed.experts), "| aggregated:", routed.aggregated)
        print("tokens:", routed.usage.prompt_tokens, "+", routed.usage.completion_tokens,
              "| steps:", ", ".join(s.step for s in routed.steps))

        one = symoe.ask("Which planet is known as the red planet?", choices=["Venus", "Mars", "Jupiter"],
                        model="qwen-coder-1.5b")
        print("single expert:", one.method, "->", one.answer)

        batch = symoe.ask_many([Query(question="What is the capital of France?"),
                                Query(question="What is 6 * 7?", format="number")], retrieval="never")
        print("batch:", [r.answer for r in batch])


if __name__ == "__main__":
    main()
