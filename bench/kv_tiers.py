"""Time to first token for a ~2k-token prefix: cold, and loaded from each KV tier.

A redis-server on a free loopback port, and three worker processes (``serve()``, real
processes) of the same model:

    A   RAM store + disk tier (directory D) + Redis tier: takes the prompt cold, stores it
    D   disk tier only (the same directory D; no RAM store)
    B   Redis tier only (no RAM store): a different worker than the one that stored it

Per run, with a fresh ~2k-token prompt P (a different first block each run, so runs share
nothing):

    1. cold   A <- P; then wait until A's writer has put P's chunks on disk and in Redis
    2. ram    A <- a short other prompt (it takes A's context), then A <- P: from RAM
    3. disk   D <- P: from the disk tier
    4. redis  B <- P: from Redis

TTFT is the time from sending the request to the first text chunk of the SSE stream;
``cached`` is ``usage.prompt_tokens_details.cached_tokens``; ``same`` says whether the
greedy text equals the cold run's. Lower tiers keep whole chunks (``--chunk-tokens``), so
a hit prefills the prompt's last partial chunk. Goal: Redis-hit TTFT <= 1/5 of cold.

    .venv/bin/python bench/kv_tiers.py --runs 3
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

from prefix_store import long_text
from worker_process import RUN_WORKER, stream_completion

SCENARIOS = ("cold", "ram", "disk", "redis")


class Request(NamedTuple):
    scenario: str
    ttft_s: float
    prompt_tokens: int
    cached_tokens: int
    text: str


class Worker(NamedTuple):
    process: subprocess.Popen[bytes]
    port: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    executable = shutil.which("redis-server")
    if executable is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    process = subprocess.Popen(
        [executable, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", str(workdir), "--loglevel", "warning"],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return process, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("redis-server did not start")


def start_worker(args: argparse.Namespace, name: str, cache: str, redis_url: str, run_dir: Path) -> Worker:
    """A completion worker named ``bench`` with this stack's cache section."""
    stack = run_dir / f"stack-{name}.yaml"
    stack.write_text(
        f"cache: {cache}\n"
        f"redis: {{url: '{redis_url}'}}\n"
        f"supervisor: {{run_dir: '{run_dir}'}}\n"
        "models:\n"
        f"  - {{name: bench, task: completion, engine: llamacpp, source: '{args.model}', "
        f"threads: {args.threads}, context_length: {args.context_length}}}\n"
    )
    port = free_port()
    log = (run_dir / f"worker-{name}.log").open("wb")
    process = subprocess.Popen([sys.executable, "-c", RUN_WORKER, str(stack), str(port)], stdout=log, stderr=log)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"worker {name} exited with {process.returncode}; see {log.name}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return Worker(process, port)
        except OSError:
            pass
        time.sleep(0.1)
    process.kill()
    raise SystemExit(f"worker {name} did not become healthy in 120 s")


def tiers(worker: Worker) -> dict[str, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", worker.port, timeout=30)
    connection.request("GET", "/v1/kv/blocks")
    body = json.loads(connection.getresponse().read())
    return body["store"]["tiers"]  # type: ignore[no-any-return]


def stream(worker: Worker, scenario: str, prompt: str, max_tokens: int) -> Request:
    streamed = stream_completion(worker.port, prompt, max_tokens)
    usage = streamed.usage
    return Request(scenario, streamed.first_s, usage["prompt_tokens"],
                   usage["prompt_tokens_details"]["cached_tokens"], streamed.text)


def wait_for(condition: Any, what: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def hit_in(worker: Worker, tier: str, request: Any) -> Request:
    """Run ``request``; check that ``tier`` served it (its hits went up by one)."""
    before = tiers(worker)[tier]["hits"]
    result: Request = request()
    after = tiers(worker)[tier]["hits"]
    if after != before + 1:
        raise SystemExit(f"{result.scenario}: expected a {tier} hit, the tier's hits went {before} -> {after}")
    return result


def one_run(workers: dict[str, Worker], run: int, args: argparse.Namespace) -> list[Request]:
    a, d, b = workers["A"], workers["D"], workers["B"]
    prompt = long_text(f"tiers-{run}", args.words)
    stored = {t: tiers(a)[t]["stored"] for t in ("disk", "redis")}
    cold = stream(a, "cold", prompt, args.max_tokens)
    wait_for(lambda: all(tiers(a)[t]["stored"] > stored[t] for t in stored), "A's writes to disk and Redis")
    stream(a, "other", long_text(f"other-{run}", 20), 2)
    ram = hit_in(a, "ram", lambda: stream(a, "ram", prompt, args.max_tokens))
    disk = hit_in(d, "disk", lambda: stream(d, "disk", prompt, args.max_tokens))
    redis = hit_in(b, "redis", lambda: stream(b, "redis", prompt, args.max_tokens))
    return [cold, ram, disk, redis]


def summarize(requests: list[Request]) -> dict[str, Any]:
    cold_text = [r.text for r in requests if r.scenario == "cold"]  # one per run, in order
    out: dict[str, Any] = {}
    for scenario in SCENARIOS:
        mine = [r for r in requests if r.scenario == scenario]
        out[scenario] = {
            "ttft_s": [round(r.ttft_s, 4) for r in mine],
            "ttft_s_median": round(statistics.median(r.ttft_s for r in mine), 4),
            "prompt_tokens": [r.prompt_tokens for r in mine],
            "cached_tokens": [r.cached_tokens for r in mine],
            "same_output": all(r.text == cold_text[i] for i, r in enumerate(mine)),
        }
    cold = out["cold"]["ttft_s_median"]
    for scenario in SCENARIOS:
        out[scenario]["speedup_vs_cold"] = round(cold / out[scenario]["ttft_s_median"], 1)
    return out


def print_table(result: dict[str, Any]) -> None:
    scenarios = result["scenarios"]
    print(
        f"\n{result['model']}  threads={result['threads']}  context={result['context_length']}  "
        f"runs={result['runs']}  prompt ~{statistics.median(scenarios['cold']['prompt_tokens']):.0f} tokens  "
        f"chunk={result['chunk_tokens']}  state ~{result['state_mb']:.1f} MB"
    )
    width = 8 * result["runs"]
    print(f"{'':8}{'TTFT median s':>14}  {'runs (s)':<{width}}{'cached':>8}{'x cold':>8}{'same':>6}")
    for name in SCENARIOS:
        row = scenarios[name]
        runs = " ".join(f"{t:7.3f}" for t in row["ttft_s"])
        print(f"{name:8}{row['ttft_s_median']:>14.3f}  {runs:<{width}}{statistics.median(row['cached_tokens']):>8.0f}"
              f"{row['speedup_vs_cold']:>8.1f}{'yes' if row['same_output'] else 'NO':>6}")
    goal = scenarios["redis"]["ttft_s_median"] <= scenarios["cold"]["ttft_s_median"] / 5
    print(f"goal (Redis-hit TTFT <= 1/5 of cold): {'met' if goal else 'NOT met'}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--context-length", type=int, default=4096)
    parser.add_argument("--words", type=int, default=1700, help="prompt length in words (~2k tokens)")
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--chunk-tokens", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "kv_tiers.json")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    run_dir = Path(tempfile.mkdtemp(prefix="corral-kv-tiers-"))
    redis, url = start_redis(run_dir)
    lower = f"chunk_tokens: {args.chunk_tokens}, min_tokens: 64"
    disk = "disk: {path: kv-cache, max_bytes: 2147483648}"
    shared = "redis: {max_bytes: 1073741824, timeout_s: 5}"
    configs = {
        "A": f"{{ram_bytes: 536870912, {lower}, {disk}, {shared}}}",
        "D": f"{{ram_bytes: 0, {lower}, {disk}}}",
        "B": f"{{ram_bytes: 0, {lower}, {shared}}}",
    }
    workers: dict[str, Worker] = {}
    requests: list[Request] = []
    try:
        for name, cache in configs.items():
            workers[name] = start_worker(args, name, cache, url, run_dir)
        for run in range(args.runs):
            requests += one_run(workers, run, args)
            print(f"  run {run + 1}/{args.runs} done", file=sys.stderr)
        state_bytes = tiers(workers["A"])["redis"]["nbytes"] / max(1, tiers(workers["A"])["redis"]["entries"])
    finally:
        for worker in workers.values():
            worker.process.send_signal(signal.SIGTERM)
            worker.process.wait(60)
        redis.kill()
        redis.wait(10)
        shutil.rmtree(run_dir, ignore_errors=True)
    result = {
        "benchmark": "kv_tiers",
        "model": args.model,
        "threads": args.threads,
        "context_length": args.context_length,
        "chunk_tokens": args.chunk_tokens,
        "max_tokens": args.max_tokens,
        "runs": args.runs,
        "state_mb": round(state_bytes / 1e6, 1),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "scenarios": summarize(requests),
    }
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
