"""Expert profiles: per expert and canonical skill, how many validation answers were right/wrong.

A skill's score is right - wrong (+1 per right answer, -1 per wrong one, for every skill of
the question, as in Symbolic-MoE); an expert's global competence is the sum of its scores.
Aggregators are profiled the same way on a synthetic aggregation test. The JSON file is
versioned and records the pool, the data and the counts behind every number.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field, PrivateAttr, ValidationError

from agents.errors import SymoeError
from orchestrator.config import SymoeConfig
from orchestrator.provenance import pool_digest
from orchestrator.records import AnswerFormat
from skills.neighbours import LabelledQuestion

PROFILE_FORMAT = "symoe-profile"
PROFILE_VERSION = 1
BUILD_HINT = "run `symoe profile build` (see README: Profiles)"


class ProfileError(SymoeError):
    """No usable profile: missing, corrupt, or made for another pool."""


class SkillCount(BaseModel):
    right: int = 0
    wrong: int = 0

    @property
    def score(self) -> int:
        return self.right - self.wrong

    @property
    def n(self) -> int:
        return self.right + self.wrong


class ExpertProfile(BaseModel):
    skills: dict[str, SkillCount] = Field(default_factory=dict)
    tasks: dict[str, SkillCount] = Field(default_factory=dict)
    # what its answers cost on the profile's questions (generated tokens, and seconds when run
    # alone, the program's run included)
    questions: int = 0
    tokens: int = 0
    seconds: float = 0.0
    usd: float = 0.0  # where recorded (a matrix's costs)
    #: ``global_competence``, summed once until ``add`` changes the counts (routers read it per query)
    _competence: int | None = PrivateAttr(default=None)

    @property
    def tokens_per_question(self) -> float:
        return self.tokens / self.questions if self.questions else 0.0

    @property
    def usd_per_question(self) -> float:
        return self.usd / self.questions if self.questions else 0.0

    @property
    def seconds_per_question(self) -> float:
        return self.seconds / self.questions if self.questions else 0.0

    def score(self, skill: str) -> int:
        count = self.skills.get(skill)
        return count.score if count else 0

    def accuracy_on(self, skills: list[str]) -> float:
        """Share of right answers over these skills' questions (over every task when none is profiled)."""
        counts = [self.skills[s] for s in skills if s in self.skills] or list(self.tasks.values())
        n = sum(c.n for c in counts)
        return sum(c.right for c in counts) / n if n else 0.0

    @property
    def global_competence(self) -> int:
        if self._competence is None:
            self._competence = sum(c.score for c in self.skills.values())
        return self._competence

    def add(self, skills: list[str], task: str, correct: bool, tokens: int = 0, seconds: float = 0.0,
            usd: float = 0.0) -> None:
        self._competence = None
        self.questions += 1
        self.tokens += tokens
        self.usd += usd
        self.seconds = round(self.seconds + seconds, 3)
        for skill in skills:
            count = self.skills.setdefault(skill, SkillCount())
            if correct:
                count.right += 1
            else:
                count.wrong += 1
        count = self.tasks.setdefault(task, SkillCount())
        if correct:
            count.right += 1
        else:
            count.wrong += 1


class Outcome(BaseModel):
    """One graded answer: the raw material of a profile."""

    expert: str
    question_id: str
    task: str
    skills: list[str]
    correct: bool
    tokens: int = 0
    prompt_tokens: int = 0
    answer: str | None = None
    seconds: float = 0.0
    margin: float | None = None
    usd: float = 0.0


class ProfiledExample(LabelledQuestion):
    """A validation question with the annotator's skills and how each expert did on it
    (cluster routing scores experts per group of similar questions from these)."""

    correct: dict[str, bool] = Field(default_factory=dict, description="expert -> its own answer was right")
    tokens: dict[str, int] = Field(default_factory=dict, description="expert -> tokens it generated")
    prompt_tokens: dict[str, int] = Field(default_factory=dict, description="expert -> tokens of its prompt")
    answers: dict[str, str | None] = Field(default_factory=dict,
                                           description="expert -> the answer it stated (None: none or it failed)")
    margins: dict[str, float] = Field(default_factory=dict,
                                      description="expert -> log-prob margin of its stated letter over the next option")
    format: AnswerFormat | None = Field(default=None, description="the question's answer format (None: unrecorded)")

    def agreed(self, experts: list[str] | tuple[str, ...]) -> str | None:
        """The one answer these experts all stated here (None: one did not answer, or they differ)."""
        stated = {self.answers.get(e) for e in experts}
        return next(iter(stated)) if len(stated) == 1 and None not in stated else None

    def cost(self, expert: str) -> int:
        """Prompt and generated tokens of this expert's answer (what ``symoe eval`` counts)."""
        return self.prompt_tokens.get(expert, 0) + self.tokens.get(expert, 0)


class AnswerTable:
    """The graded questions' stated answers as codes, one column an expert (-1: none stated, or
    not graded), and whether each was right: what ``Profile.agreement`` counts, in array
    operations (a cascade weighs every pair of a pool's experts on thousands of questions)."""

    def __init__(self, examples: list[ProfiledExample]) -> None:
        self.examples = examples
        names = sorted({e for x in examples for e in x.correct})
        self.column = {e: j for j, e in enumerate(names)}
        self.codes = np.full((len(examples), len(names)), -1, dtype=np.int64)
        self.right = np.zeros((len(examples), len(names)), dtype=np.int64)
        texts: dict[str, int] = {}
        for i, x in enumerate(examples):
            for e, ok in x.correct.items():
                j = self.column[e]
                self.right[i, j] = int(ok)
                answer = x.answers.get(e)
                if answer is not None:
                    self.codes[i, j] = texts.setdefault(answer, len(texts))

    def agreement(self, experts: Sequence[str]) -> tuple[int, int]:
        """How many questions these experts all stated one answer on, and how many of those it was right."""
        if not experts or not self.examples:
            return 0, 0
        if any(e not in self.column for e in experts):
            return 0, 0
        codes = self.codes[:, [self.column[e] for e in experts]]
        agreed = (codes[:, 0] >= 0) & (codes == codes[:, :1]).all(axis=1)
        return int(agreed.sum()), int(self.right[agreed, self.column[experts[0]]].sum())


def profiled_examples(questions: list[LabelledQuestion], ids: list[str], outcomes: list[Outcome],
                      formats: list[AnswerFormat] | None = None) -> list[ProfiledExample]:
    """The examples of a profile: each question (with its answer format, where given) and its
    experts' graded outcomes."""
    graded: dict[str, list[Outcome]] = {}
    for o in outcomes:
        graded.setdefault(o.question_id, []).append(o)
    def by_expert(field: str, qid: str) -> dict[str, Any]:
        return {o.expert: getattr(o, field) for o in graded.get(qid, [])}

    return [ProfiledExample(**q.model_dump(), correct=by_expert("correct", qid), tokens=by_expert("tokens", qid),
                            prompt_tokens=by_expert("prompt_tokens", qid), answers=by_expert("answer", qid),
                            margins={e: m for e, m in by_expert("margin", qid).items() if m is not None},
                            format=formats[i] if formats is not None else None)
            for i, (q, qid) in enumerate(zip(questions, ids, strict=True))]


def recorded_margins(examples: list[ProfiledExample], expert: str) -> list[tuple[float, bool]]:
    """On the examples where this expert's answer carried a margin: the margin and whether the
    answer was right."""
    return [(x.margins[expert], x.correct.get(expert, False)) for x in examples if expert in x.margins]


def margin_threshold(graded: list[tuple[float, bool]], bar: float, min_accepted: int) -> tuple[float, int, int] | None:
    """The lowest margin whose accepted answers (margin >= it) were right at least ``bar`` of
    the time over at least ``min_accepted`` of them: (threshold, accepted, right), or None."""
    ranked = sorted(graded, key=lambda g: -g[0])
    found, right = None, 0
    for i, (margin, correct) in enumerate(ranked, 1):
        right += correct
        tied_below = i < len(ranked) and ranked[i][0] == margin  # a threshold accepts all its ties
        if i >= min_accepted and not tied_below and right / i >= bar:
            found = (margin, i, right)
    return found


class QualityPoint(BaseModel):
    """The ``budget`` method at one quality on held-out validation questions."""

    quality: float
    tokens_per_question: float
    accuracy: float


class BudgetCalibration(BaseModel):
    """The quality ``symoe profile calibrate`` fitted to a token target, and the curve it read."""

    quality: float
    target_tokens_per_question: float
    predicted_tokens_per_question: float
    predicted_accuracy: float
    folds: int
    curve: list[QualityPoint] = Field(default_factory=list)
    created: str = ""


class Profile(BaseModel):
    format: str = PROFILE_FORMAT
    version: int = PROFILE_VERSION
    pool: dict[str, str]
    annotator: str
    data: dict[str, Any] = Field(default_factory=dict)
    experts: dict[str, ExpertProfile]
    aggregators: dict[str, ExpertProfile] = Field(default_factory=dict)
    provenance: dict[str, Any] = Field(default_factory=dict)
    #: the validation questions with the annotator's skills and each expert's outcome on them:
    #: ``skills.source: neighbours`` votes with them, the ``clusters`` method scores experts on them
    examples: list[ProfiledExample] = Field(default_factory=list)
    #: the ``budget`` method's quality when the config sets none (``symoe profile calibrate``)
    budget: BudgetCalibration | None = None
    _agreement: dict[tuple[int, tuple[str, ...]], tuple[int, int]] = PrivateAttr(default_factory=dict)
    _margins: dict[tuple[int, str], list[tuple[float, bool]]] = PrivateAttr(default_factory=dict)
    _thresholds: dict[tuple[int, str, float, int], tuple[float, int, int] | None] = PrivateAttr(default_factory=dict)
    _by_format: dict[tuple[int, str], dict[str, tuple[int, int, int]]] = PrivateAttr(default_factory=dict)
    _stated: AnswerTable | None = PrivateAttr(default=None)
    #: the router a call that names none gets under this profile: the winner of cross-fitted
    #: replay on the matrix it was built from (``symoe profile build --from-matrix``); None: ``symoe``
    router: str | None = None

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Profile:
        """A copy; what was counted on this profile's examples is counted again on the copy's."""
        copy = super().model_copy(update=update, deep=deep)
        copy._agreement, copy._margins, copy._thresholds, copy._stated = {}, {}, {}, None
        return copy

    def restricted(self, names: list[str]) -> Profile:
        """The profile of a sub-pool: only these experts can be recruited or aggregate."""
        return self.model_copy(update={
            "experts": {n: p for n, p in self.experts.items() if n in names},
            "examples": [e.model_copy(update={field: {n: v for n, v in getattr(e, field).items() if n in names}
                                              for field in ("correct", "tokens", "prompt_tokens", "answers")})
                         for e in self.examples],
            "aggregators": {n: p for n, p in self.aggregators.items() if n in names},
        })

    def skills(self) -> list[str]:
        return sorted({s for p in self.experts.values() for s in p.skills})

    def agreement(self, experts: list[str] | tuple[str, ...]) -> tuple[int, int]:
        """On the graded questions: how often these experts stated one answer, and how often it
        was right (counted once per set of experts and list of examples: a cascade asks per query)."""
        key = (id(self.examples), tuple(experts))
        if key not in self._agreement:
            if self._stated is None or self._stated.examples is not self.examples:
                self._stated = AnswerTable(self.examples)
            self._agreement[key] = self._stated.agreement(experts)
        return self._agreement[key]

    def format_record(self, fmt: str) -> dict[str, tuple[int, int, int]]:
        """On the graded questions of this answer format (those whose format the profile
        records): each expert's (answered, right, tokens) count, tokens of prompt and answer
        together (counted once per format and list of examples; empty when none records it)."""
        key = (id(self.examples), fmt)
        if key not in self._by_format:
            record: dict[str, tuple[int, int, int]] = {}
            for x in self.examples:
                if x.format == fmt:
                    for e, right in x.correct.items():
                        n, r, t = record.get(e, (0, 0, 0))
                        record[e] = (n + 1, r + int(right), t + x.cost(e))
            self._by_format[key] = record
        return self._by_format[key]

    def margins(self, expert: str) -> list[tuple[float, bool]]:
        """On the graded questions where this expert's answer carried a margin: the margin and
        whether the answer was right (collected once per list of examples)."""
        key = (id(self.examples), expert)
        if key not in self._margins:
            self._margins[key] = recorded_margins(self.examples, expert)
        return list(self._margins[key])

    def margin_threshold(self, expert: str, bar: float, min_accepted: int) -> tuple[float, int, int] | None:
        """``margin_threshold`` of this expert's recorded margins (computed once per setting)."""
        key = (id(self.examples), expert, bar, min_accepted)
        if key not in self._thresholds:
            self._thresholds[key] = margin_threshold(self.margins(expert), bar, min_accepted)
        return self._thresholds[key]

    def best_aggregator(self, skills: list[str] | None = None, min_items: int = 8) -> str:
        """The best aggregator for these skills.

        Per-skill aggregator scores decide only where every candidate has at least
        ``min_items`` graded syntheses on them; otherwise overall aggregator-test accuracy
        decides, and candidates within one standard error of the best are told apart by
        their competence as experts (thin evidence does not outvote global competence).
        """
        table = self.aggregators or self.experts
        names = sorted(table)
        if skills and all(sum(table[n].skills[s].n for s in skills if s in table[n].skills) >= min_items
                          for n in names):
            return max(names, key=lambda n: (sum(table[n].score(s) for s in skills),
                                             self.experts[n].global_competence if n in self.experts else 0))

        def accuracy(name: str) -> tuple[float, int]:
            counts = table[name].tasks.values()
            n = sum(c.n for c in counts)
            return (sum(c.right for c in counts) / n if n else 0.0), n

        best_acc, best_n = max(accuracy(n) for n in names)
        margin = (best_acc * (1 - best_acc) / best_n) ** 0.5 if best_n else 0.0
        close = [n for n in names if accuracy(n)[0] >= best_acc - margin]
        return max(close, key=lambda n: (self.experts[n].global_competence if n in self.experts else 0,
                                         accuracy(n)[0]))


def cost_per_question(experts: dict[str, ExpertProfile], names: list[str]) -> dict[str, float]:
    """What each named expert's answer costs a question on validation: US dollars where every one
    of them records some, else generated tokens."""
    usd = all(experts[e].usd for e in names)
    return {e: experts[e].usd_per_question if usd else experts[e].tokens_per_question for e in names}


def profile_from_outcomes(outcomes: list[Outcome], experts: list[str]) -> dict[str, ExpertProfile]:
    profiles = {name: ExpertProfile() for name in experts}
    for o in outcomes:
        profiles.setdefault(o.expert, ExpertProfile()).add(o.skills, o.task, o.correct, o.tokens, o.seconds, o.usd)
    return profiles


def default_profile_path() -> Path:
    return Path(str(resources.files("orchestrator").joinpath("default_profile.json")))


def save_profile(profile: Profile, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(profile.model_dump_json(indent=1))
    tmp.replace(path)


def read_profile(path: Path) -> Profile:
    """Parse a profile file; a clear one-line error when it is missing or corrupt."""
    if not path.exists():
        raise ProfileError(f"no profile at {path}; {BUILD_HINT}")
    try:
        data = json.loads(path.read_text())
        if data.get("format") != PROFILE_FORMAT:
            raise ValueError("not a symoe profile")
        if data.get("version") != PROFILE_VERSION:
            raise ValueError(f"profile version {data.get('version')}, expected {PROFILE_VERSION}")
        profile = Profile.model_validate(data)
    except (ValueError, ValidationError, AttributeError) as exc:
        reason = str(exc).splitlines()[0][:120]
        raise ProfileError(f"profile file {path} is corrupt ({reason}); {BUILD_HINT}") from None
    if not profile.experts:
        raise ProfileError(f"profile file {path} profiles no experts (its `experts` is empty); {BUILD_HINT}")
    return profile


def load_profile(config: SymoeConfig, path: Path | None = None) -> tuple[Profile, Path]:
    """The profile for this config's pool: ``path``, else ``recruit.profile``, else the default."""
    chosen = path or config.recruit.profile
    if chosen is None:
        user = config.home / "profiles" / "profile.json"
        chosen = user if user.exists() else default_profile_path()
    profile = read_profile(Path(chosen))
    pool = {n: d for n, d in pool_digest(config).items() if n in config.routing_pool}  # who routing recruits
    missing = [n for n in pool if n not in profile.pool]
    changed = [n for n in pool if n in profile.pool and profile.pool[n] != pool[n]]
    if missing or changed:
        what = f"experts {', '.join(missing)} are not profiled" if missing else \
            f"experts {', '.join(changed)} have other model files"
        raise ProfileError(f"profile {chosen} was built for another pool ({what}); {BUILD_HINT}")
    restricted = profile.restricted(config.routing_pool)
    if not restricted.experts:
        raise ProfileError(f"profile {chosen} profiles none of the routed experts ({', '.join(config.routing_pool)}); "
                           f"{BUILD_HINT}")
    return restricted, Path(chosen)
