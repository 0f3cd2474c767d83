"""The rest of the reliability list, each on real files and processes: a full disk while
reports are written, a method whose every generation failed, retrieval asked for without an
index, Ctrl-C, a hung server and the ask deadline, index names that leave the home, a
question longer than every context, an empty generation. Ctrl-C and the full disk run on
scripted experts with a delay per generation and on the small real models (``-m real``):
``small_setup`` is parametrized by backend."""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import one_error_line, spawn
from test_eval_resume import small_setup, stored, with_fake_delay  # noqa: F401  (the fixture: two small experts, 8 ARC questions)

from agents.backends import Generation
from eval.datasets import load_split
from orchestrator.pipeline import checked

SYMOE = [sys.executable, "-m", "orchestrator.cli"]
PROGRESS = (" elapsed, ETA ",)  # progress lines, printed plainly where stderr is not a terminal


def test_an_empty_generation_is_a_failure() -> None:
    assert checked(Generation(text="  \n", model="m")).error == "empty generation"
    assert checked(Generation(text="Answer: 4", model="m")).ok


def test_a_question_longer_than_every_context_is_refused_before_any_model(tmp_path: Path) -> None:
    start = time.monotonic()
    proc = subprocess.run([*SYMOE, "ask", "word " * 20000], capture_output=True, text=True, timeout=300)
    line = one_error_line(proc, beside=PROGRESS)
    assert "tokens, longer than any expert's context" in line and "2048" in line
    assert time.monotonic() - start < 60


@pytest.mark.parametrize("name", ["../../x", "a/b", ".hidden", ".."])
def test_index_names_that_leave_the_home_are_refused(name: str, tmp_path: Path) -> None:
    proc = subprocess.run([*SYMOE, "index", "build", str(tmp_path), "--name", name], capture_output=True, text=True,
                          env={**os.environ, "SYMOE_HOME": str(tmp_path / "home")}, timeout=300)
    assert "plain folder name" in one_error_line(proc, beside=PROGRESS)
    assert not (tmp_path / "x").exists() and not list((tmp_path / "home").glob("**/index.faiss"))


def test_retrieval_always_without_an_index_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"retrieval:\n  index: {tmp_path / 'no-index'}\n")
    proc = subprocess.run([*SYMOE, "ask", "-c", str(config), "--retrieval", "always", "Who wrote Hamlet?"],
                          capture_output=True, text=True, timeout=600)
    line = one_error_line(proc, beside=PROGRESS)
    assert "retrieval was asked for" in line and "no-index" in line


def test_a_method_whose_every_generation_failed_is_not_a_result(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    config = tmp_path / "c.yaml"
    config.write_text(f"experts:\n  dead:\n    backend: openai\n    base_url: http://127.0.0.1:{closed}/v1\n"
                      "    max_retries: 0\n")
    task = tmp_path / "t.jsonl"
    task.write_text('{"id": "q1", "question": "2+2?", "choices": ["3", "4"], "answer": "B", "split": "test"}\n'
                    '{"id": "q2", "question": "3+3?", "choices": ["6", "7"], "answer": "A", "split": "test"}\n')
    proc = subprocess.run([*SYMOE, "eval", "-c", str(config), "--tasks", str(task), "--routers", "single:dead",
                           "--output", str(tmp_path / "out")], capture_output=True, text=True, timeout=600)
    line = one_error_line(proc, beside=PROGRESS)
    assert "no generation of single:dead succeeded" in line
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| single:dead |" in table and table.split("| single:dead |")[1].split("\n")[0].strip().endswith("| 2 |")


def hung_server() -> tuple[socket.socket, int]:
    """A server that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            held.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    return sock, sock.getsockname()[1]


def test_a_hung_server_is_reported_and_the_deadline_ends_the_ask(tmp_path: Path) -> None:
    sock, port = hung_server()
    try:
        config = tmp_path / "c.yaml"
        config.write_text(f"experts:\n  slow:\n    backend: openai\n    base_url: http://127.0.0.1:{port}/v1\n"
                          "    timeout_s: 6\n    max_retries: 3\n    params: {load_timeout_s: 6, backoff_s: 0.1}\n")
        start = time.monotonic()
        proc = subprocess.run([*SYMOE, "ask", "-c", str(config), "--model", "slow", "--deadline", "15", "2+2?"],
                              capture_output=True, text=True, timeout=300)
        took = time.monotonic() - start
    finally:
        sock.close()
    line = one_error_line(proc, beside=(*PROGRESS, "note: "))
    assert "no answer within the deadline of 15 s" in line, proc.stderr
    assert f"note: waiting for http://127.0.0.1:{port}/v1 (expert slow)" in proc.stderr
    assert took < 60


def test_ctrl_c_keeps_what_finished_says_so_and_the_run_resumes(small_setup, tmp_path: Path) -> None:  # noqa: F811
    _, task, config = small_setup
    out = tmp_path / "run"
    cmd = [*SYMOE, "eval", "-c", str(config), "--tasks", str(task), "--routers", "single", "--output", str(out)]
    proc = spawn(cmd, tmp_path / "run.log")
    deadline = time.time() + 600
    while stored(out) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    assert proc.finish(timeout=120) == 130
    err = proc.output()
    assert "interrupted: every finished generation is kept" in err and "Traceback" not in err
    kept = stored(out)
    assert kept >= 3
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-2000:]
    stats = json.loads((out / "results.json").read_text())["stats"]
    assert stats["generated"] == stats["generations_needed"] - kept


def test_a_full_disk_while_writing_reports_keeps_the_old_reports_whole(small_setup, tmp_path: Path) -> None:  # noqa: F811
    """The second run finds every generation cached and fails writing its reports: a process
    limit on file size (RLIMIT_FSIZE, which Python turns into OSError EFBIG) stands in for a
    full disk. 32 KiB lets SQLite read the cache (its -shm file is 32 KiB) and stops the
    samples file, which 24 questions make larger."""
    _, _, config = small_setup
    config = with_fake_delay(config, 0)  # nothing here needs a run stopped part-way
    task = tmp_path / "arc24.jsonl"
    task.write_text("".join(q.model_dump_json() + "\n" for q in load_split("arc_challenge", "test", limit=24, seed=0)))
    out = tmp_path / "run"
    cmd = [*SYMOE, "eval", "-c", str(config), "--tasks", str(task), "--routers", "single", "--output", str(out),
           "--log-samples"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-2000:]
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.suffix in (".json", ".md", ".png",
                                                                                           ".csv", ".jsonl")}
    limit = 32768
    assert len(before["samples.jsonl"]) > limit, "the samples file must outgrow the limit for this test to test"

    def small_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    full = subprocess.run(cmd, capture_output=True, text=True, timeout=900, preexec_fn=small_disk)
    line = one_error_line(full, beside=PROGRESS)
    assert "cannot write the reports" in line and "unchanged" in line
    after = {name: (out / name).read_bytes() for name in before}
    assert after == before, "a report was replaced by a partial one"
    assert not list(out.glob(".*.tmp")) and not list(out.glob(".staging-*")), "temporary files were left behind"
