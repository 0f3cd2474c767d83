"""Model files under concurrency and damage, with real files and real processes.

- Many processes preparing the same expert at once on a fresh home: one assembles it (a unique
  temporary file, then an atomic rename, under ``<home>/models/<name>.lock``), the others wait
  and find it finished; nobody ever reads half a file (each checks the sha256 itself).
- ``symoe models prepare`` repairs a corrupt file assembled from package parts and reports a
  corrupt file of the user's own.
- An unusable home (``/dev/null``, read-only, uncreatable) is one ``error:`` line, exit 2;
  ``SYMOE_HOME=`` (empty) means the default home.

Small cases use a package made on the fly under ``tmp_path`` (random bytes in three parts:
assembling and hashing do not care what the bytes mean); the ``real`` ones use the installed
default-pool packages (gemma3-270m, 253 MB). No model is ever run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import one_error_line

from agents.errors import SymoeError
from agents.files import exclusive_lock
from agents.paths import default_home, writable_dir
from agents.pool import (
    ExpertSpec,
    ModelFileError,
    ModelSource,
    ensure_ready,
    prepare,
    sha256_file,
    status,
    verify,
)
from orchestrator.config import default_pool

ROOT = Path(__file__).resolve().parents[1]
IS_ROOT = os.geteuid() == 0

# A child process: load the spec, wait for "go" on stdin (so all start together), prepare,
# then hash the file itself; print one JSON line.
CHILD = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from agents.paths import default_home
    from agents.pool import ExpertSpec, prepare, sha256_file
    spec = ExpertSpec.model_validate_json(sys.argv[1])
    print("loaded", flush=True)
    sys.stdin.readline()
    try:
        path = prepare(spec, default_home())
        print(json.dumps({"path": str(path), "sha256": sha256_file(path)}), flush=True)
    except Exception as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        raise
""")


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **extra}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), extra.get("PYTHONPATH", "")) if p)
    return env


def race(spec: ExpertSpec, home: Path, n: int = 4, pythonpath: str = "") -> list[dict[str, str]]:
    """Start ``n`` processes that each ``prepare(spec, home)`` at the same moment."""
    env = _env(SYMOE_HOME=str(home), PYTHONPATH=pythonpath)
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, spec.model_dump_json()], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
             for _ in range(n)]
    try:
        for proc in procs:  # every child has imported and is waiting
            assert proc.stdout is not None and proc.stdout.readline().strip() == "loaded", proc.stderr.read()  # type: ignore[union-attr]
        for proc in procs:  # now all at once
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = []
        for proc in procs:
            out, errs = proc.communicate(timeout=300)
            assert proc.returncode == 0, f"child failed ({proc.returncode}): {out}{errs[-3000:]}"
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def flip_middle_byte(path: Path) -> None:
    """Damage a file without changing its size."""
    with open(path, "r+b") as handle:
        handle.seek(path.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0xFF]))


def leftovers(home: Path, name: str) -> list[str]:
    """Files in ``<home>/models`` other than the model, its stamp and its lock."""
    keep = {f"{name}.gguf", f"{name}.verified.json", f"{name}.lock"}
    return sorted(p.name for p in (home / "models").iterdir() if p.name not in keep)


def symoe(*args: str, home: Path | str, pythonpath: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, text=True,
                          env=_env(SYMOE_HOME=str(home), PYTHONPATH=pythonpath, **env), cwd=ROOT, timeout=600)


# --------------------------------------------------------------- a tiny parts package


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ExpertSpec]:
    """A package ``symoe_tiny_parts`` with 3 MB of random bytes in three parts, and its expert."""
    root = tmp_path_factory.mktemp("site")
    data = root / "symoe_tiny_parts" / "data"
    data.mkdir(parents=True)
    (root / "symoe_tiny_parts" / "__init__.py").write_text("")
    blob = os.urandom(3 << 20)
    for i in range(3):
        (data / f"part{i}.bin").write_bytes(blob[i << 20:(i + 1) << 20])
    source = ModelSource(kind="package_parts", package="symoe_tiny_parts", sha256=hashlib.sha256(blob).hexdigest(),
                         size=len(blob), pip=["symoe-tiny-parts==1.0"],
                         files=[f"symoe_tiny_parts/data/part{i}.bin" for i in range(3)])
    return root, ExpertSpec(name="tiny", source=source)


@pytest.fixture
def tiny_spec(tiny: tuple[Path, ExpertSpec], monkeypatch: pytest.MonkeyPatch) -> ExpertSpec:
    monkeypatch.syspath_prepend(str(tiny[0]))
    return tiny[1]


def test_processes_racing_on_a_fresh_home_all_get_the_whole_file(tiny: tuple[Path, ExpertSpec],
                                                                 tmp_path: Path) -> None:
    root, spec = tiny
    for round_ in range(5):
        home = tmp_path / f"home{round_}"
        results = race(spec, home, n=4, pythonpath=str(root))
        assert all(r["sha256"] == spec.source.sha256 for r in results), results  # type: ignore[union-attr]
        assert {r["path"] for r in results} == {str(home / "models" / "tiny.gguf")}
        assert leftovers(home, "tiny") == []  # no temporary file left behind


def _waits_for_a_lock(pid: int) -> bool:
    """Whether process ``pid`` is blocked on a file lock (a ``->`` line in /proc/locks)."""
    return any(line.split()[1] == "->" and str(pid) in line.split()
               for line in Path("/proc/locks").read_text().splitlines())


def test_a_process_waiting_for_the_lock_finds_the_file_finished(tiny: tuple[Path, ExpertSpec],
                                                                tmp_path: Path) -> None:
    root, spec = tiny
    home = tmp_path / "home"
    path = writable_dir(home / "models", "model files") / "tiny.gguf"
    env = _env(SYMOE_HOME=str(home), PYTHONPATH=str(root))
    with exclusive_lock(path.with_suffix(".lock")):  # this process plays the one assembling
        child = subprocess.Popen([sys.executable, "-c", CHILD, spec.model_dump_json()], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        try:
            assert child.stdout is not None and child.stdin is not None
            assert child.stdout.readline().strip() == "loaded"
            child.stdin.write("go\n")
            child.stdin.flush()
            deadline = time.monotonic() + 60
            while not _waits_for_a_lock(child.pid):
                assert child.poll() is None and time.monotonic() < deadline, "the child did not wait for the lock"
                time.sleep(0.05)
            parts = [root / f for f in spec.source.files]  # type: ignore[union-attr]
            path.write_bytes(b"".join(p.read_bytes() for p in parts))
            verify(spec, home)  # finished and stamped before the lock is released
            mtime = path.stat().st_mtime_ns
        except BaseException:
            child.kill()
            raise
    out, errs = child.communicate(timeout=60)
    assert child.returncode == 0, errs
    assert json.loads(out.splitlines()[-1])["sha256"] == spec.source.sha256  # type: ignore[union-attr]
    assert path.stat().st_mtime_ns == mtime  # the waiting process did not assemble it again


def test_stale_temporary_files_are_removed_and_the_old_file_is_replaced_whole(tiny_spec: ExpertSpec,
                                                                             tmp_path: Path) -> None:
    home = tmp_path / "home"
    models = writable_dir(home / "models", "model files")
    (models / ".tiny.gguf.abc123.tmp").write_bytes(b"half a model from a process that was killed")
    (models / "tiny.part").write_bytes(b"left by an older symoe")
    path = prepare(tiny_spec, home)
    assert path is not None and sha256_file(path) == tiny_spec.source.sha256  # type: ignore[union-attr]
    assert leftovers(home, "tiny") == []
    json.loads((models / "tiny.verified.json").read_text())  # the stamp is whole JSON


def test_repair_reassembles_a_corrupt_parts_file(tiny_spec: ExpertSpec, tmp_path: Path) -> None:
    home = tmp_path / "home"
    path = prepare(tiny_spec, home)
    assert path is not None
    flip_middle_byte(path)
    with pytest.raises(ModelFileError, match="corrupt.*symoe models prepare tiny"):
        prepare(tiny_spec, home)  # without repair: reported, with what to do
    assert status(tiny_spec, home) == "corrupt"
    with pytest.raises(ModelFileError, match="corrupt"):
        ensure_ready(tiny_spec, home)  # `symoe ask` does not rewrite files behind the user's back
    told: list[str] = []
    assert prepare(tiny_spec, home, repair=True, on_repair=told.append) == path
    assert len(told) == 1 and "corrupt" in told[0] and str(path) in told[0]
    assert status(tiny_spec, home) == "ready" and sha256_file(path) == tiny_spec.source.sha256  # type: ignore[union-attr]
    with open(path, "r+b") as handle:  # a truncated file is repaired too (found by size)
        handle.truncate(1000)
    told.clear()
    assert prepare(tiny_spec, home, repair=True, on_repair=told.append) == path
    assert "has 1000 bytes" in told[0] and status(tiny_spec, home) == "ready"
    assert leftovers(home, "tiny") == []


def test_cli_repairs_a_corrupt_parts_file_and_reports_a_corrupt_own_file(tiny: tuple[Path, ExpertSpec],
                                                                         tiny_spec: ExpertSpec,
                                                                         tmp_path: Path) -> None:
    root, spec = tiny
    home = tmp_path / "home"
    own = tmp_path / "own.gguf"
    own.write_bytes(b"x" * 1000)
    config = tmp_path / "symoe.yaml"
    bad = "0" * 64
    config.write_text(
        f"replace_pool: true\ndefault_expert: tiny\nexperts:\n  tiny: {spec.model_dump_json()}\n"
        f"  mine:\n    path: {own}\n    source: {{kind: package_file, package: symoe_tiny_parts, sha256: '{bad}', "
        f"files: [symoe_tiny_parts/data/part0.bin]}}\n"
        f"  mine-parts:\n    path: {own}\n    source: {{kind: package_parts, sha256: '{bad}', "
        f"files: [symoe_tiny_parts/data/part0.bin]}}\n")
    path = prepare(spec, home)
    assert path == home / "models" / "tiny.gguf"
    flip_middle_byte(path)
    fixed = symoe("models", "prepare", "tiny", "--config", str(config), home=home, pythonpath=str(root))
    assert fixed.returncode == 0, fixed.stderr
    assert "re-assembling it from its packages" in fixed.stderr and "tiny: repaired" in fixed.stderr
    assert sha256_file(path) == spec.source.sha256  # type: ignore[union-attr]
    assert status(spec, home) == "ready" and leftovers(home, "tiny") == []
    # the user's own file (`path:` with a hash) is never rewritten: it is an error, saying corrupt
    for name in ("mine", "mine-parts"):
        mine = symoe("models", "prepare", name, "--config", str(config), home=home, pythonpath=str(root))
        assert mine.returncode == 2 and "Traceback" not in mine.stderr, mine.stderr
        assert "is corrupt" in mine.stderr and str(own) in mine.stderr and "good copy" in mine.stderr, mine.stderr
        assert "repaired" not in mine.stderr and own.read_bytes() == b"x" * 1000


# ------------------------------------------------------------------------ the home


def test_empty_symoe_home_means_the_default(tmp_path: Path) -> None:
    code = "from agents.paths import default_home; print(default_home())"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env=_env(SYMOE_HOME="", XDG_CACHE_HOME=str(tmp_path / "xdg")))
    assert proc.stdout.strip() == str(tmp_path / "xdg" / "symoe"), proc.stderr


def test_empty_symoe_home_means_the_default_for_the_config(tmp_path: Path) -> None:
    code = "from orchestrator.config import load_config; print(load_config().home)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env=_env(SYMOE_HOME="", XDG_CACHE_HOME=str(tmp_path / "xdg")))
    assert proc.stdout.strip() == str(tmp_path / "xdg" / "symoe"), proc.stderr


def test_writable_dir_is_one_line_naming_the_path(tmp_path: Path) -> None:
    assert writable_dir(tmp_path / "a" / "b", "things") == tmp_path / "a" / "b"
    (tmp_path / "file").write_text("")
    with pytest.raises(SymoeError) as caught:
        writable_dir(tmp_path / "file" / "models", "model files")
    message = str(caught.value)
    assert "\n" not in message and f"{tmp_path / 'file'} is not a directory" in message and "SYMOE_HOME" in message
    assert default_home() is not None


def _read_only_home(tmp_path: Path) -> Path:
    """A home that cannot be written: a chmod 0o500 folder, or (as root, whom chmod does not
    stop) a folder that cannot be created under /sys."""
    if IS_ROOT:
        return Path("/sys/symoe-test-home")
    home = tmp_path / "ro"
    home.mkdir()
    home.chmod(0o500)
    return home


@pytest.mark.parametrize(("where", "names"), [
    ("/dev/null", ["smollm2-135m"]),
    ("read-only", ["gemma3-270m"]),
    ("/proc", ["smollm2-135m", "gemma3-270m"]),  # two experts, still one line
])
def test_an_unusable_home_is_one_error_line(where: str, names: list[str], tmp_path: Path) -> None:
    home = {"/dev/null": Path("/dev/null"), "/proc": Path("/proc/symoe-test-home"),
            "read-only": _read_only_home(tmp_path)}[where]
    try:
        line = one_error_line(symoe("models", "prepare", *names, home=home))
    finally:
        if home.is_relative_to(tmp_path):
            home.chmod(0o700)
    assert str(home) in line and "SYMOE_HOME" in line, line
    if where == "/dev/null":
        assert "/dev/null is not a directory" in line


def test_the_library_raises_the_same_error(tmp_path: Path) -> None:
    spec = default_pool()["smollm2-135m"]
    with pytest.raises(SymoeError, match="/dev/null is not a directory"):
        prepare(spec, Path("/dev/null"))


# ------------------------------------------------------------ the default pool (real)


@pytest.mark.real
def test_four_processes_first_use_of_gemma_20_times_in_a_row(tmp_path: Path) -> None:
    spec = default_pool()["gemma3-270m"]
    assert spec.source is not None and spec.source.kind == "package_parts"
    start = time.monotonic()
    for round_ in range(20):
        home = tmp_path / f"home{round_}"
        results = race(spec, home, n=4)
        assert [r["sha256"] for r in results] == [spec.source.sha256] * 4, (round_, results)
        assert leftovers(home, "gemma3-270m") == [], round_
        shutil.rmtree(home)
    print(f"20 rounds of 4 processes in {time.monotonic() - start:.0f} s")


@pytest.mark.real
def test_cli_repairs_a_damaged_gemma(tmp_path: Path) -> None:
    spec = default_pool()["gemma3-270m"]
    assert spec.source is not None
    home = tmp_path / "home"
    path = prepare(spec, home)
    assert path == home / "models" / "gemma3-270m.gguf"
    flip_middle_byte(path)
    proc = symoe("models", "prepare", "gemma3-270m", home=home)
    assert proc.returncode == 0, proc.stderr
    assert "gemma3-270m: repaired" in proc.stderr and "corrupt" in proc.stderr
    assert status(spec, home) == "ready" and sha256_file(path) == spec.source.sha256
    assert leftovers(home, "gemma3-270m") == []
