"""Outcome matrices: which expert answered which question, rightly or not, at what cost.

An outcome matrix is recorded once (by ``symoe matrix import`` from lm-evaluation-harness
logs, a RouterBench-style CSV or symoe's own eval samples) and read by everything that fits
or judges a router by replay, in seconds, instead of generating again. The one format is
JSONL, gzipped when the file name ends in ``.gz``, one question a line::

    {"id": str, "task": str, "split": "validation" | "test", "question": str,
     "choices"?: [str], "answer"?: gold, "skills"?: [str],
     "outcomes": {EXPERT: {"correct": 0..1, "answer"?: str, "prompt_tokens"?: int,
                           "completion_tokens"?: int, "seconds"?: float, "cost"?: USD,
                           "margin"?: float}}}

Only ``id``, ``task``, ``split``, ``question`` and each outcome's ``correct`` are required;
every line holds the same experts. ``correct`` is a score from 0 to 1 (1 right, 0 wrong, a
fraction for partial credit). Keys outside the schema are refused (a misspelt ``corect``
is an error, not a silently missing field).

This module owns:

* ``RecordedOutcome`` / ``MatrixRow``: one expert's outcome, one line.
* ``read_matrix(path) -> Matrix``: the file, checked; bad input is one ``SymoeError`` line
  ``FILE:LINE: field 'NAME': what is wrong`` (a missing field, an expert absent on some
  lines, ``correct`` outside 0..1, a repeated id, a split other than validation/test, a line
  that is not JSON).
* ``write_matrix(matrix, path)``: the file back (gzip when the path ends in ``.gz``, with a
  zero timestamp so the same matrix gives the same bytes).
* ``Matrix``: experts, tasks, split selection, per-expert accuracy and mean cost (tokens or
  USD), the oracle, and numpy arrays (correct: questions x experts, cost: same, NaN where
  not recorded).
"""

from __future__ import annotations

import gzip
import io
import json
import math
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

from agents.errors import SymoeError
from agents.files import atomic_open, json_object
from orchestrator.answers import declared_format, detect_format
from orchestrator.records import AnswerFormat

Split = Literal["validation", "test"]
SPLITS: tuple[Split, ...] = ("validation", "test")
CostUnit = Literal["tokens", "usd"]
REQUIRED = ("id", "task", "split", "question", "outcomes")


class MatrixError(SymoeError):
    """A matrix file that cannot be read, or a matrix that cannot be built."""


class RecordedOutcome(BaseModel):
    """One expert's recorded outcome on one question."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    correct: float = Field(ge=0.0, le=1.0, description="1 right, 0 wrong, a fraction for partial credit")
    answer: str | None = Field(default=None, description="the expert's extracted answer (a vote needs it)")
    prompt_tokens: int | None = Field(default=None, ge=0)
    completion_tokens: int | None = Field(default=None, ge=0)
    seconds: float | None = Field(default=None, ge=0.0)
    cost: float | None = Field(default=None, ge=0.0, description="US dollars")
    margin: float | None = Field(default=None, description="log-prob of the stated letter minus the next option's")
    error: str | None = Field(default=None, description="why the expert gave no answer, when it failed (its model "
                              "or its method: a program that crashed); replay then falls back as live did")

    @property
    def tokens(self) -> int | None:
        if self.prompt_tokens is None and self.completion_tokens is None:
            return None
        return (self.prompt_tokens or 0) + (self.completion_tokens or 0)


class MatrixRow(BaseModel):
    """One question and every expert's outcome on it: one line of a matrix file."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    id: str = Field(min_length=1)
    task: str = Field(min_length=1)
    split: Split
    question: str
    choices: list[str] | None = None
    answer: JsonValue = Field(default=None, description="the gold answer")
    skills: list[str] | None = None
    outcomes: dict[str, RecordedOutcome]

    @property
    def answer_format(self) -> AnswerFormat:
        """The question's answer format: the one its gold answer declares (``symoe eval``'s
        rule), or the pipeline's detection where it has none."""
        if self.answer is None:
            return detect_format(self.question, list(self.choices or []))
        return declared_format(str(self.answer), list(self.choices or []))

    def text(self) -> str:
        """What a router embeds: the question, then its choices (one a line) if it has any."""
        if not self.choices:
            return self.question
        return "\n".join([self.question, *self.choices])

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", exclude_none=True), ensure_ascii=False,
                          separators=(",", ":"))


class Matrix:
    """The questions of an outcome matrix, every one answered by the same ``experts``."""

    def __init__(self, rows: Sequence[MatrixRow], experts: Sequence[str] | None = None,
                 source: str = "matrix") -> None:
        self.rows: list[MatrixRow] = list(rows)
        self.source = source
        if experts is None:
            experts = list(self.rows[0].outcomes) if self.rows else []
        self.experts: list[str] = list(experts)
        self._check()

    def _check(self) -> None:
        wanted = set(self.experts)
        seen: dict[str, int] = {}
        for number, row in enumerate(self.rows, 1):
            if row.id in seen:
                raise MatrixError(f"{self.source}: question {number}: field 'id': {row.id!r} repeats "
                                  f"question {seen[row.id]}")
            seen[row.id] = number
            if set(row.outcomes) != wanted:
                missing = sorted(wanted - set(row.outcomes))
                extra = sorted(set(row.outcomes) - wanted)
                what = (f"expert {missing[0]!r} is missing" if missing
                        else f"expert {extra[0]!r} is not one of {sorted(wanted)}")
                raise MatrixError(f"{self.source}: question {number} ({row.id}): field 'outcomes': {what}")

    # ------------------------------------------------------------------ selection

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[MatrixRow]:
        return iter(self.rows)

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self.rows]

    @property
    def tasks(self) -> list[str]:
        """Tasks in order of first appearance."""
        return list(dict.fromkeys(r.task for r in self.rows))

    @property
    def splits(self) -> list[str]:
        return [s for s in SPLITS if any(r.split == s for r in self.rows)]

    def subset(self, rows: Iterable[MatrixRow]) -> Matrix:
        return Matrix(list(rows), self.experts, self.source)

    def select(self, split: str | None = None, tasks: Iterable[str] | None = None,
               experts: Sequence[str] | None = None) -> Matrix:
        """The questions of one split and/or some tasks, optionally fewer experts."""
        if split is not None and split not in SPLITS:
            raise MatrixError(f"split must be validation or test, not {split!r}")
        chosen = set(tasks) if tasks is not None else None
        if experts is not None:
            unknown = [e for e in experts if e not in self.experts]
            if unknown:
                raise MatrixError(f"{self.source}: no expert {unknown[0]!r} (experts: {', '.join(self.experts)})")
        keep = list(experts) if experts is not None else self.experts
        rows = [r for r in self.rows
                if (split is None or r.split == split) and (chosen is None or r.task in chosen)]
        if experts is not None:
            rows = [r.model_copy(update={"outcomes": {e: r.outcomes[e] for e in keep}}) for r in rows]
        return Matrix(rows, keep, self.source)

    def priced(self, costs: dict[str, float]) -> Matrix:
        """The matrix with each named expert's cost per question (USD) where its rows record none."""
        unknown = [e for e in costs if e not in self.experts]
        if unknown:
            raise MatrixError(f"{self.source}: no expert {unknown[0]!r} to price (experts: {', '.join(self.experts)})")
        rows = [r.model_copy(update={"outcomes": {
            e: o.model_copy(update={"cost": costs[e]}) if e in costs and o.cost is None else o
            for e, o in r.outcomes.items()}}) for r in self.rows]
        return Matrix(rows, self.experts, self.source)

    def take(self, indices: Sequence[int] | np.ndarray) -> Matrix:
        """The questions at these positions (for folds)."""
        return Matrix([self.rows[int(i)] for i in indices], self.experts, self.source)

    # ------------------------------------------------------------------ arrays

    def correct(self) -> np.ndarray:
        """(questions, experts) float array of ``correct``."""
        out = np.zeros((len(self.rows), len(self.experts)), dtype=np.float64)
        for i, row in enumerate(self.rows):
            for j, expert in enumerate(self.experts):
                out[i, j] = row.outcomes[expert].correct
        return out

    def cost(self, unit: CostUnit = "tokens") -> np.ndarray:
        """(questions, experts) float array of tokens (prompt + completion) or USD; NaN where not recorded."""
        if unit not in ("tokens", "usd"):
            raise MatrixError(f"cost unit must be tokens or usd, not {unit!r}")
        out = np.full((len(self.rows), len(self.experts)), np.nan, dtype=np.float64)
        for i, row in enumerate(self.rows):
            for j, expert in enumerate(self.experts):
                o = row.outcomes[expert]
                value = o.tokens if unit == "tokens" else o.cost
                if value is not None:
                    out[i, j] = value
        return out

    def question_tasks(self) -> list[str]:
        """Each question's task, in order."""
        return [r.task for r in self.rows]

    def question_formats(self) -> list[str | None]:
        """Each question's answer format (``MatrixRow.answer_format``), in order."""
        return [r.answer_format for r in self.rows]

    def task_index(self) -> np.ndarray:
        """Each question's task as an index into ``tasks``."""
        position = {t: k for k, t in enumerate(self.tasks)}
        return np.array([position[r.task] for r in self.rows], dtype=np.int64)

    # ------------------------------------------------------------------ summaries

    def accuracy(self) -> dict[str, float]:
        """Mean ``correct`` of each expert (NaN on an empty matrix)."""
        c = self.correct()
        means = c.mean(axis=0) if len(c) else np.full(len(self.experts), np.nan)
        return {e: float(m) for e, m in zip(self.experts, means, strict=True)}

    def mean_cost(self, unit: CostUnit = "tokens") -> dict[str, float | None]:
        """Mean cost per question of each expert over the questions where it is recorded (None: never)."""
        c = self.cost(unit)
        out: dict[str, float | None] = {}
        for j, expert in enumerate(self.experts):
            column = c[:, j]
            known = column[~np.isnan(column)]
            out[expert] = float(known.mean()) if len(known) else None
        return out

    def best_single(self) -> str | None:
        """The expert of best accuracy (the first of the ties); None without questions."""
        if not self.rows or not self.experts:
            return None
        acc = self.accuracy()
        return max(self.experts, key=lambda e: acc[e])

    def oracle_accuracy(self) -> float:
        """Mean over questions of the best expert's ``correct`` (the upper bound of routing one expert)."""
        c = self.correct()
        return float(c.max(axis=1).mean()) if c.size else math.nan

    def counts(self) -> dict[str, dict[str, int]]:
        """task -> split -> questions."""
        out: dict[str, dict[str, int]] = {t: dict.fromkeys(SPLITS, 0) for t in self.tasks}
        for r in self.rows:
            out[r.task][r.split] += 1
        return out


# ---------------------------------------------------------------------- reading

def _open_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MatrixError(f"cannot read {path}: {exc.strerror or exc}") from None
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise MatrixError(f"{path}: not a readable gzip file ({exc}); write it again") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise MatrixError(f"{path}:{line}: not valid UTF-8; save the matrix as UTF-8") from None


def _loc(loc: Sequence[int | str]) -> str:
    return ".".join(str(p) for p in loc) or "record"


def _parse(path: Path, number: int, line: str) -> MatrixRow:
    where = f"{path}:{number}"
    data = json_object(line, where, MatrixError)
    for name in REQUIRED:
        if name not in data:
            raise MatrixError(f"{where}: field {name!r}: missing (required)")
    if data["split"] not in SPLITS:
        raise MatrixError(f"{where}: field 'split': {data['split']!r} is not validation or test")
    outcomes = data["outcomes"]
    if not isinstance(outcomes, dict) or not outcomes:
        raise MatrixError(f"{where}: field 'outcomes': expected an object of expert -> outcome, "
                          "with at least one expert")
    for expert, outcome in outcomes.items():
        if not isinstance(outcome, dict):
            raise MatrixError(f"{where}: field 'outcomes.{expert}': expected an object with 'correct'")
        if "correct" not in outcome:
            raise MatrixError(f"{where}: field 'outcomes.{expert}.correct': missing (required)")
        value = outcome["correct"]
        if isinstance(value, bool):
            outcome["correct"] = float(value)
        elif isinstance(value, int | float) and not (0.0 <= value <= 1.0):  # NaN fails too
            raise MatrixError(f"{where}: field 'outcomes.{expert}.correct': {value} is outside 0..1")
    try:
        return MatrixRow.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise MatrixError(f"{where}: field {_loc(first['loc'])!r}: {first['msg']}") from None


def iter_rows(path: Path) -> Iterator[tuple[int, MatrixRow]]:
    """(line number, row) of each non-blank line; one ``MatrixError`` line at the first bad one."""
    text = _open_text(path)
    for number, line in enumerate(text.split("\n"), 1):  # not splitlines: text may hold U+2028
        if line.strip():
            yield number, _parse(path, number, line)


def read_matrix(path: str | Path) -> Matrix:
    """The matrix in ``path`` (JSONL, gzipped or not), checked line by line."""
    path = Path(path).expanduser()
    rows: list[MatrixRow] = []
    experts: list[str] | None = None
    first_line = 0
    lines: dict[str, int] = {}
    for number, row in iter_rows(path):
        if experts is None:
            experts, first_line = list(row.outcomes), number
        elif set(row.outcomes) != set(experts):
            missing = [e for e in experts if e not in row.outcomes]
            if missing:
                raise MatrixError(f"{path}:{number}: field 'outcomes.{missing[0]}': missing (line {first_line} "
                                  "has it; every line needs the same experts)")
            extra = next(e for e in row.outcomes if e not in experts)
            raise MatrixError(f"{path}:{number}: field 'outcomes.{extra}': expert not on line {first_line} "
                              "(every line needs the same experts)")
        if row.id in lines:
            raise MatrixError(f"{path}:{number}: field 'id': {row.id!r} repeats line {lines[row.id]}")
        lines[row.id] = number
        rows.append(row)
    if not rows:
        raise MatrixError(f"{path}: no questions (an outcome matrix holds one JSON object a line)")
    return Matrix(rows, experts, str(path))


# ---------------------------------------------------------------------- writing

def dumps(matrix: Matrix | Iterable[MatrixRow]) -> str:
    rows = matrix.rows if isinstance(matrix, Matrix) else list(matrix)
    return "".join(r.to_json() + "\n" for r in rows)


def write_matrix(matrix: Matrix, path: str | Path) -> Path:
    """Write ``matrix`` to ``path`` atomically; gzip (timestamp 0, reproducible) when it ends in ``.gz``."""
    path = Path(path).expanduser()
    data = dumps(matrix).encode("utf-8")
    if path.suffix == ".gz":
        buffer = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as gz:
            gz.write(data)
        data = buffer.getvalue()
    try:
        with atomic_open(path, "wb") as handle:
            handle.write(data)
    except OSError as exc:
        raise MatrixError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path
