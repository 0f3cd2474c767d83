"""Importers: outcome matrices from records others (or symoe) already made.

``symoe matrix import KIND PATH... [--split validation|test] --output FILE`` runs one entry of
``importers`` (a ``Registry``, as methods are): ``importers.get(kind)(paths, options)`` gives
an ``ImportResult`` (the matrix and notes, one line each, on what was left out).

* ``lm-eval``: lm-evaluation-harness ``--log_samples`` output. Each ``samples_<task>_<date>.jsonl``
  is paired with the ``results_<date>.json`` of the same run (same folder, same date id; with
  ``--output_path NAME.json`` lm-eval writes ``NAME_<date>.json``, found the same way),
  which gives the model's name (``model_name``, unless it is lm-eval's random id for model_args
  that name no model; else ``config.model_args``'s ``pretrained=`` / ``model=``, else the symoe
  model's ``router=`` less its ``single:``, else ``config.model``) and ``higher_is_better``. Questions are keyed by task
  and ``doc_hash``; one filter per task (the first the file holds, lm-eval's first
  ``filter_list`` entry); ``correct`` is the sample's first metric, as ``1 - value`` when lower
  is better; a metric outside 0..1 (perplexity, BLEU) is refused.
* ``routerbench``: a RouterBench-style CSV: ``prompt``, one score column per model, optional
  ``MODEL|total_cost`` (USD) and ``MODEL|model_response`` (kept as the answer, as recorded),
  optional ``eval_name`` (the task; else the file's stem), ``sample_id`` (the id; else the
  task and a hash of the prompt) and ``split``.
* ``routellm``: lm-sys/RouteLLM's recorded responses (``routellm/evals/mmlu/responses/*.csv``
  and ``routellm/evals/gsm8k/gsm8k_responses.csv``; give the ``evals`` folder or the files):
  task ``mmlu`` or ``gsm8k``, the MMLU prompt split into question and choices, GSM8K's gold
  answer from ``test.jsonl`` beside it and each model's number extracted from its response;
  the prompts RouteLLM's own evaluation drops as contaminated (``contaminated_prompts.jsonl``)
  are dropped too.
* ``routerdc``: RouterDC-style JSON, a list of ``{"question", "scores": {MODEL: 0..1}}``, as
  RouterDC (shuhao02/RouterDC, ``datasets/``) and ulab-uiuc/LLMRouter
  (``data/dcrouter_preprocessed/``) store them. Query files among the paths (``*.jsonl``
  lines with ``query`` and ``task_name``, as LLMRouter's ``default_query_*.jsonl``) give each
  question its task, its gold answer and, for multiple choice, its options; without one the
  task is the file's stem. A question text recorded twice (one file or two) is kept once,
  first file first, and a note says how many were dropped and how many of those had other
  scores.
* ``symoe``: ``samples.jsonl`` as ``symoe eval --log-samples`` writes it; each
  ``single:EXPERT`` method's rows become that expert's outcomes (correct, answer, tokens,
  seconds, margin). Question texts come from the task's prepared file
  (``symoe data prepare TASK``) or from question files in the common format given among the
  paths; each question keeps its fixed split.

Every importer keeps only the questions that every expert answered (a note says how many
were left out and why); a file without a split takes ``--split``, else ``validation``.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import json
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.errors import SymoeError
from agents.files import json_object
from agents.paths import default_home
from agents.registry import Registry
from eval import datasets
from eval.matrix import SPLITS, Matrix, MatrixError, MatrixRow, RecordedOutcome, Split
from orchestrator.answers import LETTERS, extract


@dataclass
class ImportOptions:
    split: Split | None = None  # the split of questions whose file gives none
    home: Path | None = None  # where prepared task files are (the symoe importer)


@dataclass
class ImportResult:
    matrix: Matrix
    notes: list[str] = field(default_factory=list)


Importer = Callable[[list[Path], ImportOptions], ImportResult]
importers: Registry[Importer] = Registry("matrix importer")


def import_matrix(kind: str, paths: list[str | Path], split: str | None = None,
                  home: Path | None = None) -> ImportResult:
    """Run the importer ``kind`` over ``paths`` (files or folders)."""
    importer = importers.get(kind)
    if split is not None and split not in SPLITS:
        raise MatrixError(f"--split must be validation or test, not {split!r}")
    resolved = [Path(p).expanduser() for p in paths]
    for p in resolved:
        if not p.exists():
            raise MatrixError(f"{p} does not exist")
    return importer(resolved, ImportOptions(split=split, home=home))  # type: ignore[arg-type]


# ---------------------------------------------------------------------- shared

@dataclass
class Draft:
    """A question being assembled from several files (one per expert, often)."""

    id: str
    task: str
    split: Split
    question: str
    choices: list[str] | None = None
    answer: Any = None
    skills: list[str] | None = None
    outcomes: dict[str, RecordedOutcome] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)  # expert -> where its outcome came from


def text_hash(text: str, n: int = 12) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:n]


def add_outcome(draft: Draft, expert: str, outcome: RecordedOutcome, where: str) -> None:
    """Record ``expert``'s outcome; the same question twice for one expert must agree."""
    if expert in draft.outcomes:
        if draft.outcomes[expert].correct != outcome.correct:
            raise MatrixError(f"{where}: expert {expert!r} answered question {draft.id!r} again with another "
                              f"score (first in {draft.origin[expert]}); import one run per expert and task")
        return
    draft.outcomes[expert] = outcome
    draft.origin[expert] = where


def assemble(drafts: list[Draft], source: str) -> ImportResult:
    """The matrix of the questions every expert answered, and a note per expert and task left out."""
    experts = list(dict.fromkeys(e for d in drafts for e in d.outcomes))
    if not experts:
        raise MatrixError(f"{source}: no outcomes found")
    notes: list[str] = []
    missing: dict[tuple[str, str], int] = {}
    rows = []
    for d in drafts:
        absent = [e for e in experts if e not in d.outcomes]
        for e in absent:
            missing[(e, d.task)] = missing.get((e, d.task), 0) + 1
        if absent:
            continue
        rows.append(MatrixRow(id=d.id, task=d.task, split=d.split, question=d.question, choices=d.choices or None,
                              answer=d.answer, skills=d.skills or None,
                              outcomes={e: d.outcomes[e] for e in experts}))
    for (expert, task), n in missing.items():
        notes.append(f"left out {n} question(s) of task {task!r} that expert {expert!r} did not answer")
    if not rows:
        raise MatrixError(f"{source}: no question was answered by every expert ({', '.join(experts)}); "
                          "import runs of the same tasks")
    return ImportResult(Matrix(rows, experts, source), notes)


def unique_id(base: str, taken: set[str]) -> str:
    """``base``, or ``base-2``, ``base-3``... when a different question already holds it."""
    candidate, k = base, 1
    while candidate in taken:
        k += 1
        candidate = f"{base}-{k}"
    taken.add(candidate)
    return candidate


def files_under(paths: list[Path], pattern: str) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        out += sorted(p.rglob(pattern)) if p.is_dir() else [p]
    return list(dict.fromkeys(out))


def read_json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MatrixError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        yield number, json_object(line, f"{path}:{number}", MatrixError)


def score(value: Any, where: str, name: str) -> float:
    """A 0..1 score from a number or a boolean (``True``/``False`` in a CSV too)."""
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in ("true", "false"):
            return 1.0 if text.lower() == "true" else 0.0
        try:
            value = float(text)
        except ValueError:
            raise MatrixError(f"{where}: field {name!r}: {value!r} is not a score (a number from 0 to 1, "
                              "or True/False)") from None
    if isinstance(value, bool):
        return float(value)
    if not isinstance(value, int | float) or not (0.0 <= float(value) <= 1.0):
        raise MatrixError(f"{where}: field {name!r}: {value!r} is outside 0..1; a matrix needs a per-question "
                          "score from 0 to 1")
    return float(value)


def read_csv(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Header and (line, row) pairs; a row's line is where it starts (fields may hold newlines)."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise MatrixError(f"cannot read {path}: {exc.strerror or exc}") from None
    with handle:
        reader = csv.DictReader(handle)
        try:
            header = list(reader.fieldnames or [])
            rows = []
            start = reader.line_num + 1
            for row in reader:
                rows.append((start, row))
                start = reader.line_num + 1
        except (csv.Error, UnicodeDecodeError) as exc:
            raise MatrixError(f"{path}:{reader.line_num}: not a readable CSV row ({exc})") from None
    if not header:
        raise MatrixError(f"{path}: empty CSV (expected a header row)")
    return header, rows


# ---------------------------------------------------------------------- lm-evaluation-harness

_SAMPLES = re.compile(r"^samples_(?P<task>.+)_(?P<date>\d{4}-\d{2}-\d{2}T[0-9.\-]+)\.jsonl$")
_QUESTION_KEYS = ("question", "problem", "query", "input", "prompt", "sentence", "ctx", "goal", "text", "passage")


# the model_args lm-eval names a run from (its order); a run with none of them gets a random 8-character id
_LM_EVAL_NAME_ARGS = ("peft", "delta", "pretrained", "model", "path", "engine")


def lm_eval_model_name(results: dict[str, Any]) -> str:
    config = results.get("config") or {}
    args = config.get("model_args")
    if isinstance(args, str):
        args = dict(part.split("=", 1) for part in args.split(",") if "=" in part)
    args = args if isinstance(args, dict) else {}
    name = results.get("model_name")
    # lm-eval's model_name is a random id when model_args name no model (symoe's router=...): not a name
    random_id = "model_args" in config and not any(args.get(key) for key in _LM_EVAL_NAME_ARGS)
    if isinstance(name, str) and name.strip() and not random_id:
        return name.strip()
    for key in ("pretrained", "model", "model_name", "path"):
        if args.get(key):
            return str(args[key]).strip()
    router = args.get("router") or args.get("strategy")  # the symoe model: router=single:EXPERT names the expert
    if isinstance(router, str) and router.strip():
        return router.strip().removeprefix("single:")
    model = config.get("model")
    if isinstance(model, str) and model.strip():
        return model.strip()
    return ""


def _doc_question(sample: dict[str, Any]) -> tuple[str, list[str] | None]:
    found = sample.get("doc")
    doc: dict[str, Any] = found if isinstance(found, dict) else {}
    choices = doc.get("choices")
    if isinstance(choices, dict):
        choices = choices.get("text")
    choices = [str(c) for c in choices] if isinstance(choices, list) and choices else None
    for key in _QUESTION_KEYS:
        value = doc.get(key)
        if isinstance(value, str) and value.strip():
            return value, choices
    arguments = sample.get("arguments")
    if isinstance(arguments, dict):  # the prompt lm-eval sent (few-shot examples included)
        first = arguments.get("gen_args_0")
        if isinstance(first, dict) and isinstance(first.get("arg_0"), str):
            return first["arg_0"], choices
    return json.dumps(doc, ensure_ascii=False, sort_keys=True), choices


def _as_float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _lm_eval_answer(sample: dict[str, Any]) -> tuple[str | None, float | None]:
    """The model's answer (a generation's text, or the letter of the likeliest choice) and, for
    choices, the log-likelihood margin of that choice over the next."""
    resps = sample.get("filtered_resps")
    if not isinstance(resps, list) or not resps:
        return None, None
    if all(isinstance(r, str) for r in resps):
        return resps[0], None
    if all(isinstance(r, list) and r for r in resps):
        scores = [_as_float(r[0]) for r in resps]
        if all(s is not None for s in scores):
            ranked = sorted(range(len(scores)), key=lambda i: -scores[i])  # type: ignore[operator]
            best = ranked[0]
            margin = scores[best] - scores[ranked[1]] if len(ranked) > 1 else None  # type: ignore[operator]
            return (LETTERS[best] if best < len(LETTERS) else str(best)), margin
    return None, None


def _gold(sample: dict[str, Any], choices: list[str] | None) -> Any:
    target = sample.get("target")  # lm-eval writes str(target): a choice's index as "1"
    index = str(target) if isinstance(target, int | str) and not isinstance(target, bool) else ""
    if choices and index.isdigit() and int(index) < min(len(choices), len(LETTERS)):
        return LETTERS[int(index)]
    return target


@importers.register("lm-eval")
def import_lm_eval(paths: list[Path], options: ImportOptions) -> ImportResult:
    samples = [p for p in files_under(paths, "samples_*.jsonl") if _SAMPLES.match(p.name)]
    strays = [p for p in files_under(paths, "samples_*.jsonl") if not _SAMPLES.match(p.name)]
    if strays:
        raise MatrixError(f"{strays[0]}: not an lm-eval samples file (expected samples_<task>_<date>.jsonl)")
    if not samples:
        raise MatrixError(f"no lm-eval samples_<task>_<date>.jsonl files under {', '.join(map(str, paths))}; "
                          "run lm_eval with --log_samples --output_path DIR")
    split: Split = options.split or "validation"
    drafts: dict[tuple[str, str, int], Draft] = {}
    taken: set[str] = set()
    results_cache: dict[Path, dict[str, Any]] = {}
    seen_runs: dict[tuple[str, str], Path] = {}
    for path in samples:
        m = _SAMPLES.match(path.name)
        assert m is not None
        task, date = m["task"], m["date"]
        results_path = path.with_name(f"results_{date}.json")
        if not results_path.exists():  # --output_path NAME.json writes NAME_<date>.json
            others = sorted(path.parent.glob(f"*_{date}.json"))
            results_path = others[0] if len(others) == 1 else results_path
        if not results_path.exists():
            raise MatrixError(f"{path}: no {results_path.name} beside it (the same run's results give the model's "
                              "name and which way its metric points)")
        if results_path not in results_cache:
            try:
                results_cache[results_path] = json.loads(results_path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise MatrixError(f"{results_path}: not readable JSON ({exc})") from None
        results = results_cache[results_path]
        expert = lm_eval_model_name(results)
        if not expert:
            raise MatrixError(f"{results_path}: field 'model_name': missing (and no config.model_args names the "
                              "model); cannot name the expert")
        if (expert, task) in seen_runs:
            raise MatrixError(f"{path}: a second run of {expert!r} on task {task!r} (the first: "
                              f"{seen_runs[(expert, task)]}); import one run per model and task")
        seen_runs[(expert, task)] = path
        better = (results.get("higher_is_better") or {}).get(task) or {}
        chosen_filter: str | None = None
        occurrences: dict[str, int] = {}
        for number, sample in read_json_lines(path):
            where = f"{path}:{number}"
            filt = str(sample.get("filter", "none"))
            if chosen_filter is None:
                chosen_filter = filt
            if filt != chosen_filter:
                continue
            doc_hash = sample.get("doc_hash")
            if not isinstance(doc_hash, str) or not doc_hash:
                raise MatrixError(f"{where}: field 'doc_hash': missing (lm-eval 0.4.2 or later writes it)")
            metrics = sample.get("metrics")
            if not isinstance(metrics, list) or not metrics:
                raise MatrixError(f"{where}: field 'metrics': missing (the sample's metric names)")
            metric = str(metrics[0])
            if metric not in sample:
                raise MatrixError(f"{where}: field {metric!r}: missing (named in 'metrics')")
            value = score(sample[metric], where, metric)
            correct = value if better.get(metric, True) else 1.0 - value
            occurrences[doc_hash] = occurrences.get(doc_hash, 0) + 1
            key = (task, doc_hash, occurrences[doc_hash])
            draft = drafts.get(key)
            if draft is None:
                question, choices = _doc_question(sample)
                base = f"{task}-{doc_hash[:12]}"
                draft = Draft(id=unique_id(base if key[2] == 1 else f"{base}-{key[2]}", taken), task=task,
                              split=split, question=question, choices=choices, answer=_gold(sample, choices))
                drafts[key] = draft
            answer, margin = _lm_eval_answer(sample)
            add_outcome(draft, expert, RecordedOutcome(correct=correct, answer=answer, margin=margin), where)
    return assemble(list(drafts.values()), ", ".join(map(str, paths)))


# ---------------------------------------------------------------------- RouterBench CSV

_RESERVED = {"sample_id", "id", "prompt", "eval_name", "task", "split", "oracle_model_to_route_to", "answer",
             "gold", "question"}


def routerbench_models(header: list[str], rows: list[tuple[int, dict[str, str]]]) -> list[str]:
    """Models: columns with a ``MODEL|...`` sibling; else every other column whose values are scores."""
    piped = [c for c in header if "|" not in c and any(h.startswith(c + "|") for h in header)]
    if piped:
        return piped
    candidates = [c for c in header if c not in _RESERVED and "|" not in c]
    out = []
    for c in candidates:
        values = [row.get(c) or "" for _, row in rows[:50]]
        if values and all(v.strip().lower() in ("true", "false") or _as_float(v) is not None for v in values):
            out.append(c)
    return out


@importers.register("routerbench")
def import_routerbench(paths: list[Path], options: ImportOptions) -> ImportResult:
    drafts: dict[str, Draft] = {}
    taken: set[str] = set()
    for path in files_under(paths, "*.csv"):
        header, rows = read_csv(path)
        if "prompt" not in header:
            raise MatrixError(f"{path}:1: field 'prompt': missing (a RouterBench CSV has a prompt column)")
        models = routerbench_models(header, rows)
        if not models:
            raise MatrixError(f"{path}:1: no model score columns (expected MODEL with MODEL|total_cost or "
                              "MODEL|model_response beside it, or columns of 0..1 scores)")
        for number, row in rows:
            where = f"{path}:{number}"
            prompt = row.get("prompt") or ""
            task = (row.get("eval_name") or "").strip() or path.stem
            split_value = (row.get("split") or "").strip() or options.split or "validation"
            if split_value not in SPLITS:
                raise MatrixError(f"{where}: field 'split': {split_value!r} is not validation or test")
            sample_id = (row.get("sample_id") or "").strip()
            base = sample_id or f"{task}-{text_hash(prompt)}"
            qid = unique_id(base, taken)
            if sample_id and qid != sample_id:
                raise MatrixError(f"{where}: field 'sample_id': {sample_id!r} repeats an earlier row")
            draft = Draft(id=qid, task=task, split=split_value, question=prompt,  # type: ignore[arg-type]
                          answer=(row.get("answer") or row.get("gold") or None))
            for model in models:
                cost = row.get(f"{model}|total_cost")
                cost_value = _as_float(cost) if cost not in (None, "") else None
                if cost not in (None, "") and (cost_value is None or cost_value < 0):
                    raise MatrixError(f"{where}: field '{model}|total_cost': {cost!r} is not a cost in USD")
                response = row.get(f"{model}|model_response")
                add_outcome(draft, model, RecordedOutcome(correct=score(row.get(model), where, model),
                                                          cost=cost_value, answer=response or None), where)
            drafts[qid] = draft
    return assemble(list(drafts.values()), ", ".join(map(str, paths)))


# ---------------------------------------------------------------------- RouteLLM's recorded responses

#: RouteLLM's MMLU prompt: the stem, four lettered options (the last "A." line starts them), "Answer:"
_MMLU_PROMPT = re.compile(r"^(?P<stem>.*)\nA\. (?P<A>.*?)\nB\. (?P<B>.*?)\nC\. (?P<C>.*?)\nD\. (?P<D>.*?)"
                          r"\s*Answer:\s*$", re.DOTALL)


def _routellm_files(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out += sorted(p.rglob("mmlu_*.csv")) + sorted(p.rglob("gsm8k_responses.csv"))
        else:
            out.append(p)
    return list(dict.fromkeys(out))


def _contaminated(folder: Path) -> set[str]:
    path = folder / "contaminated_prompts.jsonl"
    if not path.exists():
        return set()
    return {str(d["eval_prompt"]) for _, d in read_json_lines(path) if "eval_prompt" in d}


def _gsm8k_gold(folder: Path) -> dict[str, str]:
    path = folder / "test.jsonl"
    if not path.exists():
        return {}
    gold = {}
    for _, d in read_json_lines(path):
        answer = str(d.get("answer", ""))
        if "####" in answer:
            gold[str(d.get("question", "")).strip()] = answer.rsplit("####", 1)[1].strip().replace(",", "")
    return gold


@importers.register("routellm")
def import_routellm(paths: list[Path], options: ImportOptions) -> ImportResult:
    files = _routellm_files(paths)
    if not files:
        raise MatrixError(f"no RouteLLM response files (mmlu_*.csv, gsm8k_responses.csv) under "
                          f"{', '.join(map(str, paths))}")
    split: Split = options.split or "validation"
    drafts: list[Draft] = []
    taken: set[str] = set()
    dropped: dict[str, int] = {}
    for path in files:
        task = "gsm8k" if path.name.startswith("gsm8k") else "mmlu" if path.name.startswith("mmlu_") else None
        if task is None:
            raise MatrixError(f"{path}: not a RouteLLM response file (mmlu_<subject>.csv or gsm8k_responses.csv)")
        folder = path.parent.parent if task == "mmlu" else path.parent
        contaminated = _contaminated(folder)
        gold = _gsm8k_gold(folder) if task == "gsm8k" else {}
        header, rows = read_csv(path)
        if "prompt" not in header:
            raise MatrixError(f"{path}:1: field 'prompt': missing")
        models = [c for c in header if c != "prompt" and not c.endswith("_response")]
        for number, row in rows:
            where = f"{path}:{number}"
            prompt = row.get("prompt") or ""
            if prompt in contaminated:
                dropped[task] = dropped.get(task, 0) + 1
                continue
            question, choices = prompt, None
            if task == "mmlu":
                m = _MMLU_PROMPT.match(prompt)
                if m:
                    question, choices = m["stem"].strip(), [m[letter].strip() for letter in "ABCD"]
            draft = Draft(id=unique_id(f"{task}-{text_hash(prompt)}", taken), task=task, split=split,
                          question=question, choices=choices, answer=gold.get(prompt.strip()))
            for model in models:
                response = row.get(f"{model}_response")
                answer = extract(response, "number") if response else None
                add_outcome(draft, model, RecordedOutcome(correct=score(row.get(model), where, model),
                                                          answer=answer), where)
            drafts.append(draft)
    result = assemble(drafts, ", ".join(map(str, paths)))
    result.notes += [f"left out {n} prompt(s) of task {task!r} that RouteLLM's evaluation drops as contaminated"
                     for task, n in dropped.items()]
    return result


# ---------------------------------------------------------------------- RouterDC-style JSON

def _literal(value: Any) -> Any:
    """A Python literal written as a string (LLMRouter's ``choices``), else the value itself."""
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return value
    return value


def _query_choices(query: dict[str, Any]) -> tuple[list[str] | None, list[str]]:
    """A multiple-choice query's options and their labels (``['1', '2', ...]`` in some ARC rows)."""
    if query.get("metric") != "em_mc":
        return None, []
    raw = _literal(query.get("choices"))
    if isinstance(raw, dict):
        texts, labels = raw.get("text"), raw.get("label") or raw.get("labels")
    else:
        texts, labels = raw, None
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str | int | float) for t in texts):
        return None, []
    choices = [str(t) for t in texts]
    labels = [str(x) for x in labels] if isinstance(labels, list) and len(labels) == len(choices) else []
    return choices, labels


def _boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` in ``text`` (braces balanced)."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1 : j].strip() or None
    return None


def _query_gold(query: dict[str, Any], choices: list[str] | None, labels: list[str]) -> Any:
    """The gold answer where it is short: a letter, a number, a boxed result or a short text."""
    gold = query.get("ground_truth")
    if not isinstance(gold, str | int | float) or isinstance(gold, bool):
        return None
    text = str(gold).strip()
    metric = query.get("metric")
    if choices:
        if text in labels:
            return LETTERS[labels.index(text)]
        return text if text in LETTERS[: len(choices)] else None
    if metric == "GSM8K" and "####" in text:
        return text.rsplit("####", 1)[1].strip().replace(",", "")
    if metric == "MATH":
        return text if re.fullmatch(r"-?[\d,]*\.?\d+", text) else _boxed(text)
    return text if metric == "f1_score" and text else None


def _routerdc_queries(files: list[Path]) -> tuple[dict[str, dict[str, Any]], int]:
    """Query text -> its first query record; and how many texts the files give two tasks."""
    queries: dict[str, dict[str, Any]] = {}
    two_tasks: set[str] = set()
    for path in files:
        for number, data in read_json_lines(path):
            for name in ("query", "task_name"):
                if not isinstance(data.get(name), str):
                    raise MatrixError(f"{path}:{number}: field {name!r}: missing (a query file's lines have "
                                      "'query' and 'task_name', as LLMRouter's default_query_*.jsonl)")
            first = queries.setdefault(data["query"], data)
            if first["task_name"] != data["task_name"]:
                two_tasks.add(data["query"])
    return queries, len(two_tasks)


@importers.register("routerdc")
def import_routerdc(paths: list[Path], options: ImportOptions) -> ImportResult:
    score_files = [p for p in files_under(paths, "*.json") if p.suffix == ".json"]
    if not score_files:
        raise MatrixError(f"no RouterDC score files (*.json: a list of {{question, scores}}) among "
                          f"{', '.join(map(str, paths))}")
    queries, two_tasks = _routerdc_queries([p for p in files_under(paths, "*.jsonl") if p.suffix == ".jsonl"])
    split: Split = options.split or "validation"
    drafts: list[Draft] = []
    by_text: dict[str, Draft] = {}
    taken: set[str] = set()
    repeats = differing = 0
    for path in score_files:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MatrixError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
        if not isinstance(data, list):
            raise MatrixError(f"{path}: not a RouterDC score file (a JSON list of {{question, scores}})")
        for k, item in enumerate(data):
            where = f"{path}: item {k}"
            if not isinstance(item, dict) or not isinstance(item.get("question"), str):
                raise MatrixError(f"{where}: field 'question': missing")
            scores = item.get("scores")
            if not isinstance(scores, dict) or not scores:
                raise MatrixError(f"{where}: field 'scores': missing (a map of model to a 0..1 score)")
            outcomes = {str(m): RecordedOutcome(correct=score(v, where, f"scores.{m}")) for m, v in scores.items()}
            text = item["question"]
            if text in by_text:
                repeats += 1
                first = by_text[text].outcomes
                differing += any(m not in first or first[m].correct != o.correct for m, o in outcomes.items())
                continue
            query = queries.get(text, {})
            task = str(query.get("task_name") or path.stem)
            choices, labels = _query_choices(query)
            draft = Draft(id=unique_id(f"{task}-{text_hash(text)}", taken), task=task, split=split, question=text,
                          choices=choices, answer=_query_gold(query, choices, labels))
            for model, outcome in outcomes.items():
                add_outcome(draft, model, outcome, where)
            by_text[text] = draft
            drafts.append(draft)
    result = assemble(drafts, ", ".join(map(str, paths)))
    if repeats:
        result.notes.append(f"left out {repeats} repeated question text(s), the first record kept "
                            f"({differing} of them recorded other scores the second time)")
    if two_tasks:
        result.notes.append(f"{two_tasks} question text(s) appear under two tasks in the query files: "
                            "the first file's task is kept")
    return result


# ---------------------------------------------------------------------- symoe's own samples

def _single_expert(method: str) -> str | None:
    return method[len("single:"):] if method.startswith("single:") and len(method) > len("single:") else None


def _question_file(path: Path) -> bool:
    """A JSONL file in the common question format (its first object has no 'method')."""
    for _, data in read_json_lines(path):
        return "method" not in data and "question" in data
    return False


def _questions(task: str, home: Path, given: dict[str, dict[str, datasets.Question]]) -> dict[str, datasets.Question]:
    if task in given:
        return given[task]
    try:
        prepared = datasets.is_prepared(task, home)
    except SymoeError:
        prepared = False
    if not prepared:
        raise MatrixError(f"task {task!r}'s questions are not prepared in {home}: run `symoe data prepare {task}`, "
                          "or give its question file (JSONL in the common format) among the paths")
    given[task] = {q.id: q for q in datasets.read_jsonl(datasets.prepared_path(task, home))}
    return given[task]


def sample_outcome(sample: dict[str, Any], where: str = "sample") -> RecordedOutcome:
    """One ``single:EXPERT`` line of symoe's samples as that expert's outcome: right or not,
    its answer, tokens and seconds, and the letter margin when its one response recorded it."""
    usage = sample.get("usage") or {}
    responses = sample.get("responses") or []
    one = responses[0] if len(responses) == 1 and isinstance(responses[0], dict) else {}
    return RecordedOutcome(correct=score(sample["correct"], where, "correct"), answer=sample.get("answer"),
                           prompt_tokens=usage.get("prompt_tokens"), completion_tokens=usage.get("completion_tokens"),
                           seconds=usage.get("seconds"), margin=one.get("margin"), error=response_error(one))


def response_error(response: dict[str, Any]) -> str | None:
    """Why one logged expert response failed (its method's failure, else its model's error), or None."""
    generation = response.get("generation")
    error = response.get("failure") or (generation.get("error") if isinstance(generation, dict) else None)
    return str(error) if error else None


@importers.register("symoe")
def import_symoe(paths: list[Path], options: ImportOptions) -> ImportResult:
    files = files_under(paths, "*.jsonl")
    question_files = [p for p in files if _question_file(p)]
    sample_files = [p for p in files if p not in question_files]
    if not sample_files:
        raise MatrixError(f"no symoe samples.jsonl among {', '.join(map(str, paths))}; "
                          "write one with `symoe eval --log-samples`")
    given: dict[str, dict[str, datasets.Question]] = {}
    for qf in question_files:
        for q in datasets.read_jsonl(qf):
            given.setdefault(q.task, {})[q.id] = q
    home = options.home or default_home()
    drafts: dict[str, Draft] = {}
    for path in sample_files:
        for number, sample in read_json_lines(path):
            where = f"{path}:{number}"
            for name in ("method", "question_id", "task", "correct"):
                if name not in sample:
                    raise MatrixError(f"{where}: field {name!r}: missing (not a symoe samples.jsonl line?)")
            expert = _single_expert(str(sample["method"]))
            if expert is None:
                continue
            qid, task = str(sample["question_id"]), str(sample["task"])
            draft = drafts.get(qid)
            if draft is None:
                question = _questions(task, home, given).get(qid)
                if question is None:
                    raise MatrixError(f"{where}: field 'question_id': {qid!r} is not a question of task {task!r}")
                split = options.split or datasets.split_of(question)
                draft = Draft(id=qid, task=task, split=split, question=question.question,
                              choices=question.choices or None, answer=sample.get("gold", question.answer))
                drafts[qid] = draft
            add_outcome(draft, expert, sample_outcome(sample, where), where)
    if not drafts:
        raise MatrixError(f"no single:EXPERT rows in {', '.join(map(str, sample_files))}; run `symoe eval` with "
                          "--routers single (every expert alone) and --log-samples")
    return assemble(list(drafts.values()), ", ".join(map(str, paths)))
