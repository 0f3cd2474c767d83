"""A domain expert of the generation team: for one event type it picks candidate generators by
their learned profiles and runs the trial-and-error loop.

For each candidate (best profile first, at most ``max_candidates``) it makes up to
``max_tries`` attempts; every attempt is scored by all critics of the type. It stops as soon
as an attempt scores at least ``threshold`` on every critic; otherwise the rewriter turns the
attempt's scores (hints on the failing ones) into a changed event (the prompt rewrite) and it tries again. The
best attempt by mean score is chosen. Every choice, score and rewrite goes into the trace,
and every score into the profiles.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from agents.teams.interfaces import Context, Critic, Generator, Rewriter
from agents.teams.profiles import GeneratorProfiles
from agents.teams.records import Attempt, Event, EventResult, Score


@dataclass
class DomainExpert:
    event_type: str
    generators: list[Generator]
    critics: list[Critic]
    profiles: GeneratorProfiles
    rewriter: Rewriter | None = None
    max_candidates: int = 2
    max_tries: int = 3
    threshold: float = 0.7

    @property
    def agent(self) -> str:
        return f"expert:{self.event_type}"

    def candidates(self) -> list[Generator]:
        by_name = {g.name: g for g in self.generators}
        ranked = self.profiles.rank({g.name: g.prior for g in self.generators}, self.event_type)
        return [by_name[name] for name, _ in ranked[: self.max_candidates]]

    def attempt(self, gen: Generator, event: Event, round_: int, try_index: int, ctx: Context) -> Attempt:
        began = time.perf_counter()
        att = Attempt(event=event.model_copy(deep=True), generator=gen.name, round=round_, try_index=try_index)
        try:
            att.artifact = gen.generate(event, ctx)
        except Exception as exc:  # a plug-in failed: record it, never crash the team
            att.error = f"{type(exc).__name__}: {exc}"
        if att.artifact is not None:
            for critic in self.critics:
                try:
                    att.scores.append(critic.judge(event, att.artifact, ctx))
                except Exception as exc:  # a plug-in failed: record it, never crash the team
                    att.scores.append(Score(critic=critic.name, score=0.0, suggestion=f"critic failed: {exc}"))
        att.seconds = round(time.perf_counter() - began, 3)
        return att

    def run(self, event: Event, round_: int, ctx: Context, result: EventResult | None = None) -> EventResult:
        result = result or EventResult(event_id=event.id)
        cands = self.candidates()
        ctx.trace.add("generate", self.agent, f"candidates for {event.id}: " + ", ".join(
            f"{g.name} ({self.profiles.strength(g.name, self.event_type, g.prior):.2f})" for g in cands),
            event.id, round=round_, candidates=[g.name for g in cands])
        first = len(result.attempts)
        done = False
        for gen in cands:
            current = event
            for t in range(self.max_tries):
                att = self.attempt(gen, current, round_, t, ctx)
                result.attempts.append(att)
                passed = att.passed(self.threshold)
                self.profiles.update(gen.name, self.event_type, att.total, passed)
                ctx.trace.add("try", self.agent,
                              f"{event.id} {gen.name} try {t + 1}: "
                              + (att.error or ", ".join(f"{s.critic} {s.score:.2f}" for s in att.scores))
                              + (" -> pass" if passed else " -> fail"),
                              event.id, generator=gen.name, round=round_, try_index=t, passed=passed,
                              total=round(att.total, 4), error=att.error,
                              scores={s.critic: s.score for s in att.scores},
                              measured={s.critic: s.measured for s in att.scores})
                if passed:
                    done = True
                    break
                if att.error is not None or t == self.max_tries - 1 or self.rewriter is None:
                    break
                rewritten = self.rewriter.rewrite(current, att.scores, ctx)
                if rewritten is None:
                    ctx.trace.add("rewrite", self.agent, f"{event.id}: no rewrite helps {gen.name}; next candidate",
                                  event.id, generator=gen.name)
                    break
                current, note = rewritten
                ctx.trace.add("rewrite", self.agent, f"{event.id}: {note}", event.id, generator=gen.name,
                              params=current.params, text=current.text, loudness=current.loudness)
            if done:
                break
        this_round = [i for i in range(first, len(result.attempts)) if result.attempts[i].artifact is not None]
        if this_round:
            result.chosen = max(this_round, key=lambda i: (result.attempts[i].passed(self.threshold),
                                                           result.attempts[i].total))
            best = result.attempts[result.chosen]
            ctx.trace.add("choose", self.agent, f"{event.id}: chose {best.generator} try {best.try_index + 1} "
                          f"(mean {best.total:.2f}{', all critics pass' if best.passed(self.threshold) else ''})",
                          event.id, generator=best.generator, total=round(best.total, 4))
        else:
            ctx.trace.add("choose", self.agent, f"{event.id}: every candidate failed to produce output",
                          event.id)
        return result
