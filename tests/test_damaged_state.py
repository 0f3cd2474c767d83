"""Damaged state on disk: the generation cache and the document index, damaged on purpose.

Real files, damaged copies, real ``symoe`` subprocesses. A bad cache row is a miss (generated
again, counted in the report); a cache file that cannot be read is one ``error:`` line naming
it and saying to move it aside, exit 2, no traceback, and the file is left as it was. A
damaged index (``chunks.sqlite`` or ``index.faiss``) is one ``error:`` line from ``symoe index
search``, ``info`` and ``build`` (which says ``--rebuild``), and ``--rebuild`` repairs it; the
pipeline's retriever records why there is no index instead of failing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import one_error_line

from agents.backends.base import Generation
from agents.cache import CacheError, GenerationCache
from agents.embedder import EmbeddingConfig
from agents.errors import SymoeError
from orchestrator.config import load_config
from orchestrator.pipeline import Pipeline
from retrieval.index import CHUNKS_FILE, INDEX_FILE, build_index, check_index, open_index

ROOT = Path(__file__).resolve().parents[1]
SYMOE = [sys.executable, "-m", "orchestrator.cli"]
PAGE = 4096
ONLY_SMOLLM = ("default_expert: smollm2-135m\n"
               "experts:\n  qwen-coder-1.5b: null\n  qwen-coder-0.5b: null\n  gemma3-270m: null\n"
               "  smollm2-135m: {routed: true}\n")


def symoe(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([*SYMOE, *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- damage


def truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def random_bytes(path: Path) -> None:
    path.write_bytes(os.urandom(path.stat().st_size))


def corrupt_page(path: Path) -> None:
    """Overwrite one 4 KiB page in the middle of the file with random bytes."""
    pages = path.stat().st_size // PAGE
    assert pages >= 8, "too small a file to have a middle page"
    with path.open("r+b") as f:
        f.seek((pages // 2) * PAGE)
        f.write(os.urandom(PAGE))


def sql(path: Path, statement: str) -> None:
    db = sqlite3.connect(path)
    try:
        db.execute(statement)
        db.commit()
    finally:
        db.close()


FILE_DAMAGE: dict[str, Callable[[Path], None]] = {
    "truncated": truncate, "random bytes": random_bytes, "corrupt page": corrupt_page}


# ---------------------------------------------------------------- the generation cache


@pytest.fixture(scope="module")
def full_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real cache of 600 rows (about 90 pages), closed (checkpointed: no -wal file)."""
    path = tmp_path_factory.mktemp("cache") / "generations.sqlite"
    cache = GenerationCache(path)
    for i in range(600):
        cache.put(f"key{i}", "smollm2-135m", Generation(text=f"answer {i}: " + "lorem ipsum " * 40, model="m"))
    cache.close()
    assert not path.with_name(path.name + "-wal").exists()
    return path


def damaged_copy(source: Path, where: Path, damage: Callable[[Path], None]) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    copy = where / source.name
    shutil.copy(source, copy)
    damage(copy)
    return copy


@pytest.mark.parametrize("kind", list(FILE_DAMAGE))
def test_unreadable_cache_file_is_one_error_and_left_as_it_was(full_cache: Path, tmp_path: Path, kind: str) -> None:
    path = damaged_copy(full_cache, tmp_path, FILE_DAMAGE[kind])
    before = digest(path)
    with pytest.raises(CacheError) as info:
        GenerationCache(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "damaged" in message and "move it aside" in message
    assert digest(path) == before, "opening changed a damaged file"
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name], "opening left files beside it"


@pytest.mark.parametrize("statement", [
    "UPDATE generations SET result='{oops' WHERE key='key7'",
    "UPDATE generations SET result=NULL WHERE key='key7'",
    "UPDATE generations SET result=CAST(x'7bff22' AS TEXT) WHERE key='key7'",  # not UTF-8
    "UPDATE generations SET result='[1, 2]' WHERE key='key7'",
    "UPDATE generations SET result='{\"text\": \"\", \"model\": \"m\", \"error\": \"boom\"}' WHERE key='key7'",
])
def test_bad_row_is_a_counted_miss_and_is_overwritten(full_cache: Path, tmp_path: Path, statement: str) -> None:
    path = damaged_copy(full_cache, tmp_path, lambda p: sql(p, statement))
    cache = GenerationCache(path)
    try:
        found = {i: cache.get(f"key{i}") for i in range(600)}
        assert [i for i, g in found.items() if g is None] == [7]
        assert (cache.bad_rows, cache.misses, cache.hits) == (1, 1, 599)
        cache.put("key7", "smollm2-135m", Generation(text="again", model="m"))
        again = cache.get("key7")
        assert again is not None and again.text == "again" and cache.bad_rows == 1
    finally:
        cache.close()


def test_locked_cache_is_not_called_damaged(tmp_path: Path) -> None:
    path = tmp_path / "locked.sqlite"
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("CREATE TABLE generations (key TEXT PRIMARY KEY, expert TEXT, result TEXT)")
        holder.execute("BEGIN EXCLUSIVE")
        with pytest.raises(CacheError) as info:
            GenerationCache(path, timeout=0.1)
    finally:
        holder.close()
    message = str(info.value)
    assert "locked by another process" in message and "damaged" not in message and "move it aside" not in message
    GenerationCache(path).close()  # once the lock is gone, it opens


def test_foreign_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    sql(path, "CREATE TABLE chunks (id INTEGER PRIMARY KEY, text TEXT)")
    before = digest(path)
    with pytest.raises(CacheError) as info:
        GenerationCache(path)
    assert "not a symoe generation cache" in str(info.value) and digest(path) == before


@pytest.fixture(scope="module")
def small_task(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, Path]:
    """(home, its config, config, task file): an empty home and a config using it, a config
    using the prepared pool's home, both with smollm2-135m alone; 4 test questions."""
    root = tmp_path_factory.mktemp("tiny")
    home = root / "home"
    home.mkdir()
    home_config = root / "config-home.yaml"
    home_config.write_text(f"home: {home}\n" + ONLY_SMOLLM)
    config = root / "config.yaml"
    config.write_text(ONLY_SMOLLM)
    questions = [("What is 2 + 2?", ["3", "4", "5", "6"], "B"),
                 ("Which planet is known as the red planet?", ["Venus", "Mars", "Jupiter", "Saturn"], "B"),
                 ("Water freezes at how many degrees Celsius?", ["0", "10", "50", "100"], "A"),
                 ("Which animal barks?", ["cat", "cow", "dog", "fish"], "C")]
    rows = [{"id": f"q{i}", "question": q, "choices": c, "answer": a, "split": "test"}
            for i, (q, c, a) in enumerate(questions)]
    rows.append({**rows[0], "id": "v0", "split": "validation"})  # for `symoe profile build`
    task = root / "tiny.jsonl"
    task.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return home, home_config, config, task


def eval_command(config: Path, task: Path, out: Path, cache: Path) -> list[str]:
    return ["eval", "-c", str(config), "--tasks", str(task), "--routers", "single:smollm2-135m",
            "--output", str(out), "--use-cache", str(cache), "--log-samples"]


@pytest.mark.parametrize("kind", list(FILE_DAMAGE))
def test_cli_damaged_cache_is_one_line_in_eval_ask_and_profile_build(full_cache: Path, small_task, tmp_path: Path,
                                                                      kind: str) -> None:
    """No model is loaded: the cache is opened (and refused) before any generation."""
    home, config, _, task = small_task
    damaged = damaged_copy(full_cache, tmp_path / "eval", FILE_DAMAGE[kind])
    before = digest(damaged)
    proc = symoe(*eval_command(config, task, tmp_path / "out", damaged))
    one_error_line(proc, str(damaged), "move it aside")
    assert digest(damaged) == before

    (home / "cache").mkdir(exist_ok=True)
    for args in (["ask", "-c", str(config), "-m", "smollm2-135m", "What is 2 + 2?"],
                 ["profile", "build", "-c", str(config), "--tasks", str(task), "-o", str(tmp_path / "profile.json")]):
        target = home / "cache" / "generations.sqlite"  # the one cache every face shares by default
        shutil.copy(full_cache, target)
        FILE_DAMAGE[kind](target)
        try:
            one_error_line(symoe(*args), str(target), "move it aside")
        finally:
            target.unlink()


def samples(out: Path) -> dict[str, tuple[str | None, bool]]:
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    return {r["question_id"]: (r["answer"], r["correct"]) for r in rows}


@pytest.fixture(params=["fake", pytest.param("real", marks=pytest.mark.real)])
def eval_config(request: pytest.FixtureRequest, small_task, tmp_path: Path) -> Path:
    """The config ``eval_command`` runs: SmolLM2 alone (real), or a scripted expert under its name."""
    _, _, config, task = small_task
    if request.param == "real":
        return config
    rows = [json.loads(line) for line in task.read_text().splitlines()]
    answers = {r["question"]: f"Answer: {r['answer'] if i % 2 == 0 else 'D'}" for i, r in enumerate(rows)}
    fake = tmp_path / "fake.yaml"
    fake.write_text(json.dumps({"replace_pool": True, "default_expert": "smollm2-135m", "experts": {
        "smollm2-135m": {"backend": "fake", "routed": True, "params": {"answers": answers}}}}))
    return fake


def test_eval_regenerates_exactly_the_bad_row(small_task, eval_config: Path, tmp_path: Path) -> None:
    _, _, _, task = small_task
    config = eval_config
    cache = tmp_path / "shared.sqlite"
    first = symoe(*eval_command(config, task, tmp_path / "first", cache), timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    stats = json.loads((tmp_path / "first" / "results.json").read_text())["stats"]
    assert stats["questions"] == 4 and stats["generated"] == stats["generations_needed"] >= 4
    assert stats["bad_cache_rows"] == 0

    sql(cache, "UPDATE generations SET result='{oops' WHERE rowid = (SELECT min(rowid) FROM generations)")
    second = symoe(*eval_command(config, task, tmp_path / "second", cache), timeout=600)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "Traceback" not in second.stderr
    again = json.loads((tmp_path / "second" / "results.json").read_text())["stats"]
    assert again["generated"] == 1 and again["bad_cache_rows"] == 1
    assert again["from_cache"] == stats["generations_needed"] - 1
    assert samples(tmp_path / "second") == samples(tmp_path / "first")
    db = sqlite3.connect(cache)
    try:
        rows = [r[0] for r in db.execute("SELECT result FROM generations")]
    finally:
        db.close()
    assert len(rows) == stats["generations_needed"] and all(r.startswith("{\"") for r in rows), "not overwritten"


# ---------------------------------------------------------------- the document index


EMB = EmbeddingConfig()
DOCS = [("Mitochondria", "The mitochondrion is the powerhouse of the cell and makes ATP."),
        ("Photosynthesis", "Plants turn light, water and carbon dioxide into sugar and oxygen."),
        ("Volcano", "A volcano is an opening in the crust through which lava and ash erupt."),
        ("Tides", "Tides are caused mostly by the gravitational pull of the Moon on the oceans."),
        ("Saturn", "Saturn is the sixth planet from the Sun and has a large ring system."),
        ("Enzymes", "Enzymes are proteins that speed up chemical reactions in living things.")]


@pytest.fixture(scope="module")
def built_index(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(documents file, index folder): a small real index (real embedding model)."""
    root = tmp_path_factory.mktemp("index")
    docs = root / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": f"d{i}", "title": t, "text": text * 3}) + "\n"
                            for i, (t, text) in enumerate(DOCS * 20)))
    index_dir = root / "index"
    report = build_index([docs], index_dir, EMB)
    assert report.chunks_total == len(DOCS) * 20 and (index_dir / CHUNKS_FILE).stat().st_size >= 8 * PAGE
    return docs, index_dir


INDEX_DAMAGE: dict[str, tuple[str, Callable[[Path], None]]] = {
    "chunks truncated": (CHUNKS_FILE, truncate),
    "chunks random bytes": (CHUNKS_FILE, random_bytes),
    "chunks corrupt page": (CHUNKS_FILE, corrupt_page),
    "row deleted": (CHUNKS_FILE, lambda p: sql(p, "DELETE FROM chunks WHERE id = 5")),
    "row id garbled": (CHUNKS_FILE, lambda p: sql(p, "UPDATE chunks SET id = 100000 WHERE id = 5")),
    "row text garbled": (CHUNKS_FILE, lambda p: sql(p, "UPDATE chunks SET text = NULL WHERE id = 5")),
    "faiss truncated": (INDEX_FILE, truncate),
    "faiss random bytes": (INDEX_FILE, random_bytes),
}


def damaged_index(index_dir: Path, where: Path, kind: str) -> Path:
    copy = where / "index"
    shutil.copytree(index_dir, copy)
    name, damage = INDEX_DAMAGE[kind]
    damage(copy / name)
    return copy


@pytest.mark.real
@pytest.mark.parametrize("kind", list(INDEX_DAMAGE))
def test_damaged_index_is_refused_by_the_library(built_index, tmp_path: Path, kind: str) -> None:
    _, index_dir = built_index
    assert len(open_index(index_dir, EMB).search("What makes ATP in a cell?", 3)) == 3
    copy = damaged_index(index_dir, tmp_path, kind)
    for action in (lambda: open_index(copy, EMB), lambda: check_index(copy)):
        with pytest.raises(SymoeError) as info:
            action()
        message = str(info.value)
        assert "\n" not in message and str(copy) in message and "--rebuild" in message, message
    config = load_config()
    config.retrieval.index = copy
    retriever, problem = Pipeline(config).retriever()  # what `symoe ask`'s gate sees
    assert retriever is None and problem is not None and "--rebuild" in problem


@pytest.mark.real
def test_row_found_garbled_by_a_search_is_one_error(built_index, tmp_path: Path) -> None:
    """Text that is not UTF-8 passes the checks at open; the search that reads it says so."""
    _, index_dir = built_index
    copy = tmp_path / "index"
    shutil.copytree(index_dir, copy)
    sql(copy / CHUNKS_FILE, "UPDATE chunks SET text = CAST(x'ff' || CAST(text AS BLOB) AS TEXT)")
    retriever = open_index(copy, EMB)
    with pytest.raises(SymoeError) as info:
        retriever.search("What makes ATP in a cell?", 3)
    message = str(info.value)
    assert "\n" not in message and "damaged" in message and "--rebuild" in message, message


@pytest.mark.real
@pytest.mark.parametrize("kind", ["chunks corrupt page", "row deleted", "faiss truncated"])
def test_cli_damaged_index_is_one_line(built_index, tmp_path: Path, kind: str) -> None:
    docs, index_dir = built_index
    copy = damaged_index(index_dir, tmp_path, kind)
    name = INDEX_DAMAGE[kind][0]
    before = digest(copy / name)
    one_error_line(symoe("index", "search", "--index", str(copy), "What makes ATP?"), str(copy), "--rebuild")
    one_error_line(symoe("index", "info", "--index", str(copy)), str(copy), "--rebuild")
    one_error_line(symoe("index", "build", str(docs), "--index", str(copy)), str(copy), "--rebuild")
    assert digest(copy / name) == before, "a refused build changed the index"


@pytest.mark.real
def test_cli_rebuild_repairs_a_damaged_index(built_index, tmp_path: Path) -> None:
    docs, index_dir = built_index
    copy = damaged_index(index_dir, tmp_path, "chunks random bytes")
    rebuilt = symoe("index", "build", str(docs), "--index", str(copy), "--rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr[-2000:]
    info = symoe("index", "info", "--index", str(copy))
    assert info.returncode == 0 and "health: ok" in info.stdout, info.stdout + info.stderr
    found = symoe("index", "search", "--index", str(copy), "-k", "2", "--json", "What makes ATP?")
    assert found.returncode == 0, found.stderr[-2000:]
    assert "Mitochondria" in [h["title"] for h in json.loads(found.stdout)]


@pytest.mark.real
def test_write_interrupted_before_commit_is_rolled_back(built_index, tmp_path: Path) -> None:
    """A build killed mid-write leaves a hot ``chunks.sqlite-journal``: the next search rolls it
    back (a read-only connection could not) and finds the index as it was."""
    _, index_dir = built_index
    work = tmp_path / "work"
    shutil.copytree(index_dir, work)
    writer = sqlite3.connect(work / CHUNKS_FILE)
    try:
        writer.execute("PRAGMA cache_size=1")  # spill the uncommitted change into the file
        writer.execute("DELETE FROM chunks WHERE id < 50")
        writer.executemany("INSERT INTO chunks (id, file, text) VALUES (?, 'x', ?)",
                           [(10_000 + i, "y" * 900) for i in range(300)])
        shutil.copytree(work, tmp_path / "index")  # what a kill at this moment leaves
    finally:
        writer.rollback()
        writer.close()
    copy = tmp_path / "index"
    assert (copy / f"{CHUNKS_FILE}-journal").exists()
    assert check_index(copy).chunks == len(DOCS) * 20
    assert len(open_index(copy, EMB).search("What makes ATP in a cell?", 3)) == 3


@pytest.mark.real
def test_unfinished_first_build_is_started_again(built_index, tmp_path: Path) -> None:
    """Chunk store and vectors without metadata (a first build killed before it renamed
    meta.json): the next build starts from scratch instead of failing on the leftovers."""
    docs, index_dir = built_index
    copy = tmp_path / "index"
    copy.mkdir()
    (copy / CHUNKS_FILE).write_bytes(os.urandom(3 * PAGE))
    (copy / f"{CHUNKS_FILE}-journal").write_bytes(os.urandom(PAGE))
    report = build_index([docs], copy, EMB)
    assert report.chunks_total == len(DOCS) * 20 and check_index(copy).chunks == report.chunks_total
