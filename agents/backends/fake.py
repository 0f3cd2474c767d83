"""A scripted backend for fast unit tests of control flow. Never behind a feature claim.

``params.answers`` maps a substring of the last user message to a reply; ``params.default``
is the reply otherwise; ``params.fail`` makes every call fail (to test degradation). A
request asking for log-probs gets one per word of the reply, each word ``params.sure``
log-probs above a scripted runner-up (another letter). ``params.delay_s`` makes each
generation take that long (slept in steps of at most 50 ms, so a signal such as Ctrl-C is
seen at once), so protocol tests (kill and resume, concurrent runs, Ctrl-C) can stop a run
part-way on this backend as they would a real model's. A request given a cancel flag stops
at the next step once it is set (``Generation.cancelled``), as a real engine's token loop.
"""

from __future__ import annotations

import time

from agents.backends.base import Backend, BackendError, Cancel, Generation, GenerationRequest, TokenLogprob, Usage
from agents.backends.registry import register_backend

STEP_S = 0.05


def pause(seconds: float, cancel: Cancel | None = None) -> bool:
    """Sleep ``seconds`` in steps of at most ``STEP_S``; False when ``cancel`` was set first."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        if cancel is not None and cancel.cancelled:
            return False
        time.sleep(min(STEP_S, left))
    return True


@register_backend("fake")
class FakeBackend(Backend):
    needs_model_file = False
    calls: int = 0

    def _load(self) -> None:
        if self.spec.params.get("fail_load"):
            raise BackendError(f"fake expert {self.spec.name!r} refused to load")

    def _unload(self) -> None:
        pass

    def _generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        answers = dict(self.spec.params.get("answers", {}))  # type: ignore[call-overload]
        default = str(self.spec.params.get("default", "I do not know."))
        sure = float(self.spec.params.get("sure", 1.0))  # type: ignore[arg-type]
        delay = float(self.spec.params.get("delay_s", 0.0))  # type: ignore[arg-type]
        out = []
        for request in requests:
            type(self).calls += 1
            cancel = self.cancel_of(request)
            began = time.monotonic()
            if not pause(delay, cancel):
                assert cancel is not None
                out.append(Generation.cancelled(self.spec.name, cancel.reason, Usage(
                    prompt_tokens=len(request.messages[-1].content.split()), seconds=time.monotonic() - began)))
                continue
            if self.spec.params.get("fail"):
                out.append(Generation.failure(self.spec.name, "scripted failure"))
                continue
            last = request.messages[-1].content
            reply = next((str(v) for k, v in answers.items() if k in last), default)
            logprobs = [TokenLogprob(token=f" {w}", logprob=-0.1, top={f" {w}": -0.1, " Z" if w != "Z" else " Y":
                                                                        -0.1 - sure})
                        for w in reply.split()] if request.logprobs else None
            out.append(Generation(text=reply, model=self.spec.name, token_logprobs=logprobs,
                                  usage=Usage(prompt_tokens=len(last.split()), completion_tokens=len(reply.split()),
                                              seconds=delay)))
        return out
