"""Load test of ``symoe serve``: N concurrent clients for T seconds against the small experts.

    python bench/load.py [--clients 32] [--seconds 60] [--models smollm2-135m,gemma3-270m,symoe]

Starts ``symoe serve`` (a subprocess, loopback, a pool of SmolLM2-135M and Gemma-3-270M with
the default profile restricted to them), then runs the clients, each asking fresh questions
(random arithmetic, so the generation cache answers none of them) in a loop with the
``openai`` client. Prints requests, failures, requests per second, p50/p95/p99 latency, and
the model batches the server ran against the requests (from /metrics): concurrent requests
share batches. Runs twice in one go, the batcher's gathering window at 0 ms and at 5 ms,
and prints the ratio of throughputs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import openai

ROOT = Path(__file__).resolve().parents[1]
CONFIG = """default_expert: smollm2-135m
experts:
  qwen-coder-1.5b: null
  qwen-coder-0.5b: null
server:
  batch_window_ms: {window}
  max_in_flight: 256
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(window: float, folder: Path) -> tuple[subprocess.Popen, str]:
    config = folder / f"load-{window:g}.yaml"
    config.write_text(CONFIG.format(window=window))
    port = free_port()
    log = open(folder / f"serve-{window:g}.log", "wb")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "serve", "--port", str(port), "-c", str(config)],
                            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"symoe serve exited: {(folder / f'serve-{window:g}.log').read_text()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.5)
    sys.exit("symoe serve did not start in 300 s")


def metric(text: str, name: str) -> float:
    return sum(float(v) for v in re.findall(rf"^{name}{{[^}}]*}} ([0-9.e+]+)$", text, re.MULTILINE))


def run(url: str, clients: int, seconds: float, models: list[str], max_tokens: int) -> dict:
    client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=600)
    for model in models:  # warm: load each model once before the clock starts
        client.chat.completions.create(model=model, max_tokens=max_tokens,
                                       messages=[{"role": "user", "content": "What is 1 + 1?"}])
    before = httpx.get(url + "/metrics").text
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def worker(i: int) -> None:
        rng = random.Random(i)
        while time.monotonic() < stop:
            a, b = rng.randint(100, 999), rng.randint(100, 999)
            model = models[rng.randrange(len(models))]
            start = time.perf_counter()
            try:
                client.chat.completions.create(model=model, max_tokens=max_tokens,
                                               messages=[{"role": "user", "content": f"What is {a} + {b}?"}])
                with lock:
                    latencies.append(time.perf_counter() - start)
            except openai.OpenAIError as exc:
                with lock:
                    failures.append(f"{type(exc).__name__}: {exc}"[:200])

    began = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - began
    after = httpx.get(url + "/metrics").text
    batches = metric(after, "symoe_model_batches") - metric(before, "symoe_model_batches")
    jobs = metric(after, "symoe_model_jobs") - metric(before, "symoe_model_jobs")
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return {"requests": len(latencies) + len(failures), "ok": len(latencies), "failed": len(failures),
            "failures": failures[:5], "wall_s": round(wall, 1), "rps": round(len(latencies) / wall, 2),
            "p50_s": round(q[49], 2), "p95_s": round(q[94], 2), "p99_s": round(q[98], 2),
            "model_batches": int(batches), "jobs": int(jobs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--models", default="smollm2-135m,gemma3-270m,symoe")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--windows", default="0,5", help="batching windows to compare, ms")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    models = [m for m in args.models.split(",") if m]
    rows = {}
    with tempfile.TemporaryDirectory(prefix="symoe-load-") as tmp:
        for window in [float(w) for w in args.windows.split(",")]:
            proc, url = serve(window, Path(tmp))
            try:
                rows[window] = run(url, args.clients, args.seconds, models, args.max_tokens)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    print(f"{args.clients} clients x {args.seconds:g} s, models {', '.join(models)}, max_tokens {args.max_tokens}")
    print("| window ms | requests | failed | req/s | p50 s | p95 s | p99 s | model batches | jobs |")
    print("|---|---|---|---|---|---|---|---|---|")
    for window, r in rows.items():
        print(f"| {window:g} | {r['requests']} | {r['failed']} | {r['rps']} | {r['p50_s']} | {r['p95_s']} | "
              f"{r['p99_s']} | {r['model_batches']} | {r['jobs']} |")
        for f in r["failures"]:
            print("  failure:", f)
    if len(rows) == 2:
        (w0, a), (w1, b) = rows.items()
        print(f"throughput {w1:g} ms vs {w0:g} ms: {b['rps'] / a['rps']:.2f}x" if a["rps"] else "")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
