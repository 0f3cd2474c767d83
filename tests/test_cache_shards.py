"""``symoe cache export|import``: the generation cache as content-addressed, append-only
JSONL.gz shards (agents/cache_shards.py). Fast: synthetic generations, no model."""

from __future__ import annotations

import gzip
import hashlib
import json
import sqlite3
from pathlib import Path

import pytest
from conftest import one_error_line

from agents.backends import GenerationRequest
from agents.backends.base import Generation, Usage
from agents.cache import GenerationCache, request_key
from agents.cache_shards import ShardError, export_shards, import_shards
from agents.pool import ExpertSpec

SPECS = [ExpertSpec(name=f"m{i}", backend="llamacpp", path=f"/models/m{i}.gguf") for i in range(3)]


def key(i: int) -> str:
    """The cache's real key for question ``i`` on one of three models."""
    request = GenerationRequest.user(f"Question {i}: what is {i} + {i}?", max_tokens=64)
    return request_key(SPECS[i % 3], request)


def generation(i: int, text: str | None = None) -> Generation:
    return Generation(text=text or f"Answer {i}: " + "the reasoning goes on. " * (i % 7 + 1) + f"{2 * i}",
                      model=SPECS[i % 3].name, usage=Usage(prompt_tokens=20 + i, completion_tokens=30, seconds=0.5),
                      finish_reason="stop")


def filled(path: Path, n: int = 120) -> GenerationCache:
    cache = GenerationCache(path)
    for i in range(n):
        cache.put(key(i), SPECS[i % 3].name, generation(i))
    return cache


@pytest.fixture
def cache(tmp_path: Path):
    store = filled(tmp_path / "source.sqlite")
    yield store
    store.close()


def shards(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.jsonl.gz"))


def test_round_trip_gives_identical_generations(cache: GenerationCache, tmp_path: Path) -> None:
    report = export_shards(cache, tmp_path / "shards")
    assert (report.selected, report.written, len(report.shards)) == (120, 120, 1)
    target = GenerationCache(tmp_path / "fresh.sqlite")
    got = import_shards(target, [tmp_path / "shards"])
    assert (got.files, got.rows_read, got.added, got.present, got.conflicts, got.bad_rows, got.bad_files) == \
        (1, 120, 120, 0, [], [], [])
    for i in range(120):
        assert target.get(key(i)) == cache.get(key(i)) == generation(i)
    # the time each row was first stored travels with it
    assert {k: at for k, _, _, at in target.rows()} == {k: at for k, _, _, at in cache.rows()}
    target.close()


def test_shards_are_bounded_sorted_and_content_addressed(cache: GenerationCache, tmp_path: Path) -> None:
    report = export_shards(cache, tmp_path / "shards", max_bytes=1500)
    assert len(report.shards) > 3
    keys: list[str] = []
    for path in report.shards:
        data = path.read_bytes()
        assert len(data) <= 1500
        assert path.name == hashlib.sha256(data).hexdigest()[:16] + ".jsonl.gz"
        rows = [json.loads(line) for line in gzip.decompress(data).splitlines()]
        assert all(set(row) == {"key", "expert", "generation", "at"} for row in rows)
        keys += [row["key"] for row in rows]
    assert keys == sorted(keys) and len(keys) == len(set(keys)) == 120  # sorted within and across shards


def test_same_rows_give_the_same_bytes(cache: GenerationCache, tmp_path: Path) -> None:
    first = export_shards(cache, tmp_path / "a", max_bytes=2000)
    copy = GenerationCache(tmp_path / "copy.sqlite")
    import_shards(copy, [tmp_path / "a"])
    second = export_shards(copy, tmp_path / "b", max_bytes=2000)  # another cache, same rows
    copy.close()
    assert [p.name for p in first.shards] == [p.name for p in second.shards]
    assert [p.read_bytes() for p in first.shards] == [p.read_bytes() for p in second.shards]


def test_export_is_append_only_and_idempotent(cache: GenerationCache, tmp_path: Path) -> None:
    folder = tmp_path / "shards"
    export_shards(cache, folder, max_bytes=2000)
    before = {p.name: p.stat().st_mtime_ns for p in shards(folder)}
    again = export_shards(cache, folder, max_bytes=2000)
    assert (again.written, again.already_in_folder, again.shards) == (0, 120, [])
    for i in range(120, 130):
        cache.put(key(i), SPECS[i % 3].name, generation(i))
    more = export_shards(cache, folder, max_bytes=2000)
    assert (more.written, more.already_in_folder) == (10, 120) and more.shards
    after = {p.name: p.stat().st_mtime_ns for p in shards(folder)}
    assert {n: t for n, t in after.items() if n in before} == before  # no shard rewritten
    assert set(after) == set(before) | {p.name for p in more.shards}


def test_export_selects_by_expert_and_time(cache: GenerationCache, tmp_path: Path) -> None:
    only = export_shards(cache, tmp_path / "m1", experts={"m1"})
    assert only.written == 40
    rows = [json.loads(line) for p in only.shards for line in gzip.decompress(p.read_bytes()).splitlines()]
    assert {row["expert"] for row in rows} == {"m1"}
    stamps = sorted(at for _, _, _, at in cache.rows())
    middle = stamps[60]
    early = export_shards(cache, tmp_path / "early", until=middle)
    late = export_shards(cache, tmp_path / "late", since=middle)
    assert early.written + late.written == 120 and early.written == sum(s < middle for s in stamps)
    none = export_shards(cache, tmp_path / "none", since=stamps[-1] + 1)
    assert (none.written, none.shards) == (0, [])


def test_import_is_idempotent_and_deduplicates(cache: GenerationCache, tmp_path: Path) -> None:
    export_shards(cache, tmp_path / "a", max_bytes=2000)
    export_shards(cache, tmp_path / "b", experts={"m0"})  # the same rows again, other shards
    target = GenerationCache(tmp_path / "fresh.sqlite")
    first = import_shards(target, [tmp_path / "a", tmp_path / "b"])
    assert (first.rows_read, first.added, first.present) == (160, 120, 40)
    second = import_shards(target, [tmp_path / "a"])
    assert (second.added, second.present, second.conflicts) == (0, 120, [])
    assert target.count() == 120
    target.close()


def test_conflict_is_reported_and_the_stored_value_kept(cache: GenerationCache, tmp_path: Path) -> None:
    report = export_shards(cache, tmp_path / "shards")
    target = GenerationCache(tmp_path / "other.sqlite")
    mine = generation(5, text="a different answer, generated here")
    target.put(key(5), "m2", mine)
    target.put(key(6), "m0", generation(6).model_copy(update={"usage": Usage(prompt_tokens=26,
                                                                               completion_tokens=30, seconds=9.0)}))
    got = import_shards(target, [tmp_path / "shards"])
    assert got.conflicts == [(key(5), str(report.shards[0]))]
    assert (got.added, got.present) == (118, 1)  # the same text in other seconds is the same generation
    assert target.get(key(5)) == mine
    target.close()


def test_unreadable_stored_row_is_skipped_on_export_and_replaced_on_import(cache: GenerationCache,
                                                                           tmp_path: Path) -> None:
    export_shards(cache, tmp_path / "shards")
    target = GenerationCache(tmp_path / "damaged.sqlite")
    target.put(key(3), "m0", generation(3))
    with sqlite3.connect(tmp_path / "damaged.sqlite") as db:
        db.execute("UPDATE generations SET result='{oops' WHERE key=?", (key(3),))
    assert export_shards(target, tmp_path / "out").unreadable == 1
    got = import_shards(target, [tmp_path / "shards"])
    assert got.added == 120 and not got.conflicts and target.get(key(3)) == generation(3)
    target.close()


@pytest.mark.parametrize("damage", ["flip", "truncate", "rename"])
def test_damaged_shard_is_one_line_naming_it(cache: GenerationCache, tmp_path: Path, damage: str) -> None:
    folder = tmp_path / "shards"
    first, *rest = export_shards(cache, folder, max_bytes=2000).shards
    data = first.read_bytes()
    if damage == "flip":
        first.write_bytes(data[:40] + bytes([data[40] ^ 0xFF]) + data[41:])
        bad = first
    elif damage == "truncate":
        first.write_bytes(data[: len(data) // 2])
        bad = first
    else:
        bad = first.with_name("0123456789abcdef.jsonl.gz")
        first.rename(bad)
    target = GenerationCache(tmp_path / "fresh.sqlite")
    got = import_shards(target, [folder])
    assert len(got.bad_files) == 1 and str(bad) in got.bad_files[0] and "\n" not in got.bad_files[0]
    assert "damaged or renamed" in got.bad_files[0]
    rows_elsewhere = sum(len(gzip.decompress(p.read_bytes()).splitlines()) for p in rest)
    assert got.added == rows_elsewhere and not got.bad_rows  # the rest is imported; nothing of the bad one
    target.close()
    with pytest.raises(ShardError, match="move it out"):  # an export never writes beside a damaged shard
        export_shards(cache, folder)


def test_bad_rows_are_named_by_file_and_line(tmp_path: Path) -> None:
    good = generation(1).model_dump(mode="json")
    lines = [
        json.dumps({"key": key(1), "expert": "m1", "generation": good, "at": 1.0}),
        "{not json",
        json.dumps({"key": key(2), "expert": "m2", "generation": good}),
        json.dumps({"key": key(3), "expert": "m0", "generation": {"text": 3}, "at": None}),
        json.dumps({"key": "short", "expert": "m0", "generation": good, "at": None}),
        json.dumps({"key": key(4), "expert": "m1", "generation": {**good, "error": "boom"}, "at": None}),
    ]
    data = gzip.compress("\n".join(lines).encode() + b"\n", mtime=0)
    path = tmp_path / f"{hashlib.sha256(data).hexdigest()[:16]}.jsonl.gz"
    path.write_bytes(data)
    target = GenerationCache(tmp_path / "fresh.sqlite")
    got = import_shards(target, [path])
    target.close()
    assert (got.rows_read, got.added, got.bad_files) == (1, 1, [])
    assert [line.split(": ")[0] for line in got.bad_rows] == [f"{path}:{n}" for n in range(2, 7)]
    assert "missing at" in got.bad_rows[1] and "does not parse" in got.bad_rows[2]


def test_old_cache_without_times_opens_and_exports(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE generations (key TEXT PRIMARY KEY, expert TEXT, result TEXT)")
        db.execute("INSERT INTO generations VALUES (?, ?, ?)", (key(0), "m0", generation(0).model_dump_json()))
    old = GenerationCache(path)
    report = export_shards(old, tmp_path / "shards")
    assert report.written == 1 and export_shards(old, tmp_path / "window", since=0.0).written == 0
    old.put(key(1), "m1", generation(1))
    assert [at is None for _, _, _, at in old.rows()] == [k == key(0) for k, _, _, _ in old.rows()]
    old.close()


def test_cli_export_then_import(cache: GenerationCache, tmp_path: Path, symoe_cli) -> None:
    folder = tmp_path / "shards"
    done = symoe_cli("cache", "export", "--cache", str(cache.path), "--expert", "m1", "--expert", "m2",
                     "--since", "2000-01-01", "--output", str(folder), "--max-bytes", "3000")
    assert done.returncode == 0, done.stderr
    assert "written" in done.stdout and " 80 " in done.stdout and len(shards(folder)) > 1
    fresh = tmp_path / "fresh.sqlite"
    first = symoe_cli("cache", "import", str(folder), "--cache", str(fresh))
    assert first.returncode == 0, first.stderr
    target = GenerationCache(fresh)
    assert target.count() == 80 and target.get(key(1)) == generation(1) and target.get(key(0)) is None
    target.close()
    first_shard = shards(folder)[0]
    first_shard.write_bytes(first_shard.read_bytes()[:-5])
    damaged = symoe_cli("cache", "import", str(folder), "--cache", str(fresh))
    assert damaged.returncode == 1 and "damaged or renamed" in damaged.stderr and str(first_shard) in damaged.stderr


def test_cli_bad_input_is_one_error_line(cache: GenerationCache, tmp_path: Path, symoe_cli) -> None:
    one_error_line(symoe_cli("cache", "export", "--cache", str(cache.path), "--since", "last week",
                             "--output", str(tmp_path / "out")), "--since must be an ISO date")
    one_error_line(symoe_cli("cache", "export", "--cache", str(tmp_path / "none.sqlite"),
                             "--output", str(tmp_path / "out")), "no generation cache at")
    assert not (tmp_path / "none.sqlite").exists()  # an export never creates a cache


def test_missing_path_is_refused_before_anything_is_read(tmp_path: Path) -> None:
    target = GenerationCache(tmp_path / "c.sqlite")
    with pytest.raises(ShardError, match="missing does not exist"):
        import_shards(target, [tmp_path / "missing"])
    target.close()
