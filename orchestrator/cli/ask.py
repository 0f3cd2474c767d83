"""``symoe ask``: answer one question through the query pipeline, and explain the answer."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, get_args

import typer
from rich.markup import escape
from rich.table import Table

from agents.errors import SymoeError
from orchestrator.cli.common import ConfigOpt, check_range, config_from, deprecated_option, err, out, read_question
from orchestrator.config import MAX_K, MAX_SEED, SymoeConfig
from orchestrator.gate import gate_warning
from orchestrator.queries import MAX_TOKENS, make_query
from orchestrator.records import RETRIEVAL_MODES, AskResult
from orchestrator.session import Symoe
from skills.config import SkillSource

FORMATS = ("choice", "number", "text")
SKILL_SOURCES = get_args(SkillSource)


def ask(
    question: Annotated[str, typer.Argument(help="the question, or '-' to read it from stdin")],
    model: Annotated[str | None, typer.Option("--model", "-m", help="answer with this expert only")] = None,
    router: Annotated[str | None, typer.Option(help="who decides which experts answer (default: the profile's "
                                               "router, else symoe; e.g. clusters, cascade, moa, best_single)")] = None,
    method: Annotated[str | None, typer.Option(hidden=True, help="deprecated: --router")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the full result record as JSON")] = False,
    explain: Annotated[bool, typer.Option("--explain", help="show skills, weights, retrieval and answers")] = False,
    retrieval: Annotated[str | None, typer.Option(help="auto, always or never (default: config)")] = None,
    k: Annotated[int | None, typer.Option("-k", help=f"recruit exactly k expert slots (1-{MAX_K})")] = None,
    quality: Annotated[float | None, typer.Option(help="the cost/quality knob, 0 (cheapest) to 1 (most accurate): "
                                                  "the budget method at that quality")] = None,
    answer_format: Annotated[str | None, typer.Option("--format", help="choice, number or text (default: detected)")
                             ] = None,
    seed: Annotated[int | None, typer.Option(help=f"seed for routing and sampling (0-{MAX_SEED})")] = None,
    max_tokens: Annotated[int | None, typer.Option(help=f"cap on each expert's answer in tokens (1-{MAX_TOKENS}; "
                                                   "default: by answer format)")] = None,
    profile: Annotated[Path | None, typer.Option("--profile", "-p", help="profile JSON to route with")] = None,
    deadline: Annotated[float, typer.Option(help="give up after this many seconds, saying what it waited for")
                        ] = 900.0,
    skills: Annotated[str | None, typer.Option(help="where skills come from: llm, neighbours or hybrid "
                                               "(default: config skills.source)")] = None,
    cache: Annotated[bool, typer.Option(help="read and keep generations in the generation cache (--no-cache: "
                                             "every expert generates now, nothing is kept)")] = True,
    config: ConfigOpt = None,
) -> None:
    """Answer a question: route it to the best-suited experts (or one, with --model)."""
    router = deprecated_option("--method", "--router", method, router)
    check_options(skills, retrieval, k, answer_format, max_tokens, quality, seed, deadline)
    cfg = config_from(config)
    if skills is not None:
        cfg = cfg.model_copy(update={"skills": cfg.skills.model_copy(update={"source": skills})})
    text = read_question(question)
    make_query(text, format=answer_format, max_tokens=max_tokens)  # type: ignore[arg-type]  # checked before any model
    with Symoe(cfg, profile=profile, use_cache=cache) as symoe:
        if skills is not None:  # the option beats a router's own skills.source (the profile's router has one)
            spec = symoe.router(router, model, k, retrieval, quality)  # type: ignore[arg-type]
            router, model, k, quality = str(spec.with_setting("skills.source", skills) if spec.needs_skills
                                            else spec), None, None, None
        result = symoe.ask(text, router=router, model=model, seed=seed, k=k, retrieval=retrieval,  # type: ignore[arg-type]
                           format=answer_format, max_tokens=max_tokens, deadline_s=deadline,  # type: ignore[arg-type]
                           quality=quality)
    show(result, cfg, as_json, explain)
    stale = gate_warning(cfg, profile) if result.retrieval and result.retrieval.mode == "auto" else None
    if stale:  # the gate decided this answer's retrieval
        err.print(f"warning: {stale}", markup=False, highlight=False, soft_wrap=True)


def check_options(skills: str | None, retrieval: str | None, k: int | None, answer_format: str | None,
                  max_tokens: int | None, quality: float | None, seed: int | None, deadline: float) -> None:
    """Each option in its range, or one line saying what to fix."""
    if skills is not None and skills not in SKILL_SOURCES:
        raise SymoeError(f"--skills must be {', '.join(SKILL_SOURCES[:-1])} or {SKILL_SOURCES[-1]}, not {skills!r}")
    if retrieval is not None and retrieval not in RETRIEVAL_MODES:
        raise SymoeError(f"--retrieval must be auto, always or never, not {retrieval!r}")
    if k is not None and not 1 <= k <= MAX_K:
        raise SymoeError(f"-k must be from 1 to {MAX_K}, not {k}")
    if answer_format is not None and answer_format not in FORMATS:
        raise SymoeError(f"--format must be choice, number or text, not {answer_format!r}")
    check_range("--max-tokens", max_tokens, 1, MAX_TOKENS)
    check_range("--quality", quality, 0, 1)
    check_range("--seed", seed, 0, MAX_SEED)
    check_range("--deadline", deadline, 1, 86400, " (seconds)")


def show(result: AskResult, cfg: SymoeConfig, as_json: bool, explain: bool) -> None:
    """The answer on stdout: alone (with a dim routing note on stderr), explained, or as JSON."""
    if as_json:
        out.print_json(result.model_dump_json())
        return
    if explain:
        print_explanation(result, cfg)
    elif result.routed:
        note = f"routed by {result.profile}: {', '.join(result.experts)}"
        if result.aggregator:
            note += f"; aggregated by {result.aggregator}"
        if result.retrieval and result.retrieval.retrieved:
            note += f"; retrieved {len(result.retrieval.passages)} passages"
        err.print(f"[dim]{note}[/dim]", highlight=False)
    if result.fallback and not explain:
        err.print(f"[dim]{escape(fallback_note(result))}[/dim]", highlight=False)
    print(result.answer)


def fallback_note(result: AskResult) -> str:
    """'qwen-1.5b-program failed (program: ...); qwen-1.5b-cot answered instead' (one line)."""
    failed = [a for a in result.expert_answers if not a.ok]
    why = " ".join((failed[0].error or "").split())[:160] if failed else ""
    names = ", ".join(dict.fromkeys(a.expert for a in failed))
    return f"{names} failed ({why}); {result.fallback} answered instead"


def print_explanation(result: AskResult, cfg: SymoeConfig) -> None:
    """The why of an answer: skills, recruitment weights and each expert's method, retrieval,
    every expert's answer."""
    out.print(f"[b]router[/b]: {escape(result.method)}; answer format: {result.format}")
    if result.routed:
        out.print(f"[b]profile[/b]: {result.profile}")
        if result.recruitment is not None or result.skills:  # the clusters method reads no skills
            out.print(f"[b]skills[/b]: {', '.join(result.skills) or '(none known)'}"
                      + (f"; unknown keywords: {', '.join(result.unknown_skills)}" if result.unknown_skills else ""))
    if result.escalated is not None:
        first = result.first_answers if result.escalated else result.expert_answers
        said = ", ".join(f"{a.expert} {a.answer if a.ok else 'failed'}"
                         + (f" (margin {a.margin:.2f})" if a.margin is not None else "") for a in first)
        alone = len(first) == 1
        out.print(f"[b]cascade[/b]: first {said}: " + (
            ("not sure enough" if alone else "they disagree or one failed") + ", so the routed team answers"
            if result.escalated else ("sure enough" if alone else "they agree") + ", so that answer stands"))
    print_recruitment(result, cfg)
    answers = Table("expert", "method", "sample", "answer", "response (start)")
    for a in result.expert_answers:
        snippet = (a.error or a.text).replace("\n", " ")[:70]
        answers.add_row(a.expert + (" (fallback)" if a.fallback else ""), a.method, str(a.sample), str(a.answer),
                        escape(snippet))
    out.print(answers)
    if result.aggregated:
        out.print(f"[b]aggregator[/b]: {result.aggregator} synthesised the answers (they disagreed)")
    else:
        out.print("[b]aggregation[/b]: none (the answers agree, one expert answered, or the method votes)")
    steps = Table("step", "prompt tokens", "completion tokens", "seconds", "cached")
    for s in result.steps:
        steps.add_row(s.step, str(s.usage.prompt_tokens), str(s.usage.completion_tokens), f"{s.usage.seconds:.2f}",
                      "yes" if s.cached else "")
    out.print(steps)
    out.print(f"[b]total[/b]: {result.usage.prompt_tokens} prompt + {result.usage.completion_tokens} completion "
              f"tokens; {result.seconds:.1f} s wall")
    out.print("[b]final answer[/b]:")


def print_recruitment(result: AskResult, cfg: SymoeConfig) -> None:
    """Who was recruited and why (weights, each expert's method), the router's note, retrieval."""

    def method(expert: str) -> str:
        return cfg.experts[expert].method if expert in cfg.experts else "?"

    rec = result.recruitment
    if rec is not None:
        out.print(f"[b]recruitment[/b]: {rec.reason}; k = {rec.k}")
        table = Table("expert", "method", "local score", "global strength", "weight", "slots")
        recruited = {r.expert: r for r in rec.recruits}
        for name, weight in sorted(rec.weights.items(), key=lambda kv: -kv[1]):
            r = recruited.get(name)
            table.add_row(name + (" *" if r else ""), method(name), f"{r.local:+.0f}" if r else "",
                          f"{r.global_strength:.3f}" if r else "", f"{weight:.3f}", str(r.slots) if r else "0")
        out.print(table)
    if result.routing and (rec is None or result.routing != rec.reason):
        out.print(f"[b]routing[/b]: {escape(result.routing)}")
    if result.retrieval:
        ret = result.retrieval
        out.print(f"[b]retrieval[/b] ({ret.mode}): {'retrieved' if ret.retrieved else 'not retrieved'}: {ret.reason}")
        for i, p in enumerate(ret.passages, 1):
            out.print(f"  [{i}] {p.title or p.source} (score {p.score:.2f})")
