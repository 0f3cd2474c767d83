"""A backend of your own: subclass ``Backend``, implement three hooks, register it by name.

    python examples/custom_backend.py

This one is a calculator: it answers arithmetic exactly (Python's ``ast``, no ``eval``) and
says it does not know anything else, so the pipeline treats its other replies as answers it
can outvote. ``backend: calculator`` in a config makes it an expert; here it is one of a
two-expert pool used with ``single:calculator`` and ``majority``.
"""

from __future__ import annotations

import ast
import operator
import re
import time

from agents.backends import Backend, Generation, GenerationRequest, Usage, register_backend
from agents.pool import ExpertSpec
from orchestrator import Symoe, load_config

OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def calculate(text: str) -> float | None:
    match = re.search(r"(\d[\d\s+\-*/().]*\d)", text)
    if not match:
        return None

    def value(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return float(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in OPS:
            return OPS[type(node.op)](value(node.left), value(node.right))
        raise ValueError("not arithmetic")

    try:
        return value(ast.parse(match.group(1), mode="eval").body)
    except (SyntaxError, ValueError, ZeroDivisionError):
        return None


@register_backend("calculator")
class CalculatorBackend(Backend):
    needs_model_file = False  # nothing to load from disk

    def _load(self) -> None:
        pass

    def _unload(self) -> None:
        pass

    def _generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        out = []
        for request in requests:
            start = time.perf_counter()
            question = request.messages[-1].content.split("\n\n")[0]
            result = calculate(question)
            shown = None if result is None else int(result) if result.is_integer() else round(result, 6)
            text = f"Answer: {shown}" if shown is not None else "I do not know."
            out.append(Generation(text=text, model=self.spec.name,
                                  usage=Usage(prompt_tokens=len(question.split()), completion_tokens=len(text.split()),
                                              seconds=time.perf_counter() - start)))
        return out


def main() -> None:
    base = load_config()
    config = base.model_copy(update={"experts": {**base.experts,
                                                 "calculator": ExpertSpec(name="calculator", backend="calculator")}})
    with Symoe(config) as symoe:
        print("calculator:", symoe.ask("What is 1234 * 5678?", router="single:calculator").answer)
        print("calculator on words:", symoe.ask("Who wrote Hamlet?", router="single:calculator").answer)


if __name__ == "__main__":
    main()
