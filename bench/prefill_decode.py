"""Prefill/decode split vs colocated workers on a mixed workload (issue 5's second benchmark).

Two `corral up` stacks of SmolLM2-135M (2 workers, 1 thread each, Redis KV tier with
16-token chunks, least_loaded routing), one after the other:

- ``colocated``: both workers prefill and decode;
- ``split``: one prefill worker (stores each prompt's KV in Redis), one decode worker.

The same mixed load runs against each for ``--duration-s``: long-document requests (a
unique ~``--long-tokens``-token prompt, 16 answer tokens) arriving every ``--long-every-s``,
and ``--chatters`` closed-loop users each sending short chats (a one-line question,
``--short-tokens`` streamed answer tokens) one after another. Reported per stack: the short
chats' TTFT and ITL (p50 / p99) -- does a long prefill stall them? -- and the long requests'
TTFT and end-to-end latency, with the number of requests of each kind completed. Prints a
table and writes bench/out/prefill_decode.json.

    .venv/bin/python bench/prefill_decode.py [--duration-s 90]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from policies import stop, wait_ready

from corral.supervisor.layout import free_port

MODEL = "smollm2-135m-instruct"
OUT = Path(__file__).resolve().parent / "out" / "prefill_decode.json"
STACK = """\
cache:
  chunk_tokens: 16
  redis: {{}}
redis:
  port: 0
router:
  routing: {{policy: least_loaded}}
models:
  - name: {model}
    task: chat
    engine: llamacpp
    source: {model}
    replicas: 2
    prefill_replicas: {prefill}
    threads: 1
    context_length: 4096
"""
WORDS = ("harbour", "granite", "lantern", "meadow", "copper", "river", "orchard", "signal", "winter",
         "falcon", "marble", "quiet", "engine", "valley", "cotton", "silver", "ember", "thunder")


@dataclass
class Timings:
    ttft_s: list[float] = field(default_factory=list)
    itl_s: list[float] = field(default_factory=list)
    e2e_s: list[float] = field(default_factory=list)
    errors: int = 0


def document(rng: random.Random, tokens: int) -> str:
    """About ``tokens`` tokens of unique text (a word is about 1.3 tokens here)."""
    return " ".join(rng.choice(WORDS) for _ in range(int(tokens / 1.3)))


async def one(http: aiohttp.ClientSession, url: str, messages: list[dict[str, str]], max_tokens: int,
              into: Timings) -> None:
    body = {"model": MODEL, "messages": messages, "max_tokens": max_tokens, "temperature": 0,
            "ignore_eos": True, "stream": True}
    started = time.perf_counter()
    arrivals: list[float] = []
    try:
        async with http.post(url, data=orjson.dumps(body), headers={"content-type": "application/json"}) as reply:
            if reply.status != 200:
                into.errors += 1
                await reply.read()
                return
            async for line in reply.content:
                if line.startswith(b"data: {") and b'"content":"' in line:
                    arrivals.append(time.perf_counter())
    except aiohttp.ClientError:
        into.errors += 1
        return
    if not arrivals:
        into.errors += 1
        return
    into.ttft_s.append(arrivals[0] - started)
    into.itl_s.extend(b - a for a, b in itertools.pairwise(arrivals))
    into.e2e_s.append(time.perf_counter() - started)


async def drive(base: str, args: argparse.Namespace) -> dict[str, Timings]:
    url = f"{base}/v1/chat/completions"
    rng = random.Random(args.seed)
    short, long = Timings(), Timings()
    deadline = time.perf_counter() + args.duration_s
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as http:

        async def chatter(number: int) -> None:
            turn = 0
            while time.perf_counter() < deadline:
                turn += 1
                question = f"User {number}, question {turn}: name a {rng.choice(WORDS)} colour."
                await one(http, url, [{"role": "user", "content": question}], args.short_tokens, short)

        async def documents() -> None:
            pending: list[asyncio.Task[None]] = []
            while time.perf_counter() < deadline:
                messages = [{"role": "system", "content": document(rng, args.long_tokens)},
                            {"role": "user", "content": "Summarize the text in one line."}]
                pending.append(asyncio.create_task(one(http, url, messages, 16, long)))
                await asyncio.sleep(args.long_every_s)
            await asyncio.gather(*pending)

        await asyncio.gather(documents(), *(chatter(n) for n in range(args.chatters)))
    return {"short": short, "long": long}


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] * 1000


def summary(timings: dict[str, Timings]) -> dict[str, Any]:
    short, long = timings["short"], timings["long"]
    return {
        "short_completed": len(short.ttft_s), "short_errors": short.errors,
        "short_ttft_p50_ms": pct(short.ttft_s, 50), "short_ttft_p99_ms": pct(short.ttft_s, 99),
        "short_itl_p50_ms": pct(short.itl_s, 50), "short_itl_p99_ms": pct(short.itl_s, 99),
        "short_ttft_mean_ms": statistics.fmean(short.ttft_s) * 1000 if short.ttft_s else None,
        "long_completed": len(long.ttft_s), "long_errors": long.errors,
        "long_ttft_p50_ms": pct(long.ttft_s, 50), "long_e2e_p50_ms": pct(long.e2e_s, 50),
    }


def run(mode: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    stack_file = work / f"stack-{mode}.yaml"
    stack_file.write_text(STACK.format(model=MODEL, prefill=1 if mode == "split" else 0))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = work / f"up-{mode}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "corral", "up", str(stack_file), "--port", str(port),
             "--run-dir", str(work / f"run-{mode}")],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env={**os.environ, "COLUMNS": "120"},
        )
    try:
        wait_ready(f"{base}/ready", process, log_path, 600)
        print(f"[{mode}] ready; driving {args.duration_s:.0f} s of mixed load", flush=True)
        return summary(asyncio.run(drive(base, args)))
    finally:
        stop(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration-s", type=float, default=90.0)
    parser.add_argument("--long-tokens", type=int, default=1500)
    parser.add_argument("--long-every-s", type=float, default=12.0)
    parser.add_argument("--chatters", type=int, default=2)
    parser.add_argument("--short-tokens", type=int, default=32)
    parser.add_argument("--modes", default="colocated,split")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="corral-pd-") as tmp:
        for mode in args.modes.split(","):
            results[mode] = run(mode, args, Path(tmp))
    columns = ("short_completed", "short_ttft_p50_ms", "short_ttft_p99_ms", "short_itl_p50_ms",
               "short_itl_p99_ms", "long_completed", "long_ttft_p50_ms", "long_e2e_p50_ms")
    print("| mode | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for mode, row in results.items():
        cells = [f"{row[c]:.0f}" if isinstance(row[c], float) else str(row[c]) for c in columns]
        print(f"| {mode} | " + " | ".join(cells) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    args.out.write_text(json.dumps({"settings": settings, "loadavg": os.getloadavg(), "results": results}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
