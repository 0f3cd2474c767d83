"""``symoe profile build|show|gate|calibrate``: make a profile from validation data, print it,
plot it; calibrate the retrieval gate; fit the cost/quality knob to a token target."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.table import Table

from agents.errors import SymoeError
from eval.budget import calibrate_quality
from eval.calibration import calibrate_on_validation
from eval.matrix import read_matrix
from eval.matrix_profile import LABELLINGS
from eval.profiling import BuildSpec, build_profile
from eval.replay import MAX_COST_RATIO, PROFILE_ROUTERS, profile_by_replay
from eval.report import markdown_table, pyplot, save_figure
from eval.runner import summarise
from orchestrator.cli.common import (
    BulkOpt,
    ConfigOpt,
    ExecutorOpt,
    RayAddressOpt,
    check_range,
    comma_list,
    config_from,
    err,
    out,
    stage_bars,
    with_executor,
)
from orchestrator.config import MAX_SEED, SymoeConfig
from orchestrator.gate import save_gate
from orchestrator.profiles import (
    BudgetCalibration,
    Profile,
    default_profile_path,
    load_profile,
    read_profile,
    save_profile,
)

app = typer.Typer(no_args_is_help=True, help="Build and inspect expert skill profiles; calibrate the gate.")
ProfileOpt = Annotated[Path | None, typer.Option("--profile", "-p", help="profile JSON file")]


@app.command("build")
def build(
    tasks: Annotated[str, typer.Option(help="comma-separated validation tasks; task:N limits one task")
    ] = "mmlu,arc_challenge,medmcqa,gsm8k",
    per_subject: Annotated[int | None, typer.Option(help="questions per subject (stratified)")] = None,
    limit: Annotated[int | None, typer.Option(help="at most this many questions per task")] = None,
    seed: Annotated[int, typer.Option(help="sampling seed for data, annotation and the test")] = 0,
    aggregator_items: Annotated[int, typer.Option(help="size of the synthetic aggregator test")] = 24,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="where to write the profile")] = None,
    from_matrix: Annotated[Path | None, typer.Option(
        help="build from this outcome matrix's validation split, without generating (docs/matrix.md)")] = None,
    folds: Annotated[int, typer.Option(help="with --from-matrix: folds of the replay that picks the router")] = 5,
    labelling: Annotated[str, typer.Option(
        help="with --from-matrix: skills of unlabelled questions: vocabulary or neighbours")] = "vocabulary",
    routers: Annotated[str, typer.Option(
        help="with --from-matrix: the routers the replay chooses the profile's router from")] = PROFILE_ROUTERS,
    max_cost_ratio: Annotated[float, typer.Option(
        help="with --from-matrix: the router may spend at most this many times best_single's tokens per question "
             "(0: no cap)")] = MAX_COST_RATIO,
    task_known: Annotated[bool, typer.Option(
        "--task-known/--task-unknown",
        help="with --from-matrix: the replay that picks the router sees each question's task (as a benchmark run "
             "does), or only its text and format (as `symoe ask`, the server and the chat model, whose default "
             "router the profile names, see a question)")] = False,
    executor: ExecutorOpt = None,
    ray_address: RayAddressOpt = None,
    bulk: BulkOpt = 8,
    config: ConfigOpt = None,
) -> None:
    """Profile every expert on labelled validation questions (resumable: re-run to continue),
    or from an outcome matrix (--from-matrix)."""
    if from_matrix is not None:
        check_range("--folds", folds, 2, 20)
        check_range("--seed", seed, 0, MAX_SEED)
        check_range("--max-cost-ratio", max_cost_ratio, 0.0, 1000.0)
        build_from_matrix(config_from(config), from_matrix, folds, seed, labelling, output, routers,
                          max_cost_ratio or None, task_known)
        return
    check_range("--per-subject", per_subject, 1)
    check_range("--limit", limit, 1)
    check_range("--seed", seed, 0, MAX_SEED)
    check_range("--aggregator-items", aggregator_items, 0, 10_000)
    check_range("--bulk", bulk, 1, 64)
    task_list = comma_list(tasks)
    if not task_list:
        raise SymoeError("no task given; e.g. --tasks mmlu:50,gsm8k:20")
    cfg = with_executor(config_from(config), executor, ray_address).with_bulk(bulk)
    target = output or cfg.home / "profiles" / "profile.json"
    spec = BuildSpec(tasks=task_list, per_subject=per_subject, limit=limit, seed=seed,
                     aggregator_items=aggregator_items, matrix=target.with_name(target.stem + ".matrix.jsonl.gz"))
    with stage_bars(err) as report:
        profile = build_profile(cfg, spec, report)
    save_profile(profile, target)
    out.print(f"profile written to {target} ({profile.data['questions']} questions, "
              f"{profile.data['build_seconds']} s); every answer as an outcome matrix: {spec.matrix}")


def build_from_matrix(cfg: SymoeConfig, path: Path, folds: int, seed: int, labelling: str,
                      output: Path | None, routers: str = PROFILE_ROUTERS,
                      max_cost_ratio: float | None = MAX_COST_RATIO, task_known: bool = False) -> None:
    """The profile of the matrix's validation split, its router chosen by cross-fitted replay."""
    if labelling not in LABELLINGS:
        raise SymoeError(f"unknown --labelling {labelling!r}; use: {', '.join(LABELLINGS)}")
    if not comma_list(routers):
        raise SymoeError("no router given; e.g. --routers task_best,clusters,learned:knn")
    matrix = read_matrix(path)
    with stage_bars(err) as report:
        profile, samples, stats = profile_by_replay(cfg, matrix, folds=folds, seed=seed, candidates=routers,
                                                    labelling=labelling, progress=report,  # type: ignore[arg-type]
                                                    max_cost_ratio=max_cost_ratio, task_known=task_known)
    target = output or cfg.home / "profiles" / "profile.json"
    save_profile(profile, target)
    out.print(markdown_table(summarise(samples), stats), markup=False)
    recorded = [e for e in matrix.experts if e not in cfg.experts]
    out.print(f"profile written to {target} ({profile.data['questions']} validation questions of {path}); "
              f"its router: {profile.router}, chosen on the {folds}-fold cross-fitted replay above (each "
              f"question's task {'known' if task_known else 'unknown, as symoe ask sees it'}): the most "
              "accurate" + (f" within {max_cost_ratio:g}x best_single's tokens per question" if max_cost_ratio else "")
              + " if it beats best_single beyond noise, else the cheapest that ties best_single (docs/matrix.md)",
              markup=False)
    if recorded:
        out.print(f"note: {', '.join(recorded)} exist only in the matrix: add them to the config's experts to route "
                  "to them (backend: recorded to replay; an engine such as backend: openai to ask them)",
                  markup=False)


@app.command("show")
def show(profile: ProfileOpt = None, heatmap: Annotated[Path | None, typer.Option(
        help="save a skills x experts heatmap PNG here")] = None, config: ConfigOpt = None) -> None:
    """Print the profile as a table (skills x experts: score = right - wrong, with counts)."""
    cfg = config_from(config)
    prof, path = load_profile(cfg, profile)
    experts = list(prof.experts)
    table = Table(title=f"profile {path} ({prof.data.get('questions', '?')} validation questions)")
    table.add_column("skill")
    for name in experts:
        table.add_column(name, justify="right")
    for skill in prof.skills():
        cells = []
        for name in experts:
            count = prof.experts[name].skills.get(skill)
            cells.append(f"{count.score:+d} ({count.right}/{count.n})" if count else "-")
        table.add_row(skill, *cells)
    table.add_row("[b]global competence[/b]", *[f"{prof.experts[n].global_competence:+d}" for n in experts])
    for task in sorted({t for p in prof.experts.values() for t in p.tasks}):
        row = []
        for n in experts:
            c = prof.experts[n].tasks.get(task)
            row.append(f"{100 * c.right / c.n:.0f}% of {c.n}" if c and c.n else "-")
        table.add_row(f"[i]accuracy {task}[/i]", *row)
    if prof.aggregators:
        row = []
        for n in experts:
            total = sum(c.n for c in prof.aggregators[n].tasks.values())
            right = sum(c.right for c in prof.aggregators[n].tasks.values())
            row.append(f"{100 * right / total:.0f}% of {total}" if total else "-")
        table.add_row("[i]aggregator test[/i]", *row)
    if any(prof.experts[n].questions for n in experts):
        table.add_row("[i]tokens / question[/i]", *[f"{prof.experts[n].tokens_per_question:.0f}" for n in experts])
        table.add_row("[i]seconds / question[/i]", *[f"{prof.experts[n].seconds_per_question:.2f}" for n in experts])
    out.print(table)
    if heatmap:
        save_heatmap(prof, heatmap)
        out.print(f"heatmap saved to {heatmap}")


@app.command("gate")
def gate(
    tasks: Annotated[str, typer.Option(help="labelled validation tasks: some need the corpus, some do not")
    ] = "squad:40,nq_open:30,mmlu:40,arc_challenge:20,gsm8k:10",
    tolerance: Annotated[float, typer.Option(help="accuracy points the gate may give up")] = 0.5,
    seed: Annotated[int, typer.Option()] = 0,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="where to write the gate JSON")] = None,
    config: ConfigOpt = None,
) -> None:
    """Calibrate the retrieval gate on validation questions (answers with and without retrieval)."""
    check_range("--tolerance", tolerance, 0, 100, " (accuracy points)")
    check_range("--seed", seed, 0, MAX_SEED)
    task_list = comma_list(tasks)
    if not task_list:
        raise SymoeError("no task given; e.g. --tasks squad:40,mmlu:40")
    cfg = config_from(config)
    with stage_bars(err) as report:
        model = calibrate_on_validation(cfg, task_list, seed=seed,
                                        tolerance=tolerance, progress=report)
    target = output or cfg.home / "gate.json"
    save_gate(model, target)
    c = model.calibrated
    out.print(f"gate written to {target}: on {c['rows']} validation questions, never {c['accuracy_never']}%, "
              f"always {c['accuracy_always']}%, gated {c['accuracy_gated']}% retrieving {c['retrieval_rate']}%")


@app.command("calibrate")
def calibrate(
    target_tokens_per_question: Annotated[float, typer.Option(
        help="the mean prompt + generated tokens per question the budget method should spend")],
    folds: Annotated[int, typer.Option(help="cross-fitting folds over the profile's questions")] = 5,
    profile: ProfileOpt = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="where to write the calibrated profile "
                                                "(default: the profile itself; the shipped one: <home>/profiles)")
                      ] = None,
    plot: Annotated[Path | None, typer.Option(help="save the quality curve (tokens and accuracy) as a PNG here")
                    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Fit the budget method's quality to a token target on the profile's validation
    questions (no model runs) and write it into the profile."""
    check_range("--target-tokens-per-question", target_tokens_per_question, 1, 1_000_000, " (tokens)")
    check_range("--folds", folds, 2, 50)
    cfg = config_from(config)
    prof, path = load_profile(cfg, profile)
    full = read_profile(path)  # every expert, not only those routed now
    result = calibrate_quality(prof, cfg, target_tokens_per_question, folds)
    table = Table("quality", "tokens / question", "accuracy %", title=f"budget on {path} (cross-fitted, {folds} folds)")
    shown = {p.quality for p in result.curve if round(p.quality * 10, 6).is_integer()} | {result.quality}
    for p in result.curve:
        if p.quality in shown:
            mark = " *" if p.quality == result.quality else ""
            table.add_row(f"{p.quality:.2f}{mark}", f"{p.tokens_per_question:.0f}", f"{p.accuracy:.1f}")
    out.print(table)
    low, high = min(p.tokens_per_question for p in result.curve), max(p.tokens_per_question for p in result.curve)
    if not low * 0.85 <= target_tokens_per_question <= high * 1.15:
        err.print(f"[yellow]the target {target_tokens_per_question:g} is outside what budget spends on these "
                  f"questions ({low:.0f} to {high:.0f} tokens/question); the nearest was taken[/yellow]")
    target = output or (cfg.home / "profiles" / "profile.json" if path == default_profile_path() else path)
    save_profile(full.model_copy(update={"budget": result}), target)
    if plot:
        save_quality_curve(result, plot)
        out.print(f"curve saved to {plot}")
    out.print(f"quality {result.quality:g} written to {target}: predicted {result.predicted_tokens_per_question:.0f} "
              f"tokens/question (target {target_tokens_per_question:g}), {result.predicted_accuracy:.1f}% accuracy "
              f"on validation; `--method budget` uses it unless budget.quality is set")


def save_quality_curve(result: BudgetCalibration, path: Path) -> None:
    plt = pyplot()
    q = [p.quality for p in result.curve]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(q, [p.tokens_per_question for p in result.curve], color="tab:blue")
    ax.axhline(result.target_tokens_per_question, color="tab:blue", linestyle=":", label="target")
    ax.axvline(result.quality, color="grey", linestyle="--", label=f"chosen quality {result.quality:g}")
    ax.set_xlabel("quality (0 cheapest, 1 most accurate)")
    ax.set_ylabel("tokens per question", color="tab:blue")
    twin = ax.twinx()
    twin.plot(q, [p.accuracy for p in result.curve], color="tab:green")
    twin.set_ylabel("accuracy % (validation, cross-fitted)", color="tab:green")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("budget: cost and accuracy against quality")
    fig.tight_layout()
    save_figure(fig, path)


def save_heatmap(prof: Profile, path: Path) -> None:
    plt = pyplot()
    skills = prof.skills()
    experts = list(prof.experts)
    grid = np.array([[prof.experts[e].score(s) for e in experts] for s in skills], dtype=float)
    fig, ax = plt.subplots(figsize=(2 + 1.4 * len(experts), 1 + 0.35 * len(skills)))
    bound = max(1.0, float(np.abs(grid).max()))
    im = ax.imshow(grid, cmap="RdYlGn", vmin=-bound, vmax=bound, aspect="auto")
    ax.set_xticks(range(len(experts)), experts, rotation=30, ha="right")
    ax.set_yticks(range(len(skills)), skills)
    for i in range(len(skills)):
        for j in range(len(experts)):
            ax.text(j, i, f"{int(grid[i, j]):+d}", ha="center", va="center", fontsize=8)
    fig.colorbar(im, ax=ax, label="right - wrong")
    ax.set_title("expert skill profile")
    fig.tight_layout()
    save_figure(fig, path)
