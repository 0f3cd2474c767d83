"""Fuzzing the command line: no input makes ``symoe`` print a traceback.

``orchestrator.cli.main`` (the entry point that turns errors into one line) runs in this
process with a patched ``sys.argv``, environment and stdin; hypothesis draws the input:

* ``symoe config show`` with random config files (YAML or TOML made from symoe's own keys,
  any text, any bytes) and random ``SYMOE_*`` variables: exit 0 with the config as YAML, or
  exit 2 with one ``error:`` line, and nothing else;
* ``symoe config show`` with valid settings only: exit 0, and the config shows them;
* ``symoe ask`` and ``symoe eval`` with at least one option value that is out of range or
  unknown: exit 2 with one ``error:`` line.

Nothing here loads a model: the commands run with a one-expert pool whose model file does not
exist, an empty ``SYMOE_HOME``, and (for eval) no registered task that would need its data.
An exception other than ``SystemExit`` escaping ``main`` fails the test with its traceback.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import string
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from agents.errors import SymoeError
from eval.datasets import SPLITS, TASKS, task_and_limit
from orchestrator.cli import main
from orchestrator.config import MAX_K, MAX_SEED, load_config
from orchestrator.methods import expand_methods
from orchestrator.records import RETRIEVAL_MODES


def fuzz(examples: int) -> settings:
    """Bounded and repeatable enough for CI: no deadline (the machine may be busy), no example database."""
    return settings(max_examples=examples, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def place(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A home, an output folder, the one-expert config with a missing model, and task files."""
    root = tmp_path_factory.mktemp("fuzz")
    config = root / "fake.yaml"
    config.write_text(yaml.safe_dump({"replace_pool": True, "default_expert": "fake",
                                      "experts": {"fake": {"path": str(root / "missing" / "fake.gguf")}}}))
    record = {"id": "q1", "question": "What is 2+2?", "answer": "4"}
    files = {
        "good.jsonl": json.dumps(record).encode() + b"\n",
        "empty.jsonl": b"",
        "latin1.jsonl": b'{"id": "q1", "question": "caf\xe9?", "answer": "4"}\n',
        "broken.jsonl": b'{"id": "q1", "question": \n',
        "wide.jsonl": json.dumps({**record, "choices": [str(i) for i in range(27)], "answer": "A"}).encode(),
        "badanswer.jsonl": json.dumps({**record, "choices": ["a", "b"], "answer": "Q"}).encode(),
    }
    for name, content in files.items():
        (root / name).write_bytes(content)
    return {"root": root, "home": root / "home", "out": root / "out", "config": config,
            **{name.removesuffix(".jsonl"): root / name for name in files}}


def run_main(place: dict[str, Path], argv: list[str], env: dict[str, str] | None = None,
             stdin: bytes = b"") -> tuple[int | str | None, str, str]:
    """(exit status, stdout, stderr) of ``symoe ARGV`` run in this process."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.upper().startswith("SYMOE_"):
                mp.delenv(name)
        mp.setenv("SYMOE_HOME", str(place["home"]))
        for name, value in (env or {}).items():
            mp.setenv(name, value)
        mp.setattr(sys, "argv", ["symoe", *argv])
        mp.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
            except SystemExit as exc:
                return exc.code, out.getvalue(), err.getvalue()
    raise AssertionError("main() returned without SystemExit")


def assert_one_error(code: int | str | None, stdout: str, stderr: str) -> None:
    assert "Traceback" not in stdout + stderr
    assert code == 2, (code, stdout[-1000:], stderr[-1000:])
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    event(re.sub(r"\S*/", "", lines[0].removeprefix("error: "))[:30])  # which check refused it


# ---------------------------------------------------------------- strategies

#: text a process can hold in argv or the environment (no NUL; undecodable bytes are surrogates)
plain_text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=30)
os_text = st.one_of(plain_text, plain_text, plain_text, st.sampled_from(["\udcff", "caf\udce9", "x\udc80y"]))
non_integers = st.floats(allow_nan=True, allow_infinity=True).map(repr) | \
    st.sampled_from(["nan", "inf", "-inf", "1e400", "0x10", "", " ", "1.5", "abc", "2k"])
numbers = st.integers(-10**6, 10**6).map(str) | non_integers | st.sampled_from(["0", "-1", "1000", "1_0"])

KEYS = ["seed", "home", "default_expert", "replace_pool", "experts", "recruit", "skills", "retrieval", "embedding",
        "k", "min_k", "max_k", "temperature", "dominance", "adaptive_k", "samples", "min_votes", "mode", "top_k",
        "batch_size", "package", "path", "n_ctx", "backend", "bogus", "fake", "qwen-coder-0.5b"]
scalars = st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats() | \
    st.text(max_size=20) | st.sampled_from(["auto", "never", "always", "fake", "", "/dev/null", "~"])
settings_tree = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) |
                             st.dictionaries(st.sampled_from(KEYS), inner, max_size=4), max_leaves=12)
config_mapping = st.dictionaries(st.sampled_from(KEYS), settings_tree, max_size=5)


def toml_text(data: dict) -> str:
    """A TOML rendering of flat keys and one level of tables (JSON literals are mostly valid TOML)."""
    lines, tables = [], []
    for key, value in data.items():
        (tables if isinstance(value, dict) else lines).append((key, value))
    text = [f"{json.dumps(k)} = {json.dumps(v)}" for k, v in lines]
    for key, table in tables:
        text.append(f"[{json.dumps(key)}]")
        text += [f"{json.dumps(k)} = {json.dumps(v)}" for k, v in table.items()]
    return "\n".join(text) + "\n"


#: mostly valid settings, each sometimes just out of range: the boundary of every check
plausible = st.fixed_dictionaries({}, optional={
    "seed": st.integers(-2, MAX_SEED + 1),
    "recruit": st.fixed_dictionaries({}, optional={
        "k": st.integers(0, MAX_K + 1), "min_k": st.integers(0, 5), "max_k": st.integers(0, MAX_K + 1),
        "temperature": st.floats(-0.5, 10.5), "dominance": st.floats(0, 1.1), "adaptive_k": st.booleans()}),
    "skills": st.fixed_dictionaries({}, optional={"samples": st.integers(0, 33), "min_votes": st.integers(0, 33),
                                                  "match_threshold": st.floats(-1.1, 1.1)}),
    "retrieval": st.fixed_dictionaries({}, optional={"mode": st.sampled_from([*RETRIEVAL_MODES, "sometimes"]),
                                                     "top_k": st.integers(0, 51)}),
    "embedding": st.fixed_dictionaries({}, optional={"batch_size": st.integers(0, 4097)}),
    "default_expert": st.sampled_from(["qwen-coder-0.5b", "smollm2-135m", "gpt-17"]),
})
config_file = st.one_of(
    plausible.map(lambda d: (".yaml", yaml.safe_dump(d).encode())),
    plausible.map(lambda d: (".toml", toml_text(d).encode())),
    config_mapping.map(lambda d: (".yaml", yaml.safe_dump(d).encode())),
    config_mapping.map(lambda d: (".toml", toml_text(d).encode())),
    st.tuples(st.sampled_from([".yaml", ".toml", ".yml"]), st.text(max_size=200).map(
        lambda t: t.encode("utf-8", "surrogatepass"))),
    st.tuples(st.sampled_from([".yaml", ".toml"]), st.binary(max_size=200)),
    st.tuples(st.sampled_from([".yaml", ".toml"]), config_mapping.map(
        lambda d: yaml.safe_dump(d).encode() + b"\xff\xfe")),
)
ENV_NAMES = ["SYMOE_SEED", "SYMOE_RECRUIT__K", "SYMOE_RECRUIT", "SYMOE_RETRIEVAL__MODE", "SYMOE_SKILLS__SAMPLES",
             "SYMOE_RECRUIT__TEMPERATURE", "SYMOE_HOME", "SYMOE_DEFAULT_EXPERT", "SYMOE_EMBEDDING__BATCH_SIZE",
             "SYMOE_REPLACE_POOL", "SYMOE_EXPERTS", "SYMOE_RETRIEVAL", "SYMOE_RECRUIT__BOGUS", "SYMOE_BOGUS"]
env_value = numbers | os_text | st.sampled_from(['{"k": 2}', "{bad", "[1]", '{"k": 0}', "null", "true",
                                                 "/dev/null", "/dev/null/x", '{"temperature": 0}'])
environment = st.just({}) | st.dictionaries(st.sampled_from(ENV_NAMES), env_value, max_size=3)


# ---------------------------------------------------------------- config show


@fuzz(150)
@given(config=st.none() | config_file, env=environment)
def test_config_show_never_tracebacks(place: dict[str, Path], config: tuple[str, bytes] | None,
                                      env: dict[str, str]) -> None:
    argv = ["config", "show"]
    if config is not None:
        path = place["root"] / f"fuzz{config[0]}"
        path.write_bytes(config[1])
        argv += ["--config", str(path)]
    code, stdout, stderr = run_main(place, argv, env)
    event(f"exit {code}")
    assert "Traceback" not in stdout + stderr
    if code == 0:
        assert stderr == "" and isinstance(yaml.safe_load(stdout), dict)
    else:
        assert_one_error(code, stdout, stderr)


valid_settings = st.fixed_dictionaries({}, optional={
    "seed": st.integers(0, MAX_SEED),
    "recruit": st.fixed_dictionaries({}, optional={"k": st.integers(1, MAX_K), "temperature": st.floats(0.01, 10),
                                                  "dominance": st.floats(0.01, 1)}),
    "retrieval": st.fixed_dictionaries({}, optional={"mode": st.sampled_from(RETRIEVAL_MODES),
                                                     "top_k": st.integers(1, 50)}),
    "skills": st.fixed_dictionaries({}, optional={"samples": st.integers(1, 32)}),
})


@fuzz(40)
@given(settings_=valid_settings, suffix=st.sampled_from([".yaml", ".toml"]), k=st.none() | st.integers(1, MAX_K))
def test_config_show_accepts_every_valid_setting(place: dict[str, Path], settings_: dict, suffix: str,
                                                 k: int | None) -> None:
    path = place["root"] / f"valid{suffix}"
    path.write_text(yaml.safe_dump(settings_) if suffix == ".yaml" else toml_text(settings_))
    code, stdout, stderr = run_main(place, ["config", "show", "--config", str(path)],
                                    {"SYMOE_RECRUIT__K": str(k)} if k else {})
    assert code == 0 and stderr == "", (code, stderr)
    shown = yaml.safe_load(stdout)
    for section, values in settings_.items():
        expected = {**values, **({"k": k} if k and section == "recruit" else {})} if isinstance(values, dict) \
            else values
        actual = {key: shown[section][key] for key in expected} if isinstance(expected, dict) else shown[section]
        assert actual == pytest.approx(expected), section
    assert k is None or shown["recruit"]["k"] == k


# ---------------------------------------------------------------- ask


def is_method(text: str, config_path: Path) -> bool:
    try:
        expand_methods(text, load_config(config_path))
    except SymoeError:
        return False
    return bool(text.strip())


INT = TypeAdapter(int)  # how the CLI reads an integer option: lax ("3.0", " 3", "1_0" are 3, 3, 10)


def outside(text: str, low: int, high: int) -> bool:
    """Whether the CLI refuses ``text`` as an integer from ``low`` to ``high``."""
    try:
        return not low <= INT.validate_python(text) <= high
    except ValidationError:
        return True


def bad_int(low: int, high: int) -> st.SearchStrategy[str]:
    """An integer outside [low, high], or text that is no integer."""
    return (st.integers(max_value=low - 1) | st.integers(min_value=high + 1)).map(str) | \
        non_integers.filter(lambda t: outside(t, low, high))


def bad_ask_option(config: Path) -> st.SearchStrategy[list[str]]:
    return st.one_of(
        bad_int(1, MAX_K).map(lambda v: ["-k", v]),
        os_text.filter(lambda t: t not in RETRIEVAL_MODES).map(lambda v: [f"--retrieval={v}"]),
        os_text.filter(lambda t: t not in ("choice", "number", "text")).map(lambda v: [f"--format={v}"]),
        bad_int(1, 8192).map(lambda v: [f"--max-tokens={v}"]),
        bad_int(0, MAX_SEED).map(lambda v: [f"--seed={v}"]),
        os_text.filter(lambda t: not is_method(t, config)).map(lambda v: [f"--router={v}"]),
    )


def good_ask_option() -> st.SearchStrategy[list[str]]:
    return st.sampled_from([[], ["-k", "2"], ["--retrieval", "never"], ["--format", "number"],
                            ["--max-tokens", "16"], ["--seed", "7"], ["--router", "majority"], ["-m", "fake"],
                            ["--json"], ["--explain"]])


@fuzz(60)
@given(data=st.data())
def test_ask_with_a_bad_option_is_one_error_line(place: dict[str, Path], data: st.DataObject) -> None:
    options = data.draw(st.lists(good_ask_option(), max_size=2)) + [data.draw(bad_ask_option(place["config"]))]
    options = data.draw(st.permutations(options))
    question = data.draw(st.sampled_from(["What is 2+2?", "-", ""]) |
                         os_text.filter(lambda t: not t.startswith("-")))
    stdin = data.draw(st.binary(max_size=40))
    argv = ["ask", "--config", str(place["config"]), *[part for option in options for part in option], question]
    assert_one_error(*run_main(place, argv, stdin=stdin))


# ---------------------------------------------------------------- eval


def unknown_task(entry: str) -> bool:
    name, count = task_and_limit(entry.strip(), None)
    return bool(entry.strip()) and (name not in TASKS or count == 0) and "," not in entry


@fuzz(60)
@given(data=st.data())
def test_eval_with_a_bad_option_is_one_error_line(place: dict[str, Path], data: st.DataObject) -> None:
    files = {name: str(place[name]) for name in ("good", "empty", "latin1", "broken", "wide", "badanswer")}
    bad_entries = st.sampled_from([files[n] for n in ("empty", "latin1", "broken", "wide", "badanswer")] +
                                  ["mmlu:0", "gsm8k:00", str(place["root"] / "missing.jsonl"), "not_a_task"]) | \
        st.text(string.ascii_letters + string.digits + ":_-. ", min_size=1, max_size=12).filter(unknown_task)
    bad = {
        "tasks": st.one_of(st.sampled_from(["", ",", " , "]), bad_entries,
                           st.tuples(st.lists(st.just(files["good"]), max_size=1), bad_entries).map(
                               lambda t: ",".join([*t[0], t[1]]))),
        "limit": st.integers(max_value=0).map(str) | non_integers.filter(lambda t: outside(t, 1, sys.maxsize**2)),
        "routers": os_text.filter(lambda t: not is_method(t, place["config"])),
        "split": os_text.filter(lambda t: t not in SPLITS),
        "memory-budget-gb": st.floats(max_value=0.0999).map(repr) | st.floats(min_value=65536.01).map(repr) |
        st.sampled_from(["nan", "inf", "-inf", "x", "1e400"]),
        "seed": bad_int(0, MAX_SEED),
        "retrieval": os_text.map(lambda t: "x" + t),  # the first mode is never a mode
    }
    good = {"tasks": st.just(files["good"]), "limit": st.sampled_from(["1", "5"]),
            "routers": st.sampled_from(["single", "single:fake"]), "split": st.sampled_from(list(SPLITS)),
            "memory-budget-gb": st.sampled_from(["0.5", "2"]), "seed": st.sampled_from(["0", "3"]),
            "retrieval": st.sampled_from(["never", "never,always"])}
    broken = data.draw(st.sampled_from(sorted(bad)))
    argv = ["eval", "--config", str(place["config"]), "-o", str(place["out"])]
    for option in sorted(bad):
        if option == broken:
            value = data.draw(bad[option], label=option)
        elif option in ("tasks", "routers") or data.draw(st.booleans()):  # never the default (registered) tasks
            value = data.draw(good[option], label=option)
        else:
            continue
        argv.append(f"--{option}={value}")
    code, stdout, stderr = run_main(place, argv)
    assert_one_error(code, stdout, stderr)
    assert not place["out"].exists()  # refused before anything was written
    assert not (place["home"] / "wheels").exists()  # and before any task's data was fetched
