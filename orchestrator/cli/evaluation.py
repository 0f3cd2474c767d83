"""``symoe eval``: a thin command over ``eval.runner.evaluate`` (lm-evaluation-harness conventions)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from agents.errors import SymoeError
from agents.files import locked
from eval.datasets import SPLITS, load_split, task_and_limit
from eval.matrix import Matrix, read_matrix, write_matrix
from eval.matrix_build import matrix_rows
from eval.matrix_profile import LABELLINGS
from eval.replay import default_routers, replay
from eval.report import markdown_table, write_reports
from eval.runner import EvalArgs, evaluate, methods_without_answers, questions_for, summarise
from orchestrator.cli.common import (
    BulkOpt,
    ConfigOpt,
    ExecutorOpt,
    RayAddressOpt,
    check_range,
    check_writable,
    comma_list,
    config_from,
    deprecated_option,
    err,
    out,
    stage_bars,
    with_executor,
)
from orchestrator.config import MAX_SEED, SymoeConfig
from orchestrator.methods import expand_methods
from orchestrator.profiles import read_profile
from orchestrator.provenance import provenance
from orchestrator.records import RETRIEVAL_MODES

DEFAULT_ROUTERS = "single,best_single,task_best,random_k,majority,moa,symoe"
MIN_BUDGET_GB, MAX_BUDGET_GB = 0.1, 65536.0
MAX_LIMIT = 100_000  # questions per task
MAX_ROUTERS = 64  # routers in one run, after --sweep and --retrieval expand them
SCORED_SKILLS = ("neighbours", "recorded")  # eval --matrix --skills: where the scored questions' skills come from


def parse_sweeps(items: list[str]) -> list[tuple[str, list[str]]]:
    """``['budget.quality=0,0.5']`` -> ``[('budget.quality', ['0', '0.5'])]``, or one line on what to fix."""
    out = []
    for item in items:
        key, eq, values = item.partition("=")
        listed = comma_list(values)
        if not eq or not key.strip() or not listed:
            raise SymoeError(f"--sweep {item!r} is not KEY=V1,V2,... (e.g. --sweep budget.quality=0,0.5,1)")
        if any(c in v for v in listed for c in "[];"):
            raise SymoeError(f"--sweep {item!r}: a value may not hold [, ] or ;")
        out.append((key.strip(), listed))
    return out


def parse_costs(text: str | None) -> dict[str, float]:
    """``EXPERT=USD,...`` (``--cost``) as a dict; one line for anything else."""
    out: dict[str, float] = {}
    for item in comma_list(text):
        name, eq, value = item.rpartition("=")
        try:
            price = float(value)
        except ValueError:
            price = -1.0
        if not eq or not name.strip() or not math.isfinite(price) or price < 0:
            raise SymoeError(f"--cost {item!r} is not EXPERT=COST with a cost of 0 or more (e.g. gpt-4=0.03)")
        out[name.strip()] = price
    return out


def parse_experts(text: str | None) -> list[str] | None:
    """``--experts A,B,...`` as a list (None: every expert); one line for an empty or repeated one."""
    if text is None:
        return None
    names = comma_list(text)
    if not names:
        raise SymoeError("--experts names no expert; e.g. --experts qwen-1.5b-direct,qwen-1.5b-cot")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise SymoeError(f"--experts names {repeated[0]!r} twice")
    return names


def eval_command(
    tasks: Annotated[str | None, typer.Option(help="comma-separated task names or JSONL files; task:N limits one "
                                              "task (default mmlu,arc_challenge,gsm8k; with --matrix: every task)")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="questions per task (at least 1)")] = None,
    split: Annotated[str | None, typer.Option(help="test or validation (default: test; with --matrix: only that "
                                               "split's questions, else every one)")] = None,
    routers: Annotated[str | None, typer.Option(help="comma-separated routers (single: every expert alone; "
                                                f"default {DEFAULT_ROUTERS})")] = None,
    methods: Annotated[str | None, typer.Option(hidden=True, help="deprecated: --routers")] = None,
    output: Annotated[Path, typer.Option("--output", "--output-path", "-o", help="directory for the reports")] = Path(
        "runs/eval"),
    retrieval: Annotated[str | None, typer.Option(help="retrieval axis for symoe, e.g. never,always,auto")] = None,
    sweep: Annotated[list[str] | None, typer.Option(
        help="KEY=V1,V2,...: run every method that reads KEY once per value, sharing the cache "
             "(e.g. budget.quality=0,0.5,1; repeat for a grid)")] = None,
    seed: Annotated[int, typer.Option(help=f"seed for sampling, recruitment and data (0-{MAX_SEED})")] = 0,
    use_cache: Annotated[Path | None, typer.Option(help="SQLite generation cache to share across runs")] = None,
    log_samples: Annotated[bool, typer.Option(help="write every answer to samples.jsonl")] = False,
    memory_budget_gb: Annotated[float | None, typer.Option(help=f"RAM for resident models, GB ({MIN_BUDGET_GB:g}-"
                                                           f"{MAX_BUDGET_GB:g})")] = None,
    matrix: Annotated[Path | None, typer.Option(
        help="replay on this outcome matrix instead of generating (docs/matrix.md)")] = None,
    folds: Annotated[int, typer.Option(help="with --matrix and no test split: cross-fitting folds (2-20)")] = 5,
    labelling: Annotated[str, typer.Option(
        help="with --matrix: how unlabelled questions get skills: vocabulary or neighbours")] = "vocabulary",
    profile: Annotated[Path | None, typer.Option(
        help="with --matrix: route every question by this profile (default: fit one on the matrix)")] = None,
    skills: Annotated[str, typer.Option(
        help="with --matrix: the scored questions' skills: neighbours (voted by labelled questions, no LLM, as "
             "`skills.source: neighbours`) or recorded (the row's own, the LLM's keywords, as `skills.source: "
             "llm`)")] = "neighbours",
    task_known: Annotated[bool, typer.Option(
        "--task-known/--task-unknown",
        help="with --matrix: routers see each question's task (a benchmark run), or only its text and format "
             "(a `symoe ask` without --task: task_best falls back to best_single)")] = True,
    cost: Annotated[str | None, typer.Option(
        help="with --matrix: EXPERT=USD,...: each expert's cost per question where the matrix records none "
             "(any unit all experts share)")] = None,
    experts: Annotated[str | None, typer.Option(
        help="with --matrix: replay a sub-pool, these experts only (comma-separated; e.g. one model's methods)")
    ] = None,
    executor: ExecutorOpt = None,
    ray_address: RayAddressOpt = None,
    bulk: BulkOpt = 1,
    config: ConfigOpt = None,
) -> None:
    """Evaluate symoe and the baselines on benchmark tasks (resumable: re-run to continue), or
    replay them on an outcome matrix (--matrix)."""
    routers = deprecated_option("--methods", "--routers", methods, routers)
    if experts is not None and matrix is None:
        raise SymoeError("--experts chooses a sub-pool of an outcome matrix: give --matrix too (a live run's pool "
                         "is its config's experts)")
    if matrix is not None:
        check_range("--seed", seed, 0, MAX_SEED)
        check_range("--folds", folds, 2, 20)
        replay_and_report(config_from(config).model_copy(update={"seed": seed}), matrix, routers, tasks, output,
                          folds, seed, labelling, log_samples, profile, parse_sweeps(sweep or []), parse_costs(cost),
                          skills, task_known, parse_experts(experts), split)
        return
    split = split or "test"
    tasks = "mmlu,arc_challenge,gsm8k" if tasks is None else tasks
    routers = DEFAULT_ROUTERS if routers is None else routers  # an empty --routers= is refused, not defaulted
    check_range("--limit", limit, 1, MAX_LIMIT)
    check_range("--seed", seed, 0, MAX_SEED)
    check_range("--memory-budget-gb", memory_budget_gb, MIN_BUDGET_GB, MAX_BUDGET_GB, " (GB)")
    check_range("--bulk", bulk, 1, 64)
    cfg = with_executor(config_from(config).model_copy(update={"seed": seed}), executor, ray_address).with_bulk(bulk)
    task_list = comma_list(tasks)
    if not task_list:
        raise SymoeError("no task given; e.g. --tasks mmlu:50,gsm8k:20")
    modes = comma_list(retrieval) if retrieval else None
    bad = [m for m in modes or [] if m not in RETRIEVAL_MODES]
    if bad:  # refused whether or not the routers retrieve
        raise SymoeError(f"unknown retrieval mode {bad[0]!r} in --retrieval; use: {', '.join(RETRIEVAL_MODES)}")
    sweeps = parse_sweeps(sweep or [])
    grid = math.prod(len(values) for _, values in sweeps) * max(1, len(modes or []))
    if grid > MAX_ROUTERS:  # counted before anything is expanded
        raise SymoeError(f"--sweep and --retrieval make {grid} settings of a router; at most {MAX_ROUTERS}: "
                         "split the run")
    router_list = [str(m) for m in expand_methods(routers, cfg, modes, sweeps)]
    if len(router_list) > MAX_ROUTERS:
        raise SymoeError(f"{len(router_list)} routers to run (after --sweep and --retrieval); at most {MAX_ROUTERS}: "
                         "split the run")
    check_tasks(task_list, split, cfg, seed)
    check_writable(output)
    args = EvalArgs(tasks=task_list, methods=router_list, limit=limit, split=split, output=output, seed=seed,
                    cache_path=use_cache, log_samples=log_samples,
                    memory_budget=int(memory_budget_gb * 2**30) if memory_budget_gb else None)
    run_and_report(cfg, args)


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise SymoeError(f"unknown split {split!r}; use test or validation")


def check_tasks(task_list: list[str], split: str, cfg: SymoeConfig, seed: int) -> None:
    """Fail fast on an unknown split, unknown tasks or malformed files, before any work."""
    check_split(split)
    for entry in task_list:
        name, count = task_and_limit(entry, None)
        if count == 0:
            raise SymoeError(f"task {entry!r} asks for 0 questions; give N of at least 1 (task:N)")
        if not load_split(name, split, cfg.home, limit=1, seed=seed):
            raise SymoeError(f"task {name!r} has no questions in the {split} split; nothing to evaluate")


def replay_and_report(cfg: SymoeConfig, path: Path, routers: str | None, tasks: str | None, output: Path,
                      folds: int, seed: int, labelling: str, log_samples: bool, profile: Path | None = None,
                      sweeps: list[tuple[str, list[str]]] | None = None, costs: dict[str, float] | None = None,
                      skills: str = "neighbours", task_known: bool = True, experts: list[str] | None = None,
                      split: str | None = None) -> None:
    """Replay every router on the matrix (its test split, else cross-fitted; every question
    under a given ``profile``; each swept router once per setting; on the sub-pool ``experts``
    and the questions of ``split`` where given), write the reports."""
    matrix = read_matrix(path)
    if experts is not None:
        matrix = matrix.select(experts=experts)
    if split is not None:
        check_split(split)
        matrix = matrix.select(split=split)
        if not len(matrix):
            raise SymoeError(f"{path} has no {split} questions")
    if costs:
        matrix = matrix.priced(costs)
    fixed = read_profile(profile) if profile is not None else None
    if tasks:
        wanted = comma_list(tasks)
        unknown = [t for t in wanted if t not in matrix.tasks]
        if unknown:
            raise SymoeError(f"{path} has no task {unknown[0]!r} (tasks: {', '.join(matrix.tasks)})")
        matrix = matrix.select(tasks=wanted)
    if labelling not in LABELLINGS:
        raise SymoeError(f"unknown --labelling {labelling!r}; use: {', '.join(LABELLINGS)}")
    if skills not in SCORED_SKILLS:
        raise SymoeError(f"unknown --skills {skills!r}; use: {', '.join(SCORED_SKILLS)}")
    names = default_routers(matrix) if routers is None else routers
    router_list = comma_list(names)
    if not router_list:
        raise SymoeError("no router given; e.g. --routers best_single,clusters,learned:knn")
    check_writable(output)
    with locked(output, "symoe eval"), stage_bars(err) as report:
        samples, stats = replay(cfg, matrix, router_list, folds=folds,
                                seed=seed, labelling=labelling, profile=fixed,  # type: ignore[arg-type]
                                progress=report, sweeps=sweeps, recorded_skills=skills == "recorded",
                                task_known=task_known)
        scored = (f"every question under {profile}" if fixed else "test" if {"test", "validation"} <= set(matrix.splits)
                  else f"cross-fitted ({folds} folds)")
        meta = {"args": {"matrix": str(path), "routers": names, "folds": folds, "seed": seed, "labelling": labelling,
                         "skills": skills, "task_known": task_known, "split": split,
                         "sweep": [f"{k}={','.join(v)}" for k, v in sweeps or []],
                         "cost": costs or {}, "experts": matrix.experts,
                         "profile": str(profile) if profile else None, "scored": scored,
                         "retrieval": "never for every router (recorded answers were given without passages; "
                                      "compare with a live run's router@never)"},
                "config": cfg.public_dict(), "provenance": provenance(cfg, command="eval --matrix")}
        files = write_reports(output, samples, stats, meta, log_samples)
    out.print(markdown_table(summarise(samples), stats), markup=False)
    out.print(f"reports: {', '.join(str(p) for p in files.values())}")


def run_and_report(cfg: SymoeConfig, args: EvalArgs) -> None:
    """Evaluate under the output folder's lock, write the reports, print the table."""
    output, split = args.output, args.split
    with locked(output, "symoe eval"):
        questions = questions_for(args, cfg.home)
        if not questions:
            raise SymoeError(f"the {split} split of {', '.join(args.tasks)} holds no questions")
        with stage_bars(err) as report:
            samples, stats = evaluate(cfg, args, report, questions=questions)
        meta = {"args": args.model_dump(mode="json"), "config": cfg.public_dict(),
                "provenance": provenance(cfg, command="eval")}
        files = write_reports(output, samples, stats, meta, args.log_samples)
        rows = matrix_rows(samples, questions)
        if rows:  # every single expert's answers, as an outcome matrix (docs/matrix.md)
            files["matrix"] = write_matrix(Matrix(rows, source="symoe eval"), output / "matrix.jsonl.gz")
    out.print(markdown_table(summarise(samples), stats), markup=False)  # method names hold [settings]
    out.print(f"reports: {', '.join(str(p) for p in files.values())}")
    empty = methods_without_answers(samples)
    if empty:
        raise SymoeError(f"no generation of {', '.join(empty)} succeeded (every expert call failed; see "
                         f"samples or the 'failed' column): its accuracy is no result")
