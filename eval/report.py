"""Reports of an evaluation run: results JSON, a markdown table (methods x tasks), a
per-subject CSV, samples JSONL and PNG plots. Every file records what made it; the set is
written whole or not at all (``agents.files.staged``)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from agents.files import atomic_open, staged, write_bytes, write_text
from eval.curves import curves_table
from eval.runner import RunStats, SampleResult, summarise


def write_reports(output: Path, samples: list[SampleResult], stats: RunStats, meta: dict[str, Any],
                  log_samples: bool) -> dict[str, Path]:
    """Every report, written into a staging folder and renamed into ``output`` together: a full
    disk or a kill while writing leaves the previous reports as they were."""
    summary = summarise(samples)
    names = {"results": "results.json", "table": "results.md", "subjects": "per_subject.csv",
             "plot": "accuracy_by_method.png", "subject_plot": "per_subject.png", "pareto": "pareto.png"}
    if log_samples:
        names["samples"] = "samples.jsonl"
    with staged(output, "the reports") as stage:
        write_text(stage / names["results"], json.dumps({**meta, "stats": stats.model_dump(), **summary}, indent=1,
                                                        default=str))
        write_text(stage / names["table"], markdown_table(summary, stats))
        table = io.StringIO()
        writer = csv.writer(table)
        writer.writerow(["method", "task/subject", "n", "accuracy"])
        for method, rows in summary["per_subject"].items():
            for subject, row in sorted(rows.items()):
                writer.writerow([method, subject, row["n"], row["accuracy"]])
        write_text(stage / names["subjects"], table.getvalue())
        if log_samples:
            with atomic_open(stage / names["samples"], "w", encoding="utf-8") as handle:
                for s in samples:
                    handle.write(s.model_dump_json() + "\n")
        plot_accuracy(summary, stage / names["plot"])
        plot_subjects(summary, stage / names["subject_plot"])
        plot_pareto(summary, stage / names["pareto"])
    return {kind: output / name for kind, name in names.items()}


def interval(vs: dict[str, Any] | None) -> str:
    """A comparison as 'diff [low, high]' in points ('-' when there is none)."""
    return f"{vs['diff']:+.1f} [{vs['low']:+.1f}, {vs['high']:+.1f}]" if vs else "-"


def markdown_table(summary: dict[str, Any], stats: RunStats | None = None) -> str:
    acc = summary["accuracy"]
    tasks = sorted({t for rows in acc.values() for t in rows if t != "all"})
    with_rag = any("@" in m for m in acc)
    compared = summary.get("compared", {})
    reference = next(iter(compared.values()))["reference"] if compared else None
    task_best = summary.get("compared_task_best", {})
    head = ["method", *tasks, "all", "± se", *([f"vs {reference} [95% CI]"] if reference else []),
            *(["vs task_best [95% CI]"] if task_best else []), "tokens/q", "s/q",
            *(["retrieved %"] if with_rag else []), "failed"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, rows in acc.items():
        total = rows["all"]
        per_q = total["n"] or 1
        cells = [f"{rows[t]['accuracy']:.1f}" if t in rows else "-" for t in tasks]
        against = [interval(compared.get(method))] if reference else []
        against += [interval(task_best.get(method))] if task_best else []
        lines.append("| " + " | ".join([method, *cells, f"**{total['accuracy']:.1f}**", f"{total.get('stderr', 0):.1f}",
                                         *against,
                                         f"{(total['prompt_tokens'] + total['completion_tokens']) / per_q:.0f}",
                                         f"{total['seconds'] / per_q:.2f}",
                                         *([f"{total['retrieval_rate']:.0f}"] if with_rag else []),
                                         str(total["failed"])]) + " |")
    n = {t: next(iter(acc.values()))[t]["n"] for t in tasks} if acc else {}
    text = "\n".join(lines) + "\n\nAccuracy in %; questions per task: " + \
        ", ".join(f"{t} {n[t]}" for t in tasks) + ". tokens/q and s/q: compute per question if run alone." + \
        (f" ± se: standard error of the accuracy; vs {reference}: the difference in points with its 95% paired-"
         "bootstrap interval (10,000 resamples of questions); an interval containing 0 is a tie." if reference
         else "") + "\n"
    if stats:
        text += (f"\nRun: {stats.questions} questions, {stats.generations_needed} distinct generations "
                 f"({stats.generated} generated now, {stats.from_cache} from cache, {stats.failed} failed"
                 + (f", {stats.bad_cache_rows} unreadable cache rows regenerated" if stats.bad_cache_rows else "")
                 + f"), model loads: {len(stats.loads)} ({', '.join(stats.loads)}), "
                 f"wall {stats.wall_seconds:.0f} s.\n")
    if summary.get("curves"):
        text += "\nCost/quality curves (one router over its swept knob):\n\n" + curves_table(summary["curves"])
    for method, counts in summary.get("recruited", {}).items():
        text += f"{method} recruited (questions per expert): " + ", ".join(f"{e} {n}" for e, n in counts.items()) + "\n"
    for method, e in summary.get("escalation", {}).items():
        text += (f"{method} escalated {e['escalated']} of {e['cascaded']} cascaded questions ({e['rate']:.0f}%) "
                 "to the routed team\n")
    return text


def save_figure(fig: Any, path: Path) -> None:
    """A PNG written whole (never a truncated picture over the old one)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    pyplot().close(fig)
    write_bytes(path, buffer.getvalue())


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy(summary: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    acc = summary["accuracy"]
    methods = list(acc)
    tasks = sorted({t for rows in acc.values() for t in rows})
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(methods) * max(1, len(tasks)) / 2), 4))
    width = 0.8 / max(1, len(tasks))
    for j, task in enumerate(tasks):
        xs = [i + j * width for i in range(len(methods))]
        ax.bar(xs, [acc[m].get(task, {}).get("accuracy", 0) for m in methods], width, label=task)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(methods))], methods, rotation=30, ha="right")
    ax.set_ylabel("accuracy %")
    ax.set_title("accuracy by method")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def short_label(method: str) -> str:
    """A method's name for a plot: settings of its own section lose the section
    (``budget[budget.quality=0.3]`` -> ``budget[quality=0.3]``)."""
    base, bracket, settings = method.partition("[")
    if not bracket:
        return method
    section = base.partition(":")[0].partition("@")[0] + "."
    return base + "[" + ";".join(s.removeprefix(section) for s in settings.rstrip("]").split(";")) + "]"


def plot_pareto(summary: dict[str, Any], path: Path) -> None:
    """Accuracy against tokens and against seconds per question, every method, with standard
    errors; the front (methods nothing beats on both) is joined by a line."""
    plt = pyplot()
    points = summary["pareto"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, kind, label in ((axes[0], "tokens", "tokens per question (prompt + generated)"),
                            (axes[1], "seconds", "seconds per question (run alone)")):
        key, on = f"{kind}_per_question", f"front_{kind}"
        for method, p in points.items():
            x = max(p[key], 1e-3)  # a log axis: a free (all-cached) method sits at its left edge
            ax.errorbar(x, p["accuracy"], yerr=p["stderr"], fmt="o", capsize=3,
                        markersize=8 if p[on] else 5, alpha=1.0 if p[on] else 0.6)
            ax.annotate(short_label(method), (x, p["accuracy"]), fontsize=7, xytext=(4, 4), textcoords="offset points")
        front = sorted((max(p[key], 1e-3), p["accuracy"]) for p in points.values() if p[on])
        if len(front) > 1:
            ax.plot(*zip(*front, strict=True), linestyle="--", linewidth=1, color="grey")
        ax.set_xscale("log")
        ax.minorticks_off()  # log-axis minor labels overlap
        ax.set_xlabel(label)
        ax.set_ylabel("accuracy % (± se)")
    axes[0].set_title("cost and accuracy (front: dashed)")
    fig.tight_layout()
    save_figure(fig, path)


def plot_subjects(summary: dict[str, Any], path: Path) -> None:
    """Per-subject accuracy of each single expert against symoe."""
    plt = pyplot()
    per = summary["per_subject"]
    methods = [m for m in per if m.startswith("single:") or m.startswith("symoe")]
    if not methods:
        methods = list(per)
    subjects = sorted({s for m in methods for s in per[m]})
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(subjects) + 2), 4.5))
    for m in methods:
        style = {"marker": "o", "linewidth": 2.5} if m.startswith("symoe") else {"marker": ".", "alpha": 0.7}
        ax.plot(range(len(subjects)), [per[m].get(s, {}).get("accuracy", float("nan")) for s in subjects],
                label=m, **style)
    ax.set_xticks(range(len(subjects)), subjects, rotation=75, ha="right", fontsize=6)
    ax.set_ylabel("accuracy %")
    ax.set_title("per-subject accuracy: each expert vs symoe")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
