"""``symoe profile build|show|gate``: make a profile from validation data, print it, plot it;
calibrate the retrieval gate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.table import Table

from agents.errors import SymoeError
from eval.calibration import calibrate_on_validation
from eval.profiling import BuildSpec, build_profile
from eval.report import pyplot, save_figure
from orchestrator.cli.common import (
    ConfigOpt,
    ExecutorOpt,
    RayAddressOpt,
    check_range,
    config_from,
    err,
    out,
    stage_bars,
)
from orchestrator.config import MAX_SEED
from orchestrator.gate import save_gate
from orchestrator.profiles import Profile, load_profile, save_profile

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
    executor: ExecutorOpt = None,
    ray_address: RayAddressOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Profile every expert on labelled validation questions (resumable: re-run to continue)."""
    check_range("--per-subject", per_subject, 1)
    check_range("--limit", limit, 1)
    check_range("--seed", seed, 0, MAX_SEED)
    check_range("--aggregator-items", aggregator_items, 0, 10_000)
    task_list = [t.strip() for t in tasks.split(",") if t.strip()]
    if not task_list:
        raise SymoeError("no task given; e.g. --tasks mmlu:50,gsm8k:20")
    cfg = config_from(config)
    spec = BuildSpec(tasks=task_list, per_subject=per_subject,
                     limit=limit, seed=seed, aggregator_items=aggregator_items)
    target = output or cfg.home / "profiles" / "profile.json"
    with stage_bars(err) as report:
        profile = build_profile(cfg, spec, report)
    save_profile(profile, target)
    out.print(f"profile written to {target} ({profile.data['questions']} questions, "
              f"{profile.data['build_seconds']} s)")


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
    task_list = [t.strip() for t in tasks.split(",") if t.strip()]
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
