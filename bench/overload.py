"""Overload and fault bench of ``symoe serve`` (issue 26): bounded in count and time, loopback only.

    python bench/overload.py [--burst 24] [--sustain-s 60] [--rate 1.0] [--disconnects 6] [--killed 4]
                             [--degrade-to R] [--out F]

Starts a second ``symoe serve`` (the *remote*: a subprocess on a free loopback port that
serves one small model, qwen-coder-0.5b, to the main server as an ``openai`` expert named
``remote-0.5b``), then the main ``symoe serve`` (a subprocess on another free loopback port,
the real default pool plus ``remote-0.5b``) with ``server: {max_in_flight: 4, max_queued: 8,
queue_wait_s: 10, deadline_s: 15, degrade_to: cheapest}`` (``--degrade-to`` names another
router), and drives it with the official ``openai`` client:

- **burst**: ``--burst`` concurrent routed (``symoe``) short word problems at once;
- **sustained**: open-loop arrivals at ``--rate`` requests per second for ``--sustain-s``
  seconds (above what 4 slots on this machine can answer), each a fresh word problem;
- **disconnect**: ``--disconnects`` streaming requests to the default expert for a long
  answer, each closed by its client after the first content chunk;
- **killed**: ``--killed`` concurrent requests naming ``remote-0.5b``; once the remote is
  generating for them it is killed (SIGKILL), then ``--killed`` more requests name it one
  after another. Each must still be answered (by ``degrade_to``, its record saying why)
  within its deadline plus 1 s.

Per phase it prints the status codes, p50/p99 latency, how many answers were degraded or
cut by the deadline, how many took longer than the deadline plus 1 s, the most requests the
server ran at once (``/metrics``), the server's CPU-seconds in the 2 s and the 2-10 s after
the last response (``/proc/PID/stat``), its RSS, threads and open file descriptors before
and after (after: 10 s after the last response), and the latency of one request sent after
the load against the same kind of request sent before it: routed, to the default expert,
and a one-line sum to the smallest expert (a probe); the killed phase compares a request to
the degrade target (a local expert) before and after the kill, and one naming the remote
expert (answered by it before, by the fallback after). Each question is fresh, so the
generation cache answers none of them.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import openai

ROOT = Path(__file__).resolve().parents[1]
CONFIG = """experts:
  remote-0.5b:
    backend: openai
    base_url: http://127.0.0.1:{remote_port}/v1
    model: qwen-coder-0.5b
    method: direct
    routed: false
    max_retries: 0
    timeout_s: 30
    description: qwen-coder-0.5b served by a second symoe serve (the bench kills it)
server:
  max_in_flight: 4
  max_queued: 8
  queue_wait_s: 10
  deadline_s: 15
  degrade_to: {degrade_to}
  degrade_when_queued: 1
"""
TICK = os.sysconf("SC_CLK_TCK")
DEFAULT = "qwen-coder-1.5b"  # the default pool's default expert (what degraded requests get)
REMOTE = "remote-0.5b"  # the expert another process serves (the killed phase)
PROBE = "smollm2-135m"  # the smallest expert: a probe that answers within the deadline even on a busy machine
EVENTS = ("admitted", "rejected", "cancelled", "degraded", "fell_back", "hedged", "timed_out", "unserved")
DEADLINE_S = 15.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def probe(rng: random.Random) -> str:
    return f"What is {rng.randint(100, 999)} + {rng.randint(100, 999)}?"


def problem(rng: random.Random) -> str:
    a, b = rng.randint(12, 995), rng.randint(3, 99)
    return f"A shop sells pencils at {a} cents each. How many cents do {b} pencils cost?"


class Server:
    """``symoe serve`` as a subprocess on a free loopback port, ready when ``/health`` answers."""

    def __init__(self, folder: Path, config_text: str, name: str = "serve") -> None:
        config = folder / f"{name}.yaml"
        self.config = config_text
        config.write_text(self.config)
        self.port = free_port()
        self.log = folder / f"{name}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "serve", "--port", str(self.port),
                                          "-c", str(config)], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                         env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"symoe serve exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        self.proc.kill()
        raise SystemExit("symoe serve not ready after 600 s")

    def client(self, timeout: float = 120) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key="none", max_retries=0, timeout=timeout)

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime

    def state(self) -> dict[str, float]:
        status = dict(line.split(":", 1) for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines()
                      if ":" in line)
        return {"rss_mb": round(int(status["VmRSS"].split()[0]) / 1024, 1), "threads": int(status["Threads"]),
                "fds": len(os.listdir(f"/proc/{self.proc.pid}/fd"))}

    def metrics(self) -> dict[str, float]:
        out = {}
        for line in httpx.get(self.url + "/metrics", timeout=10).text.splitlines():
            if line.startswith(("symoe_admission_total", "symoe_requests_running", "symoe_queue_depth")):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def ask(server: Server, question: str, model: str = "symoe", max_tokens: int = 128,
        client: openai.OpenAI | None = None) -> dict[str, Any]:
    """One chat request: status, seconds (from the send; ``client`` made beforehand, so its
    set-up is not counted), and from the record whether it was degraded or cut."""
    client = client or server.client()
    start = time.monotonic()
    try:
        reply = client.chat.completions.create(model=model, max_tokens=max_tokens, messages=[
            {"role": "user", "content": question}])
    except openai.APIStatusError as exc:
        return {"status": exc.status_code, "s": time.monotonic() - start,
                "retry_after": exc.response.headers.get("retry-after")}
    except openai.APIConnectionError:
        return {"status": "conn", "s": time.monotonic() - start}
    record = (reply.model_extra or {}).get("symoe", {})
    out = {"status": 200, "s": time.monotonic() - start, "degraded": bool(record.get("degraded")),
           "cut": bool(record.get("deadline_exceeded")), "tokens": reply.usage.total_tokens if reply.usage else 0}
    if record.get("degraded"):
        out |= {"experts": record.get("experts"), "failed_experts": record.get("failed_experts"),
                "why": record.get("degraded_why")}
    return out


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def counts(server: Server) -> dict[str, float]:
    metrics = server.metrics()
    return {e: metrics.get(f'symoe_admission_total{{event="{e}"}}', 0.0) for e in EVENTS}


def after_load(server: Server, started: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, Any]:
    """CPU in the 2 s and 2-10 s after the last response; the state 10 s after; the admission's
    counts over the phase (``started["counts"]`` at its start)."""
    c0 = server.cpu_s()
    time.sleep(2)
    c2 = server.cpu_s()
    time.sleep(8)
    c10 = server.cpu_s()
    codes: dict[str, int] = {}
    for r in results:
        codes[str(r["status"])] = codes.get(str(r["status"]), 0) + 1
    seconds = [r["s"] for r in results]
    metrics = server.metrics()
    before_counts = started.pop("counts")
    phase_counts = {e: int(n - before_counts[e]) for e, n in counts(server).items()}
    return {"admission": phase_counts, "requests": len(results), "codes": codes,
            "p50_s": round(statistics.median(seconds), 2),
            "p99_s": round(percentile(seconds, 0.99), 2), "max_s": round(max(seconds), 2),
            "degraded_200": sum(bool(r.get("degraded")) for r in results),
            "cut_by_deadline": sum(bool(r.get("cut")) for r in results),
            "over_deadline_plus_1s": sum(r["s"] > DEADLINE_S + 1 for r in results),
            "kept_promise": sum(r["status"] in (200, 429) and r["s"] <= DEADLINE_S + 1 for r in results),
            "cpu_s_0_2": round(c2 - c0, 2), "cpu_s_2_10": round(c10 - c2, 2),
            "most_running": metrics.get("symoe_requests_running_max"),
            "before": started, "after": server.state()}


def burst(server: Server, n: int, rng: random.Random) -> dict[str, Any]:
    started: dict[str, Any] = {**server.state(), "counts": counts(server)}
    questions = [problem(rng) for _ in range(n)]
    results: list[dict[str, Any]] = [{} for _ in range(n)]
    clients = [server.client() for _ in range(n)]
    gate = threading.Barrier(n)

    def one(i: int) -> None:
        gate.wait()
        results[i] = ask(server, questions[i], client=clients[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return after_load(server, started, results)


def sustained(server: Server, seconds: float, rate: float, rng: random.Random) -> dict[str, Any]:
    started: dict[str, Any] = {**server.state(), "counts": counts(server)}
    results: list[dict[str, Any]] = []
    lock = threading.Lock()

    def one(question: str, client: openai.OpenAI) -> None:
        r = ask(server, question, client=client)
        with lock:
            results.append(r)

    threads = []
    n = int(seconds * rate)
    clients = [server.client() for _ in range(n)]
    begin = time.monotonic()
    for i in range(n):
        time.sleep(max(0.0, begin + i / rate - time.monotonic()))
        t = threading.Thread(target=one, args=(problem(rng), clients[i]))
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    return after_load(server, started, results)


def disconnects(server: Server, n: int) -> dict[str, Any]:
    """Streams to the default expert, each closed after its first content chunk, one after another."""
    started: dict[str, Any] = {**server.state(), "counts": counts(server)}
    results = []
    for i in range(n):
        start = time.monotonic()
        stream = server.client().chat.completions.create(model=DEFAULT, stream=True, max_tokens=400,
                                                         messages=[{"role": "user", "content":
                                                                    f"Write a long story about lighthouse {i}."}])
        first = None
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                first = time.monotonic() - start
                break
        stream.close()
        left = time.monotonic()
        idle_after = None
        while time.monotonic() - left < 10:
            if httpx.get(server.url + "/health", timeout=5).json().get("running") == 0:
                idle_after = time.monotonic() - left
                break
            time.sleep(0.05)
        results.append({"status": 200, "s": first or 0.0, "slot_free_after_s": idle_after})
    out = after_load(server, started, results)
    out["slot_free_after_close_s"] = [None if r["slot_free_after_s"] is None else round(r["slot_free_after_s"], 2)
                                      for r in results]
    return out


def killed(server: Server, remote: Server, n: int, rng: random.Random) -> dict[str, Any]:
    """``n`` concurrent requests naming the remote expert; once the remote is generating for
    them, SIGKILL it; then ``n`` more, one after another, to the dead expert. Before and after:
    one request to the degrade target (a local expert) and one naming the remote expert."""
    target = degrade_target(server)
    report: dict[str, Any] = {"degrade_target": target}
    ask(server, problem(rng), REMOTE)  # the remote's model loaded, the openai backend's I/O thread started
    ask(server, problem(rng), target)
    report["before_local"] = ask(server, problem(rng), target)
    report["before_remote"] = ask(server, problem(rng), REMOTE)
    started: dict[str, Any] = {**server.state(), "counts": counts(server)}
    results: list[dict[str, Any]] = [{} for _ in range(n)]
    clients = [server.client() for _ in range(n)]
    gate = threading.Barrier(n + 1)

    def one(i: int) -> None:
        gate.wait()
        results[i] = ask(server, problem(rng), REMOTE, client=clients[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    gate.wait()
    sent = time.monotonic()
    generating = None
    while time.monotonic() - sent < 10:  # the remote has them (its own /health counts running requests)
        try:
            if httpx.get(remote.url + "/health", timeout=2).json().get("running", 0) >= 1:
                generating = time.monotonic() - sent
                break
        except httpx.TransportError:
            break
        time.sleep(0.05)
    time.sleep(0.3)  # mid-generation
    remote.proc.send_signal(signal.SIGKILL)
    remote.proc.wait(10)
    report["killed_at_s"] = round(time.monotonic() - sent, 2)
    report["remote_generating_at_s"] = None if generating is None else round(generating, 2)
    for t in threads:
        t.join()
    for _ in range(n):  # the expert is gone: refused connections, then cooled down
        results.append(ask(server, problem(rng), REMOTE))
    out = after_load(server, started, results)
    out |= report
    out["answered_by"] = sorted({" ".join(r.get("experts") or []) for r in results if r["status"] == 200})
    out["why"] = sorted({re.sub(r"[0-9.]+", "N", r["why"])[:200] for r in results if r.get("why")})  # one per kind
    out["after_local"] = ask(server, problem(rng), target)
    out["after_remote"] = ask(server, problem(rng), REMOTE)
    out["after_vs_before_local"] = round(out["after_local"]["s"] / out["before_local"]["s"], 2)
    out["after_state"] = server.state()
    return out


def degrade_target(server: Server) -> str:
    """The expert the main server degrades to (``degrade_to: cheapest`` resolved through the
    profile), as ``/health`` says."""
    target = httpx.get(server.url + "/health", timeout=10).json().get("degrade_to") or ""
    if not target.startswith("single:"):
        raise SystemExit(f"the killed phase needs degrade_to to name one expert, not {target!r}")
    return target.removeprefix("single:")


def one_of_each(server: Server, rng: random.Random, report: dict[str, Any], when: str) -> None:
    """One routed request, one to the default expert and one probe, timed, into ``report``."""
    report[when] = ask(server, problem(rng))
    report[f"{when}_single"] = ask(server, problem(rng), DEFAULT)
    report[f"{when}_probe"] = ask(server, probe(rng), PROBE, 16)
    print(f"one request {when} the load: routed {json.dumps(report[when])}, "
          f"default expert {json.dumps(report[f'{when}_single'])}, "
          f"{PROBE} {json.dumps(report[f'{when}_probe'])}", flush=True)


PHASES = ("burst", "sustained", "disconnect", "killed")
REMOTE_CONFIG = "server:\n  deadline_s: 120\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--burst", type=int, default=24)
    parser.add_argument("--sustain-s", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=1.0, help="requests per second in the sustained phase")
    parser.add_argument("--disconnects", type=int, default=6)
    parser.add_argument("--killed", type=int, default=4, help="requests to the remote expert sent as it is "
                                                              "killed, and as many after")
    parser.add_argument("--phases", default=",".join(PHASES), help=f"which of {','.join(PHASES)} to run")
    parser.add_argument("--seed", type=int, default=None, help="questions' seed (default: the time, so the "
                                                              "generation cache holds none of them)")
    parser.add_argument("--degrade-to", default="cheapest",
                        help="server.degrade_to: 'cheapest' (the profile's fastest expert), 'default' (the default "
                             "expert) or a router, e.g. single:smollm2-135m")
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    args = parser.parse_args()
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    if unknown := [p for p in phases if p not in PHASES]:
        parser.error(f"unknown phase(s) {', '.join(unknown)}; the phases are {', '.join(PHASES)}")
    rng = random.Random(args.seed if args.seed is not None else time.time_ns())
    folder = Path(tempfile.mkdtemp(prefix="symoe-overload-"))
    began = time.monotonic()
    remote = Server(folder, REMOTE_CONFIG, "remote")
    try:
        server = Server(folder, CONFIG.format(degrade_to=args.degrade_to, remote_port=remote.port))
    except BaseException:
        remote.stop()
        raise
    print(f"servers ready in {time.monotonic() - began:.0f} s (main pid {server.proc.pid}, log {server.log}; "
          f"remote pid {remote.proc.pid}, log {remote.log})", flush=True)
    report: dict[str, Any] = {"config": server.config, "args": vars(args) | {"out": str(args.out)}}
    compare = any(p != "killed" for p in phases)
    try:
        if compare:
            ask(server, problem(rng))  # loads the models the routed requests use
            ask(server, problem(rng), DEFAULT)
            ask(server, probe(rng), PROBE, 16)
            one_of_each(server, rng, report, "before")
        runs = {"burst": lambda: burst(server, args.burst, rng),
                "sustained": lambda: sustained(server, args.sustain_s, args.rate, rng),
                "disconnect": lambda: disconnects(server, args.disconnects),
                "killed": lambda: killed(server, remote, args.killed, rng)}
        for name in phases:
            t = time.monotonic()
            report[name] = runs[name]()
            print(f"{name} ({time.monotonic() - t:.0f} s): {json.dumps(report[name])}", flush=True)
        if compare:
            one_of_each(server, rng, report, "after")
            report["after_vs_before"] = round(report["after"]["s"] / report["before"]["s"], 2)
            report["after_vs_before_single"] = round(report["after_single"]["s"] / report["before_single"]["s"], 2)
            report["after_vs_before_probe"] = round(report["after_probe"]["s"] / report["before_probe"]["s"], 2)
            print(f"after/before latency: routed {report['after_vs_before']}, default expert "
                  f"{report['after_vs_before_single']}, {PROBE} {report['after_vs_before_probe']}")
        report["metrics"] = server.metrics()
        print(f"metrics: {json.dumps(report['metrics'])}", flush=True)
    finally:
        server.stop()
        remote.stop()
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
