"""Annotation latency with and without reusing the primed prompt state (llama.cpp), in one run.

    .venv/bin/python bench/prefix_reuse.py [--questions 4]

The annotator draws five samples of one prompt per question. ``LlamaCppBackend`` primes
the KV cache with the prompt (less its last token) once and reloads that state for the
next request with the same prompt. This script times the same requests both ways (the
"fresh" way evaluates every prompt from empty, as before), checks that each request's text
is the same whether it ran first, after its siblings, or alone, and prints the ratio.
"""

from __future__ import annotations

import argparse
import time

from agents.runtime import build_backend
from orchestrator.config import load_config
from skills.annotate import annotation_requests

QUESTIONS = [
    "Natalia sold clips to 48 of her friends in April, and then half as many in May. How many in all?",
    "Which hormone regulates blood sugar levels and is produced by the pancreas?",
    "What was the main cause of the fall of the Western Roman Empire?",
    "A train travels 120 km in 1.5 hours. What is its average speed in km/h?",
    "Which of these is a noble gas: oxygen, argon, nitrogen or chlorine?",
    "Under contract law, what is consideration?",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=4)
    args = parser.parse_args()
    config = load_config()
    backend = build_backend(config.expert(config.default_expert), config.home)
    backend.load()
    requests = [r for q in QUESTIONS[: args.questions] for r in annotation_requests(q, config.skills, 0)]

    def fresh() -> None:  # the old way: every prompt from an empty cache
        backend._primed = None  # type: ignore[attr-defined]

    timings, texts = {}, {}
    for way in ("fresh", "reused"):
        start = time.perf_counter()
        out = []
        for r in requests:
            if way == "fresh":
                fresh()
            out.append(backend.generate([r])[0].text)
        timings[way], texts[way] = time.perf_counter() - start, out
    alone = []
    for i in (len(requests) - 1, 2):  # a later sample, run first after something else
        fresh()
        backend.generate([requests[0 if i else 1]])
        alone.append(backend.generate([requests[i]])[0].text == texts["reused"][i])
    backend.unload()
    n = len(requests)
    print(f"{n} annotation requests ({args.questions} questions x {config.skills.samples} samples), "
          f"{config.default_expert}")
    print(f"  fresh prompt each time : {timings['fresh']:7.1f} s  ({timings['fresh'] / n:.2f} s/request)")
    print(f"  primed state reused    : {timings['reused']:7.1f} s  ({timings['reused'] / n:.2f} s/request)")
    print(f"  ratio fresh/reused     : {timings['fresh'] / timings['reused']:.2f}x")
    print(f"  same texts both ways   : {sum(a == b for a, b in zip(texts['fresh'], texts['reused'], strict=True))}/{n}")
    print(f"  same text run elsewhere: {sum(alone)}/{len(alone)}")


if __name__ == "__main__":
    main()
