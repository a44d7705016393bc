"""Routing policies on multi-round QA: one `corral up` per policy, `corral bench` against it.

Issue 4's benchmark. For each policy (round_robin, prefix, kv, then least_loaded and
session) this writes a stack file with one chat model (SmolLM2-135M, llama.cpp, --replicas (3),
1 thread each, 4096 context) routed by that policy, starts ``python -m corral up`` on a free
127.0.0.1 port, waits for ``/ready``, runs ``python -m corral bench`` (multi-round-qa, by
default 8 users x 5 rounds, ~1k tokens of context per user by the last round, at most
--max-concurrency (2) requests at once), stops the
stack with SIGINT, and finally prints a comparison table and writes
``bench/results/policies.json`` next to each policy's ``policy-<name>.json``.

    PYTHONPATH=src python bench/policies.py [--policies round_robin,prefix,kv] [--users 8]
        [--rounds 5] [--history-len 512] [--output-len 16]

Why 3 replicas: users that go round in lock-step over a number of replicas that divides
their count land where they were every round under round_robin (8 users over 2 replicas:
user u always on replica u mod 2), which makes round_robin a perfectly sticky policy by
accident. With 8 users over 3 replicas each user's rounds visit every replica. Why a
concurrency cap: this machine has 2 cores for the 3 single-thread workers; uncapped, 8
users keep ~4 requests queued per replica and TTFT is the queue, whatever the routing.

Context per user at round r (text tokens, as the bench counts them):
system (--prefix-len, 256) + history (--history-len) + r questions (--input-len, 32) +
(r - 1) answers (--output-len); with the defaults the last round is 256 + 512 + 160 + 64
= 992 tokens, plus the chat template's.

Self-check agreement: before each stack stops, the router's
``corral_router_cache_predictions_total`` (its predicted cached tokens vs the worker's
``usage.prompt_tokens_details.cached_tokens``, per request) is read from ``/metrics``;
agreement = agree / (agree + over + under). ``--store-bytes 0`` turns the workers' prefix
store off, so that only routing decides whether a prompt's prefix is reused.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from corral.supervisor.layout import free_port

MODEL = "smollm2-135m-instruct"
HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
POLICIES = ("round_robin", "prefix", "kv", "least_loaded", "session")

STACK = """\
router:
  routing:
    policy: {policy}{routing}
models:
  - name: {model}
    task: chat
    engine: llamacpp
    source: {model}
    replicas: {replicas}
    threads: 1
    context_length: 4096
"""


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"corral up exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"stack not ready after {timeout_s} s:\n{log.read_text()}")


def stop(process: subprocess.Popen[bytes], timeout_s: float = 90) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    return process.returncode


def run_policy(policy: str, args: argparse.Namespace, work: Path) -> dict:
    stack_file = work / f"stack-{policy}.yaml"
    routing = f"\n    weights: {{{args.weights}}}" if args.weights else ""
    if args.in_flight_tokens is not None:
        routing += f"\n    in_flight_tokens: {args.in_flight_tokens}"
    stack_text = STACK.format(policy=policy, model=MODEL, replicas=args.replicas, routing=routing)
    if args.store_bytes is not None:
        stack_text = f"cache: {{ram_bytes: {args.store_bytes}}}\n" + stack_text
    stack_file.write_text(stack_text)
    run_dir = work / f"run-{policy}"
    log_path = work / f"up-{policy}.log"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    up = [sys.executable, "-m", "corral", "up", str(stack_file), "--port", str(port),
          "--run-dir", str(run_dir)]  # fmt: skip
    env = {**os.environ, "COLUMNS": "120"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            up, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
    print(f"[{policy}] corral up pid {process.pid} on {base}", flush=True)
    bench = [
        sys.executable, "-m", "corral", "bench", "-m", MODEL, "--base-url", base,
        "--endpoint", "chat", "--dataset", "multi-round-qa",
        "--num-users", str(args.users), "--num-rounds", str(args.rounds),
        "--prefix-len", str(args.prefix_len), "--history-len", str(args.history_len),
        "--input-len", str(args.input_len), "--output-len", str(args.output_len),
        "--seed", str(args.seed), "--result-dir", str(RESULTS), "--name", f"policy{args.tag}-{policy}",
        "--save-detailed", "--no-progress",
    ]  # fmt: skip
    if args.max_concurrency:
        bench += ["--max-concurrency", str(args.max_concurrency)]
    try:
        started = time.monotonic()
        wait_ready(f"{base}/ready", process, log_path, args.ready_timeout)
        print(f"[{policy}] ready after {time.monotonic() - started:.1f} s", flush=True)
        started = time.monotonic()
        done = subprocess.run(bench, env=env, capture_output=True, text=True)
        print(f"[{policy}] bench rc {done.returncode} in {time.monotonic() - started:.1f} s",
              flush=True)  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"corral bench failed:\n{done.stdout}\n{done.stderr}")
        predictions = _predictions(base)
    finally:
        rc = stop(process)
        print(f"[{policy}] corral up exited with {rc}", flush=True)
    logs = log_path.read_text(errors="replace")
    for path in sorted(run_dir.glob("logs/*.log")):
        logs += path.read_text(errors="replace")
    result = json.loads((RESULTS / f"policy{args.tag}-{policy}.json").read_text())
    return {"result": result, "drift_warning": "prefix cache predictions drift" in logs,
            "predictions": predictions}


def _predictions(base: str) -> dict[str, float]:
    """The router's self-check outcomes (corral_router_cache_predictions_total), summed over models."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
        text = response.read().decode()
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "corral_router_cache_predictions_total":
                outcome = sample.labels["outcome"]
                counts[outcome] = counts.get(outcome, 0.0) + sample.value
    return counts


def summarize(policy: str, run: dict) -> dict:
    r = run["result"]
    records = r.get("details", r.get("requests", []))
    prompts = [d.get("usage_prompt_tokens") for d in records]
    prompts = [p for p in prompts if isinstance(p, int)]
    return {
        "policy": policy,
        "completed": r["completed"],
        "failed": r["failed"],
        "p50_ttft_ms": r["p50_ttft_ms"],
        "p99_ttft_ms": r["p99_ttft_ms"],
        "p50_tpot_ms": r["p50_tpot_ms"],
        "output_throughput": r["output_throughput"],
        "request_throughput": r["request_throughput"],
        "duration_s": r["duration"],
        "max_usage_prompt_tokens": max(prompts) if prompts else None,
        "token_counting": r.get("token_counting"),
        "predictions": run["predictions"],
        "agreement": _agreement(run["predictions"]),
        "kv_drift_warning_logged": run["drift_warning"] if policy in ("prefix", "kv") else None,
        "p50_ttft_ms_by_round": _by_round(records),
    }


def _by_round(records: list[dict]) -> list[float]:
    """TTFT p50 per round: round 0 is cold for every policy; what routing buys shows after."""
    rounds: dict[int, list[float]] = {}
    for record in records:
        if record.get("success") and isinstance(record.get("ttft_s"), float):
            rounds.setdefault(record.get("round", 0), []).append(record["ttft_s"] * 1000)
    return [round(statistics.median(rounds[number]), 1) for number in sorted(rounds)]


def _agreement(counts: dict[str, float]) -> float | None:
    known = counts.get("agree", 0.0) + counts.get("over", 0.0) + counts.get("under", 0.0)
    return counts.get("agree", 0.0) / known if known else None


def table(rows: list[dict]) -> str:
    base = next((row["p50_ttft_ms"] for row in rows if row["policy"] == "round_robin"), None)
    head = ("policy", "TTFT p50 ms", "TTFT p99 ms", "TPOT p50 ms", "out tok/s", "req/s",
            "RR/TTFT p50", "predicted = actual cached", "TTFT p50 ms by round")  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        ratio = f"{base / row['p50_ttft_ms']:.2f}x" if base and row["p50_ttft_ms"] else "-"
        agreement = "-" if row["agreement"] is None else f"{row['agreement']:.0%}"
        cells = (row["policy"], f"{row['p50_ttft_ms']:.0f}", f"{row['p99_ttft_ms']:.0f}",
                 f"{row['p50_tpot_ms']:.1f}", f"{row['output_throughput']:.2f}",
                 f"{row['request_throughput']:.3f}", ratio, agreement,
                 " / ".join(f"{value:.0f}" for value in row.get("p50_ttft_ms_by_round", [])))  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--replicas", type=int, default=3, help="chat replicas (1 thread each)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--prefix-len", type=int, default=256)
    parser.add_argument("--history-len", type=int, default=512)
    parser.add_argument("--input-len", type=int, default=32)
    parser.add_argument("--output-len", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ready-timeout", type=float, default=600)
    parser.add_argument("--store-bytes", type=int, default=None,
                        help="cache.ram_bytes (0: routing alone decides reuse)")
    parser.add_argument("--max-concurrency", type=int, default=2, help="0: no cap")
    parser.add_argument("--tag", default="", help="suffix for result names, e.g. -nostore")
    parser.add_argument("--weights", default="", help="router.routing.weights, e.g. 'load: 1, disk_hit: 0.5'")
    parser.add_argument("--in-flight-tokens", type=float, default=None,
                        help="router.routing.in_flight_tokens (prefix, kv: a running request's cost)")
    args = parser.parse_args()
    policies = [p for p in args.policies.split(",") if p]
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    out = RESULTS / f"policies{args.tag}.json"
    with tempfile.TemporaryDirectory(prefix="corral-policies-") as tmp:
        for policy in policies:
            rows.append(summarize(policy, run_policy(policy, args, Path(tmp))))
            out.write_text(json.dumps({
                "workload": {"dataset": "multi-round-qa", "users": args.users,
                             "rounds": args.rounds, "prefix_len": args.prefix_len,
                             "history_len": args.history_len, "input_len": args.input_len,
                             "output_len": args.output_len, "seed": args.seed,
                             "max_concurrency": args.max_concurrency},
                "stack": {"model": MODEL, "engine": "llamacpp", "replicas": args.replicas, "threads": 1,
                          "context_length": 4096, "prefix_store_ram_bytes": args.store_bytes,
                          "routing_weights": args.weights or "defaults",
                          "in_flight_tokens": "default" if args.in_flight_tokens is None else args.in_flight_tokens},
                "agreement_note": "from the router's corral_router_cache_predictions_total "
                "(agree / (agree + over + under)), read before the stack stops",
                "policies": rows,
            }, indent=2) + "\n")  # fmt: skip
            print(table(rows), flush=True)
    print("\n" + table(rows))


if __name__ == "__main__":
    main()
