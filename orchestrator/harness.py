"""symoe inside lm-evaluation-harness: the ``symoe`` model (``lm_eval.api.model.LM``).

    pip install 'symoe[lm-eval]'
    symoe lm-eval --model symoe --model_args router=symoe --tasks TASK ...   # lm_eval's own CLI

``generate_until`` runs the one query pipeline on all of a task's requests at once (annotation,
routing, the experts grouped by model, aggregation), so a harness run measures exactly what
``symoe ask`` does. lm-eval 0.4.13 has no plug-in entry point for models, so the model is
registered when this module is imported; ``symoe lm-eval`` imports it and hands the rest of
its arguments to ``lm_eval``'s command line. Log-likelihood tasks are not supported: symoe
answers by generating with a routed team, it has no single model's token probabilities.
"""

from __future__ import annotations

import sys
from typing import Any

from lm_eval.__main__ import cli_evaluate
from lm_eval.api.instance import Instance
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from agents.errors import SymoeError
from orchestrator.config import load_config
from orchestrator.queries import cut_at_stop
from orchestrator.records import Query
from orchestrator.session import Symoe, deprecated

NO_LOGLIKELIHOOD = ("the symoe model answers by generation only (a routed team has no single model's token "
                    "log-probabilities): use generate_until tasks (gsm8k-style), not multiple-choice loglikelihood")


@register_model("symoe")
class SymoeLM(LM):
    """``--model symoe --model_args router=NAME,config=PATH,batch_size=N,max_gen_toks=N,seed=N``
    (``strategy=NAME``, the old name of ``router``, works one more release).

    A request without ``max_gen_toks`` gets ``max_gen_toks`` tokens (256), the routing and
    sampling run with ``seed`` (1234), and the text ends before the first ``until`` string:
    these are the defaults of lm-eval's API models, so ``local-chat-completions`` against
    ``symoe serve`` sends the same request and the two score the same."""

    def __init__(self, router: str = "symoe", config: str | None = None, batch_size: int | str = 64,
                 max_gen_toks: int | str = 256, seed: int | str = 1234, strategy: str | None = None,
                 **_: Any) -> None:
        super().__init__()
        if strategy is not None:
            deprecated("--model_args strategy=", "router=")
            router = strategy
        self.router = router
        self.batch = max(1, int(batch_size))
        self.max_gen_toks = int(max_gen_toks)
        self.seed = int(seed)
        self.symoe = Symoe(load_config(config))
        self.symoe.router(router)  # an unknown router fails here, in one line

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        out: list[str] = []
        for lo in range(0, len(requests), self.batch):
            part = requests[lo:lo + self.batch]
            queries, stops = [], []
            for request in part:
                context, gen_kwargs = request.args[0], (request.args[1] if len(request.args) > 1 else {}) or {}
                stops.append(gen_kwargs.get("until"))
                queries.append(Query(question=str(context).strip(),
                                     max_tokens=int(gen_kwargs.get("max_gen_toks") or self.max_gen_toks)))
            results = self.symoe.ask_many(queries, router=self.router, seed=self.seed)
            out.extend(cut_at_stop(r.text, s) for r, s in zip(results, stops, strict=True))
        return out

    def loglikelihood(self, requests: list[Instance], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        raise SymoeError(NO_LOGLIKELIHOOD)

    def loglikelihood_rolling(self, requests: list[Instance], disable_tqdm: bool = False) -> list[float]:
        raise SymoeError(NO_LOGLIKELIHOOD)


def main(args: list[str]) -> int:
    """``lm_eval``'s command line with the ``symoe`` model registered."""
    sys.argv = ["lm_eval", *args]
    try:
        cli_evaluate()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
