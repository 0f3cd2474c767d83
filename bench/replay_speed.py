"""Replay speed (issue 23): every router replayed on a synthetic 10,000 x 10 outcome matrix.

    .venv/bin/python bench/replay_speed.py [--questions 10000] [--experts 10] [--tasks 5]
                                           [--routers LIST] [--folds 5] [--test-share 0]
                                           [--seed 0] [--per-router] [--keep-home]

Issue 23: "question embeddings computed once and cached by text hash; replaying every method
over 10,000 questions and 10 experts then takes under a minute on 2 cores". One run times:

1. the embedder's load (one short text through ``agents.embedder.encode``);
2. ``eval.learned_routers.embed_texts`` on every question, cache cold;
3. the same call again, cache warm (the text-hash cache under ``<home>/embeddings``);
4. ``eval.replay.replay`` of every router (``default_routers(matrix)`` unless ``--routers``):
   the figure the issue bounds by 60 s; its own ``cached_embed`` reads the warm cache;
5. with ``--per-router``, a replay of each router spec alone (each pays the per-fold profile
   fit and skill labelling again, so these do not sum to step 4).

With ``--breakdown``, step 4 also says where its time went: a timer wraps the pipeline's
stages (``orchestrator.graph``'s plan, gate, answer, escalate, combine, extract), the fits
inside planning (each learned router's ``fit``, ``ClusterRouter``, the cascade's ``assign``
and the ``Profile.agreement`` it calls) and replay's own steps (the per-split profile and
skill labelling, scoring each answer); the rows are inclusive (a nested row is part of the
row above it) and the wrappers cost about a microsecond a call.

The matrix is built in memory, no file: ``--tasks`` tasks (four multiple-choice with four
letters, one open-ended arithmetic with numeric answers), each with a few question templates
(the clusters routing can find) filled with numbers and words, so every question text is
distinct. Each expert has a strength per task and per template, less a difficulty per question
shared by all; ``correct`` is drawn from it; a wrong expert picks the question's favourite
distractor more often than not (so votes can be wrong together); prompt and completion
tokens, seconds and, for letters, a log-prob margin (larger when right) are recorded. Every
row is ``validation`` (replay cross-fits ``--folds`` folds), or ``--test-share`` of them (by
id hash) ``test`` (replay fits on validation, scores test).

Everything runs under a temporary ``SYMOE_HOME`` (removed afterwards unless ``--keep-home``;
``--home DIR`` names one to reuse, whose embedding cache may be warm already), so the user's
embedding cache is neither read nor written. The replay's row also gives its CPU seconds (every
process, workers included): on a shared machine they vary less than its wall seconds; a line
per process then says which splits it replayed, from when, in how many wall and CPU seconds
(``replay(..., timeline=...)``), so the tail of a parallel replay shows. Rate: questions x experts x
replayed methods (``single`` expands to one method per expert) per second.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from threadpoolctl import threadpool_info, threadpool_limits  # noqa: E402

from eval.matrix import Matrix, MatrixRow, RecordedOutcome  # noqa: E402

LETTERS = ("A", "B", "C", "D")

# Each task: templates (one cluster each) with slots {n}, {m}, {w}, {v}.
TASKS: dict[str, list[str]] = {
    "arithmetic": [
        "A shop sells {n} {w}s at {m} dollars each. How many dollars do they cost together?",
        "Tom has {n} {w}s and gives away {m} of them. How many {w}s does he keep if he then buys {n} more?",
        "A train travels {n} kilometres in {m} hours. What is its average speed, rounded down, in km per hour?",
        "What is the remainder when {n} is divided by {m}?",
    ],
    "science": [
        "A {w} of mass {n} kg is pushed with a force of {m} N. Which quantity is its acceleration closest to?",
        "Which process explains why a {w} left in the sun at {n} degrees loses {m} percent of its water?",
        "In a cell culture of {n} {w} cells, which organelle produces most of the energy after {m} hours?",
        "A circuit has a {n} ohm {w} and a {m} volt battery. Which current flows through it?",
    ],
    "history": [
        "In the year {y}, which event most changed trade along the {w} route?",
        "Which ruler governed the {w} region around {y}, about {m} years after the treaty?",
        "What caused the {w} uprising of {y}, which lasted {m} months?",
    ],
    "law": [
        "A tenant pays {n} dollars rent for a {w}; the landlord keeps a deposit of {m} dollars. Which claim succeeds?",
        "A contract for {n} {w}s is signed by a minor of {m} years. Is it enforceable?",
        "A witness saw the {w} theft from {n} metres at night. Which objection to the testimony is strongest?",
    ],
    "code": [
        "What does a loop over range({n}) that appends i % {m} to a list named {w} return at the end?",
        "Which data structure answers {n} lookups of {w} keys in constant time each, with {m} inserts?",
        "A recursive {w} function calls itself {m} times per level for {n} levels. What is its complexity?",
        "Which bug makes a {w} parser read {n} bytes past a buffer of {m} bytes?",
    ],
    "geography": [
        "Which river runs closest to the {w} city of {n} thousand people, {m} km from the coast?",
        "A {w} mountain range rises {n} metres over {m} km. Which climate lies on its lee side?",
        "Which country exported {n} tonnes of {w} in a year, {m} percent of the world's supply?",
    ],
    "medicine": [
        "A patient of {m} years has a {w} fever of {n} tenths above normal. Which test comes first?",
        "Which drug interacts with {w} at a dose of {n} mg taken {m} times a day?",
        "A {w} wound of {n} mm heals in {m} days. Which tissue closes it first?",
    ],
}
WORDS = ("apple", "copper", "river", "violin", "lantern", "marble", "falcon", "cedar", "harbour", "glacier",
         "pepper", "silver", "compass", "meadow", "orchard", "quartz", "saddle", "timber", "velvet", "walnut",
         "beacon", "canyon", "ember", "fjord", "garnet", "hazel", "island", "juniper", "kettle", "linen")


def expert_names(count: int) -> list[str]:
    sizes = ("0.5b", "1b", "1.5b", "3b", "7b", "8b", "13b", "14b", "32b", "70b")
    return [f"expert-{i:02d}-{sizes[i % len(sizes)]}" for i in range(count)]


def synthetic_matrix(questions: int, experts: int, tasks: int, test_share: float, seed: int) -> Matrix:
    """``questions`` distinct questions over ``tasks`` tasks (the first open-ended, the rest
    four-letter choice) x ``experts`` experts, with per-task and per-template strengths."""
    if not 1 <= tasks <= len(TASKS):
        raise SystemExit(f"--tasks must be 1..{len(TASKS)}")
    rng = np.random.default_rng(seed)
    names = expert_names(experts)
    task_names = list(TASKS)[:tasks]
    # strength: a base per expert (bigger is better and dearer), a shift per task, one per template
    base = np.linspace(-0.6, 0.9, experts) + rng.normal(0, 0.2, experts)
    per_task = {t: rng.normal(0, 0.9, experts) for t in task_names}
    per_template = {(t, k): rng.normal(0, 0.7, experts) for t in task_names for k in range(len(TASKS[t]))}
    completion = np.linspace(40, 260, experts) * rng.uniform(0.8, 1.2, experts)  # mean completion tokens
    speed = np.linspace(120, 15, experts)  # tokens per second
    rows: list[MatrixRow] = []
    seen: set[str] = set()
    for i in range(questions):
        task = task_names[i % tasks]
        k = int(rng.integers(len(TASKS[task])))
        while True:  # distinct texts: retry the (rare) repeat
            text = TASKS[task][k].format(n=int(rng.integers(2, 5000)), m=int(rng.integers(2, 500)),
                                         y=int(rng.integers(800, 2000)), w=WORDS[int(rng.integers(len(WORDS)))])
            if text not in seen:
                seen.add(text)
                break
        choice = task != "arithmetic"
        difficulty = rng.normal(0, 1.2)  # shared by every expert: some questions defeat them all
        logit = base + per_task[task] + per_template[(task, k)] - difficulty + rng.normal(0, 0.3, experts)
        right = rng.random(experts) < 1 / (1 + np.exp(-logit))
        if choice:
            gold = LETTERS[int(rng.integers(4))]
            wrong = [x for x in LETTERS if x != gold]
            favourite = wrong[int(rng.integers(3))]
        else:
            gold = str(int(rng.integers(2, 100000)))
            favourite = str(int(gold) + int(rng.choice([-10, -1, 1, 10])))
        prompt = int(len(text.split()) * 1.3) + (40 if choice else 20)
        outcomes = {}
        for j, name in enumerate(names):
            if right[j]:
                answer = gold
            elif rng.random() < 0.6:
                answer = favourite
            else:
                answer = (rng.choice([x for x in LETTERS if x != gold]) if choice
                          else str(int(gold) + int(rng.integers(-500, 500)) or 1))
            tokens = max(1, int(rng.gamma(4.0, completion[j] / 4.0)))
            margin = round(float(rng.gamma(3.0, 0.8 if right[j] else 0.35)), 3) if choice else None
            outcomes[name] = RecordedOutcome(correct=float(right[j]), answer=str(answer), prompt_tokens=prompt,
                                             completion_tokens=tokens, seconds=round(tokens / speed[j], 3),
                                             margin=margin)
        qid = f"{task}-{i:06d}"
        test = test_share > 0 and int(hashlib.sha256(qid.encode()).hexdigest(), 16) % 1000 < test_share * 1000
        rows.append(MatrixRow(id=qid, task=task, split="test" if test else "validation", question=text,
                              choices=[f"option {x} of question {i}" for x in LETTERS] if choice else None,
                              answer=gold, outcomes=outcomes))
    return Matrix(rows, names, source="synthetic")


class Breakdown:
    """Seconds and calls per label, from timers wrapped around functions and methods."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.order: list[str] = []

    @contextmanager
    def wrapped(self, targets: list[tuple[object, str, str | Callable[..., str]]]) -> Iterator[None]:
        """Each (owner, attribute, label) timed while inside; a callable label gets the call's
        arguments (e.g. a learned router's ``self``, to label by its name)."""
        saved = [(owner, name, owner.__dict__[name]) for owner, name, _ in targets]
        for owner, name, label in targets:
            self.order.append(label if isinstance(label, str) else f"{owner.__name__}.{name}")  # type: ignore[attr-defined]
            setattr(owner, name, self._timer(getattr(owner, name), label, self.order[-1]))
        try:
            yield
        finally:
            for owner, name, original in saved:
                setattr(owner, name, original)

    def _timer(self, fn: Callable[..., object], label: str | Callable[..., str],
               anchor: str) -> Callable[..., object]:
        def timed(*args: object, **kwargs: object) -> object:
            key = label if isinstance(label, str) else label(*args, **kwargs)
            if key not in self.order:  # a label made at the call: listed where its target was
                self.order.insert(self.order.index(anchor), key)
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[key] += time.perf_counter() - started
                self.calls[key] += 1
        return timed


def breakdown_targets() -> list[tuple[object, str, str | Callable[..., str]]]:
    """What ``--breakdown`` times, parents before their parts (labels indented by nesting)."""
    import eval.replay
    import orchestrator.graph
    from eval.matrix_profile import SkillLabeller
    from orchestrator.clusters import ClusterRouter
    from orchestrator.learned import LearnedRouter
    from orchestrator.methods import Cascade
    from orchestrator.profiles import Profile
    from orchestrator.session import Symoe

    return [
        (SkillLabeller, "__call__", "skills labelled (vocabulary), per split"),
        (eval.replay, "profile_from_matrix", "profile_from_matrix, per split"),
        (Symoe, "__init__", "Symoe(...) opened, per split"),
        (Symoe, "ask_many", "ask_many (the live pipeline), per split"),
        (orchestrator.graph, "plan", "  stage plan"),
        (LearnedRouter, "fit", lambda self, *a, **k: f"    learned:{self.name} fit"),
        (ClusterRouter, "__init__", "    ClusterRouter built (k-means, options replayed)"),
        (Cascade, "assign", "    cascade assign, per query"),
        (Profile, "agreement", "      Profile.agreement (reliable_first)"),
        (orchestrator.graph, "gate", "  stage gate"),
        (orchestrator.graph, "answer", "  stage answer (ReplayExecutor)"),
        (orchestrator.graph, "escalate", "  stage escalate"),
        (orchestrator.graph, "combine", "  stage combine"),
        (orchestrator.graph, "extract_answers", "  stage extract"),
        (eval.replay, "sample_of", "sample_of (scoring), per answer"),
        (eval.replay, "oracle_samples", "oracle_samples"),
    ]


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and of its children reaped so far (a
    replay's worker processes are, once it returns): on a shared machine a fairer figure than
    wall seconds, which another job's load inflates."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).resolve().parents[1])
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=10_000)
    parser.add_argument("--experts", type=int, default=10)
    parser.add_argument("--tasks", type=int, default=5, help=f"1..{len(TASKS)}; the first is open-ended arithmetic")
    parser.add_argument("--routers", default=None, help="router specs, comma-separated; default: default_routers()")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--test-share", type=float, default=0.0,
                        help="share of questions in a test split (0: all validation, cross-fitted)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-router", action="store_true", help="also replay each router spec alone")
    parser.add_argument("--blas-threads", type=int, default=None,
                        help="cap numpy/scipy's BLAS threads (threadpoolctl) for the replay; default: as found")
    parser.add_argument("--breakdown", action="store_true", help="time the replay's stages and fits (see above; "
                                                                 "one process)")
    parser.add_argument("--workers", type=int, default=None,
                        help="cores the replay may keep busy (default: replay's own choice, every core when large; "
                             "whole folds then go to as many processes as keep each core busy to the end)")
    parser.add_argument("--keep-home", action="store_true", help="keep the temporary SYMOE_HOME (printed)")
    parser.add_argument("--home", type=Path, default=None,
                        help="this SYMOE_HOME instead of a temporary one (kept): an embedding cache there from an "
                             "earlier run (--keep-home) makes the 'cache cold' step warm, to time replays back to back")
    args = parser.parse_args()

    if args.home is not None:
        args.home.mkdir(parents=True, exist_ok=True)
        args.keep_home = True
    home = args.home.resolve() if args.home is not None else Path(tempfile.mkdtemp(prefix="symoe-replay-bench-"))
    os.environ["SYMOE_HOME"] = str(home)  # before symoe reads it anywhere: the user's cache is untouched
    try:
        run(args, home)
    finally:
        if args.keep_home:
            print(f"home kept: {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)


def run(args: argparse.Namespace, home: Path) -> None:
    import torch

    from agents.embedder import encode
    from eval.learned_routers import embed_texts
    from eval.replay import SplitTime, default_routers, replay
    from orchestrator.config import load_config

    console = Console(width=130, markup=False)
    config = load_config(home=home)
    load = os.getloadavg()
    pools = ", ".join(f"{p['internal_api']} {p['num_threads']}" for p in threadpool_info())
    console.print(f"symoe {commit()}; python {platform.python_version()}, numpy {np.__version__}, torch "
                  f"{torch.__version__} ({torch.get_num_threads()} threads), sentence-transformers "
                  f"{version('sentence-transformers')}, faiss-cpu {version('faiss-cpu')}, scikit-learn "
                  f"{version('scikit-learn')}; thread pools: {pools}"
                  f"{f' (BLAS capped at {args.blas_threads} for the replay)' if args.blas_threads else ''}; "
                  f"{os.cpu_count()} CPU cores, {platform.machine()}; "
                  f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", highlight=False)

    started = time.perf_counter()
    matrix = synthetic_matrix(args.questions, args.experts, args.tasks, args.test_share, args.seed)
    build = time.perf_counter() - started
    routers = [r.strip() for r in (args.routers or default_routers(matrix)).split(",") if r.strip()]
    scored = "validation -> test" if {"validation", "test"} <= set(matrix.splits) else f"{args.folds} folds"
    per_task = ", ".join(f"{t} {sum(c.values())}" for t, c in matrix.counts().items())
    best = matrix.best_single() or matrix.experts[0]
    console.print(f"matrix: {len(matrix)} questions ({per_task}), {len(matrix.experts)} experts, splits "
                  f"{'/'.join(matrix.splits)} ({scored}); best single {best} {matrix.accuracy()[best]:.3f}, "
                  f"oracle {matrix.oracle_accuracy():.3f}; "
                  f"embedding {config.embedding.name}; seed {args.seed}; home {home}", highlight=False)
    console.print(f"routers: {','.join(routers)}", highlight=False)

    texts = list(dict.fromkeys(r.question for r in matrix.rows))
    steps: list[tuple[str, float, str]] = [("build the matrix (in memory)", build, "")]

    started = time.perf_counter()
    encode(["warm-up"], config.embedding)
    steps.append(("load the embedder", time.perf_counter() - started, ""))

    started = time.perf_counter()
    cold = embed_texts(texts, config.embedding, config.home)
    seconds = time.perf_counter() - started
    steps.append((f"embed {len(texts)} questions, cache cold", seconds, f"{len(texts) / seconds:,.0f} questions/s"))

    started = time.perf_counter()
    warm = embed_texts(texts, config.embedding, config.home)
    seconds = time.perf_counter() - started
    assert np.array_equal(cold, warm), "the warm cache gave other vectors"
    steps.append((f"embed {len(texts)} questions, cache warm", seconds, f"{len(texts) / seconds:,.0f} questions/s"))

    fold_times: list[float] = []
    mark = [time.perf_counter()]

    def on_split(number: int, total: int) -> None:
        now = time.perf_counter()
        fold_times.append(now - mark[0])
        mark[0] = now

    breakdown = Breakdown()
    blas = threadpool_limits(args.blas_threads, user_api="blas") if args.blas_threads else nullcontext()
    with blas, breakdown.wrapped(breakdown_targets() if args.breakdown else []):
        cpu = cpu_seconds()
        wall_start = time.time()
        started = mark[0] = time.perf_counter()
        timeline: list[SplitTime] = []
        samples, stats = replay(config, matrix, routers, folds=args.folds, seed=args.seed, on_split=on_split,
                                workers=1 if args.breakdown else args.workers, timeline=timeline)
        seconds = time.perf_counter() - started
        cpu = cpu_seconds() - cpu
    methods = sorted({s.method for s in samples if s.method != "oracle"})
    cells = stats.questions * len(matrix.experts) * len(methods)
    steps.append((f"replay {len(routers)} routers ({len(methods)} methods), {scored}", seconds,
                  f"{cells / seconds:,.0f} question x expert x method/s"))

    table = Table(title=f"replay speed: {len(matrix)} questions x {len(matrix.experts)} experts "
                        f"(limit for the replay: 60 s on 2 cores)")
    for col in ("step", "seconds", "rate"):
        table.add_column(col, justify="left" if col == "step" else "right")
    for step, secs, rate in steps:
        table.add_row(step, f"{secs:.2f}", rate)
    console.print(table)
    console.print(f"replay: {stats.questions} scored questions, {stats.generations_needed} recorded generations "
                  f"needed, {stats.generated} replayed, {stats.failed} failed; per split "
                  f"{', '.join(f'{t:.1f}' for t in fold_times)} s; {cpu:.1f} CPU s (every process); "
                  f"load average now {os.getloadavg()[0]:.2f}; "
                  f"{'UNDER' if seconds < 60 else 'OVER'} the 60 s limit", highlight=False)
    for process in sorted({t.process for t in timeline}):
        mine = [t for t in timeline if t.process == process]
        end = max(t.started + t.seconds for t in mine) - wall_start
        console.print(f"  process {process}{' (this one)' if process == 0 else ''}: "
                      + ", ".join(f"split {t.split} from {t.started - wall_start:.1f} s: {t.seconds:.1f} s "
                                  f"({t.cpu:.1f} CPU s)" for t in mine)
                      + f"; done at {end:.1f} s", highlight=False)

    if args.breakdown:
        parts = Table(title=f"where the replay's {seconds:.1f} s went (inclusive: an indented row is part of the "
                            "row above it)")
        for col in ("what", "calls", "seconds", "share of the replay"):
            parts.add_column(col, justify="left" if col == "what" else "right")
        for label in breakdown.order:
            if breakdown.calls[label]:
                parts.add_row(label, f"{breakdown.calls[label]:,}", f"{breakdown.seconds[label]:.2f}",
                              f"{breakdown.seconds[label] / seconds:.1%}")
        console.print(parts)

    by: dict[str, list[bool]] = defaultdict(list)
    for s in samples:
        by[s.method].append(s.correct)
    accuracy = Table(title="replayed accuracy (sanity: routers should beat the single experts)")
    for col in ("method", "questions", "accuracy"):
        accuracy.add_column(col, justify="left" if col == "method" else "right")
    for method in [*methods, "oracle"]:
        accuracy.add_row(method, str(len(by[method])), f"{np.mean(by[method]):.3f}")
    console.print(accuracy)

    if args.per_router:
        alone = Table(title="each router spec replayed alone (profile fit and labelling included each time)")
        for col in ("router", "methods", "seconds", "rate"):
            alone.add_column(col, justify="left" if col == "router" else "right")
        for router in routers:
            started = time.perf_counter()
            part, part_stats = replay(config, matrix, [router], folds=args.folds, seed=args.seed)
            secs = time.perf_counter() - started
            count = len({s.method for s in part if s.method != "oracle"})
            per_second = part_stats.questions * len(matrix.experts) * count / secs
            alone.add_row(router, str(count), f"{secs:.2f}", f"{per_second:,.0f}/s")
        console.print(alone)


if __name__ == "__main__":
    main()
