"""Replay: every router judged on an outcome matrix through the live pipeline, in seconds.

    matrix -> (fit, scored) splits: validation -> test, or k seeded folds (cross-fitting)
    fit split    -> a profile (``eval.matrix_profile``: skills labelled without an LLM)
    scored split -> Query records -> ``Symoe.ask_many(routers)`` under that profile, with a
                    ``ReplayExecutor`` in place of the models: plan, recruitment, combine and
                    extract are the live code; each expert's "generation" is its recorded answer
    each AskResult -> scored by the recorded outcomes of the experts whose answer it gave

What replay cannot do, it says: an aggregator's synthesis needs a live model (the job fails,
so the plan keeps its experts' weighted vote, and the report counts it under ``failed``);
skills come from the profile's labelled neighbours, never from the LLM annotator; retrieval
is off (the matrix recorded answers without it). A question counts as right when the outcome
of the expert whose answer stood has ``correct`` >= 0.5; without recorded answers a vote
scores its experts' mean. The ``oracle`` row (some expert right) is the upper bound.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from agents.backends import Generation, TokenLogprob, Usage
from agents.errors import SymoeError
from agents.pool import ExpertSpec
from agents.progress import StageReport, across
from eval.datasets import Question
from eval.learned_routers import embed_texts, fold_of
from eval.matrix import Matrix, MatrixRow
from eval.matrix_profile import Labelling, SkillLabeller, profile_from_matrix
from eval.runner import RunStats, SampleResult
from orchestrator.answers import is_correct
from orchestrator.config import SymoeConfig
from orchestrator.executor import BatchDone, ExecutorConfig
from orchestrator.expert_methods import UNRECORDED
from orchestrator.methods import expand_methods
from orchestrator.profiles import Profile
from orchestrator.records import AskResult, Job, Query
from orchestrator.session import Symoe

#: routers a replay runs when none are named: every single expert, the baselines, the routers
DEFAULT_REPLAY_ROUTERS = ("single,best_single,task_best,random_k[recruit.k=1],majority,clusters,clusters:k3,"
                          "symoe:k1,cascade,budget,learned:knn,learned:logreg,learned:mlp,learned:mf")
NO_RECORD = "replay: nothing recorded for this request (a synthesis or an annotation needs a live model)"


def margin_logprobs(answer: str, margin: float | None) -> list[TokenLogprob] | None:
    """A recorded letter margin as the log-probs the live rule (``answer_margin``) reads back."""
    if margin is None or len(answer) != 1:
        return None
    other = "B" if answer == "A" else "A"
    return [TokenLogprob(token=answer, logprob=0.0, top={answer: 0.0, other: -float(margin)})]


class ReplayExecutor:
    """An executor of recorded outcomes: an expert's job on a query gets the answer the matrix
    recorded for it (with its tokens, seconds and letter margin); any other job fails."""

    parallel = False

    def __init__(self, matrix: Matrix) -> None:
        self.rows = {r.id: r for r in matrix.rows}

    def resident(self) -> list[str]:
        return []

    def close(self) -> None:
        pass

    def generation(self, expert: str, job: Job) -> Generation:
        row = self.rows.get(job.query_id)
        if row is None or expert not in row.outcomes:
            return Generation.failure(expert, NO_RECORD)
        o = row.outcomes[expert]
        text = o.answer or UNRECORDED
        return Generation(text=text, model=expert, finish_reason="stop",
                          usage=Usage(prompt_tokens=o.prompt_tokens or 0, completion_tokens=o.completion_tokens or 0,
                                      seconds=o.seconds or 0.0),
                          token_logprobs=margin_logprobs(text, o.margin))

    def run(self, model: str, jobs: list[Job], done: BatchDone) -> None:
        for job in jobs:
            job.generation = self.generation(model, job)
        done(jobs)


def recorded_expert(name: str) -> ExpertSpec:
    """An expert known only from a matrix (``backend: recorded``): replayable, not askable."""
    return ExpertSpec(name=name, backend="recorded", method="recorded", description="recorded in the matrix")


def replay_config(config: SymoeConfig, matrix: Matrix, default: str) -> SymoeConfig:
    """``config`` over the matrix's experts, each a recorded one; skills from the profile's
    labelled neighbours, no retrieval, everything in this process."""
    return config.model_copy(update={
        "experts": {e: recorded_expert(e) for e in matrix.experts}, "default_expert": default,
        "executor": ExecutorConfig(),
        "skills": config.skills.model_copy(update={"source": "neighbours", "annotator": None}),
        "retrieval": config.retrieval.model_copy(update={"mode": "never"})})


def row_query(row: MatrixRow) -> Query:
    """The query of a matrix row, in the format a benchmark declares by its gold answer (the
    rule ``symoe eval`` uses; without a gold answer the pipeline detects it)."""
    fmt = "choice" if row.choices else None
    if fmt is None and row.answer is not None:
        fmt = Question(id=row.id, question=row.question, answer=str(row.answer)).answer_format
    return Query(question=row.question, choices=list(row.choices or []), id=row.id, task=row.task, format=fmt)


def replay_score(result: AskResult, row: MatrixRow) -> float:
    """The recorded ``correct`` of the answer that stood: the best among the experts whose
    recorded answer it is; without recorded answers, the mean of the experts that answered;
    a synthesised answer none of them gave, against the gold answer where the row has one."""
    answered = [a for a in result.expert_answers if a.ok and a.expert in row.outcomes]
    if not answered:
        return 0.0
    if all(a.answer is None for a in answered):
        return float(np.mean([row.outcomes[a.expert].correct for a in answered]))
    final = result.answer if result.extracted else None
    if final is None:
        return 0.0
    same = [row.outcomes[a.expert].correct for a in answered
            if a.answer is not None and is_correct(a.answer, final, result.format)]
    if same:
        return max(same)
    return float(row.answer is not None and is_correct(final, str(row.answer), result.format))


def sample_of(result: AskResult, row: MatrixRow) -> SampleResult:
    usd = [c for a in result.expert_answers if a.expert in row.outcomes
           if (c := row.outcomes[a.expert].cost) is not None]
    score = replay_score(result, row)
    return SampleResult(
        method=result.method, routed=result.routed, question_id=row.id, task=row.task, subject=row.task,
        answer=result.answer if result.extracted else None,
        gold=str(row.answer) if row.answer is not None else "", correct=score >= 0.5,
        experts=result.experts, aggregator=result.aggregator, aggregated=result.aggregated, fallback=result.fallback,
        escalated=result.escalated, failed=result.failed, succeeded=result.succeeded, usage=result.usage,
        skills=result.skills, cost_usd=sum(usd) if usd else None)


def oracle_samples(rows: Sequence[MatrixRow]) -> list[SampleResult]:
    """The upper bound: right when any expert was, at the cost of the cheapest right one."""
    out = []
    for r in rows:
        right = [e for e, o in r.outcomes.items() if o.correct >= 0.5]
        chosen = min(right or list(r.outcomes), key=lambda e: r.outcomes[e].tokens or 0)
        o = r.outcomes[chosen]
        out.append(SampleResult(method="oracle", question_id=r.id, task=r.task, subject=r.task, answer=o.answer,
                                gold=str(r.answer) if r.answer is not None else "", correct=bool(right),
                                experts=[chosen], succeeded=1, cost_usd=o.cost,
                                usage=Usage(prompt_tokens=o.prompt_tokens or 0,
                                            completion_tokens=o.completion_tokens or 0, seconds=o.seconds or 0.0)))
    return out


def splits(matrix: Matrix, folds: int, seed: int) -> list[tuple[Matrix, Matrix]]:
    """(fit, scored) pairs: validation then test when the matrix has both, else k seeded folds."""
    if "test" in matrix.splits and "validation" in matrix.splits:
        return [(matrix.select(split="validation"), matrix.select(split="test"))]
    fold = fold_of(matrix.ids, folds, seed)
    pairs = []
    for k in range(folds):
        scored = matrix.take(np.flatnonzero(fold == k))
        if len(scored):
            pairs.append((matrix.take(np.flatnonzero(fold != k)), scored))
    return pairs


def cached_embed(matrix: Matrix, config: SymoeConfig) -> Callable[[list[str]], np.ndarray]:
    """The pipeline's embedder over the matrix's questions, embedded once (cached by text
    hash in ``<home>/embeddings``); any other text is embedded as it comes."""
    texts = list(dict.fromkeys(r.question for r in matrix.rows))
    vectors = embed_texts(texts, config.embedding, config.home)
    row = {t: i for i, t in enumerate(texts)}

    def embed(batch: list[str]) -> np.ndarray:
        if all(t in row for t in batch):
            return vectors[[row[t] for t in batch]]
        return embed_texts(batch, config.embedding, config.home)
    return embed


def replay(config: SymoeConfig, matrix: Matrix, routers: list[str], *, folds: int = 5, seed: int = 0,
           labelling: Labelling = "vocabulary", profile: Profile | None = None, progress: StageReport | None = None,
           labeller: SkillLabeller | None = None, on_split: Callable[[int, int], None] | None = None,
           sweeps: list[tuple[str, list[str]]] | None = None) -> tuple[list[SampleResult], RunStats]:
    """Every router on the scored questions of each split, fitted on the rest; with the oracle.
    A given ``profile`` routes every question of the matrix instead (nothing is fitted): replay
    then decides as a live run under that profile does. A given ``labeller`` (over this
    matrix's questions) is used instead of building one for ``labelling``. ``sweeps`` run each
    router that reads a key once per value (``--sweep``)."""
    if not len(matrix):
        raise SymoeError(f"{matrix.source}: the matrix holds no questions")
    started = time.perf_counter()
    embed = labeller.embed if labeller is not None else cached_embed(matrix, config)
    pairs = [(matrix, matrix)] if profile is not None else splits(matrix, folds, seed)
    if labeller is None and profile is None:
        labeller = SkillLabeller(config, embed, labelling)
    report = across(progress, len(pairs)) if progress is not None else None
    samples: list[SampleResult] = []
    needed = replayed = failed = 0
    for number, (fit, scored) in enumerate(pairs, 1):
        base = replay_config(config, matrix, fit.best_single() or matrix.experts[0])
        if profile is not None and config.default_expert in matrix.experts:
            base = base.model_copy(update={"default_expert": config.default_expert})
        used = profile or profile_from_matrix(fit, base, labeller(fit) if labeller else {}, source=matrix.source)
        executor = ReplayExecutor(scored)
        names = [str(spec) for spec in expand_methods(",".join(routers), base, None, sweeps)]
        with Symoe(base, profile=used, use_cache=False, memory_budget=0, progress=report,
                   wrap_executor=lambda _, ex=executor: ex) as symoe:
            symoe.pipeline.embed = embed
            rows = {r.id: r for r in scored.rows}
            results = symoe.ask_many([row_query(r) for r in scored.rows], routers=names, seed=seed)
            samples += [sample_of(r, rows[r.query_id]) for r in results]
            stats = symoe.pipeline.stats
            needed, replayed, failed = needed + stats.needed, replayed + stats.generated, failed + stats.failed
        if on_split is not None:
            on_split(number, len(pairs))
    samples += oracle_samples([r for _, scored in pairs for r in scored.rows])
    stats_ = RunStats(questions=sum(len(s) for _, s in pairs), generations_needed=needed, generated=replayed,
                      from_cache=0, failed=failed, loads=[], wall_seconds=round(time.perf_counter() - started, 2))
    return samples, stats_


def matrix_default_router(samples: list[SampleResult], candidates: Sequence[str]) -> str | None:
    """The router among ``candidates`` (the routers a profile may default to) of best replayed
    accuracy; ties go to the cheaper in tokens per question."""
    by: dict[str, list[SampleResult]] = {}
    for s in samples:
        if s.method in candidates:
            by.setdefault(s.method, []).append(s)
    if not by:
        return None

    def key(m: str) -> tuple[float, float]:
        rows = by[m]
        return (sum(r.correct for r in rows) / len(rows),
                -sum(r.usage.prompt_tokens + r.usage.completion_tokens for r in rows) / len(rows))
    return max(sorted(by), key=key)


#: routers a profile may default to (``Profile.router``): the deciding ones, not single experts
PROFILE_ROUTERS = ("best_single,task_best,clusters,clusters:k3,majority,symoe:k1,cascade,budget,"
                   "learned:knn,learned:logreg,learned:mlp,learned:mf")


def pool_with_recorded(config: SymoeConfig, matrix: Matrix) -> SymoeConfig:
    """``config`` with the matrix's experts it lacks added as recorded ones (a profile from the
    matrix is made for this pool: the config's own experts keep their identity)."""
    extra = {e: recorded_expert(e) for e in matrix.experts if e not in config.experts}
    return config.model_copy(update={"experts": {**config.experts, **extra}}) if extra else config


def profile_by_replay(config: SymoeConfig, matrix: Matrix, *, folds: int = 5, seed: int = 0,
                      labelling: Labelling = "vocabulary", candidates: str = PROFILE_ROUTERS,
                      progress: StageReport | None = None) -> tuple[Profile, list[SampleResult], RunStats]:
    """The profile of the matrix's validation split, its default router the winner of
    cross-fitted replay of ``candidates`` on that split (ties: the cheaper in tokens)."""
    fit = matrix.select(split="validation")
    if not len(fit):
        raise SymoeError(f"{matrix.source} has no validation questions to build a profile from")
    routers = [r.strip() for r in (candidates if has_answers(matrix) else without_votes(candidates)).split(",")
               if r.strip()]
    labeller = SkillLabeller(config, cached_embed(fit, config), labelling)
    samples, stats = replay(config, fit, routers, folds=folds, seed=seed, labeller=labeller, progress=progress)
    names = [s.method for s in samples if s.method != "oracle"]
    profile = profile_from_matrix(fit, pool_with_recorded(config, matrix), labeller(fit), source=matrix.source)
    winner = matrix_default_router(samples, names)
    summary = {m: round(100 * sum(s.correct for s in samples if s.method == m)
                        / max(1, sum(s.method == m for s in samples)), 2) for m in dict.fromkeys(names)}
    profile.router = winner
    profile.data.update({"labelling": labelling, "replay": {"folds": folds, "seed": seed, "accuracy": summary,
                                                            "winner": winner}})
    return profile, samples, stats


def has_answers(matrix: Matrix) -> bool:
    """Whether the matrix records the experts' answers (votes need them)."""
    return any(o.answer is not None for r in matrix.rows[:50] for o in r.outcomes.values())


def without_votes(routers: str) -> str:
    return ",".join(r for r in routers.split(",") if r not in ("majority", "clusters:k3"))


def default_routers(matrix: Matrix) -> str:
    """The default router list, less the votes a matrix without recorded answers cannot replay."""
    return DEFAULT_REPLAY_ROUTERS if has_answers(matrix) else without_votes(DEFAULT_REPLAY_ROUTERS)

