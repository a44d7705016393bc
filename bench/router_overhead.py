"""Router overhead: request latency through the router vs straight to the engine.

Starts a fake engine (instant: no model time) and the router as separate processes on
127.0.0.1, then drives open-loop load (constant or Poisson arrivals) at each rate, for
non-streaming and streaming chat requests, alternating short blocks of "direct" and
"via router" so background noise hits both alike. Latency is measured from the moment a
request is sent to its last byte; the lag of each send behind its schedule is kept too,
to show the load generator kept up. Prints a table and writes bench/out/router_overhead.json.

    .venv/bin/python bench/router_overhead.py [--rates 100 500] [--duration-s 6] [--poisson]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
import uvloop

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "out" / "router_overhead.json"
MODEL = "bench-model"
SERVE_ROUTER = (
    "import sys; from corral.config import load_stack; from corral.router import serve; "
    "serve(load_stack(sys.argv[1]), port=int(sys.argv[2]))"
)


@dataclass
class Samples:
    latency_s: list[float] = field(default_factory=list)
    first_byte_s: list[float] = field(default_factory=list)
    lag_s: list[float] = field(default_factory=list)
    errors: int = 0


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def summary(samples: Samples) -> dict[str, float | int]:
    ms = 1000.0
    return {
        "requests": len(samples.latency_s),
        "errors": samples.errors,
        "p50_ms": percentile(samples.latency_s, 50) * ms,
        "p90_ms": percentile(samples.latency_s, 90) * ms,
        "p99_ms": percentile(samples.latency_s, 99) * ms,
        "max_ms": max(samples.latency_s, default=float("nan")) * ms,
        "first_byte_p50_ms": percentile(samples.first_byte_s, 50) * ms,
        "first_byte_p99_ms": percentile(samples.first_byte_s, 99) * ms,
        "send_lag_p99_ms": percentile(samples.lag_s, 99) * ms,
        "send_lag_max_ms": max(samples.lag_s, default=float("nan")) * ms,
    }


def arrivals(rate: float, count: int, poisson: bool, rng: random.Random) -> Iterator[float]:
    """Offsets in seconds from the start of a block."""
    at = 0.0
    for _ in range(count):
        yield at
        at += rng.expovariate(rate) if poisson else 1.0 / rate


async def one_request(
    http: aiohttp.ClientSession, url: str, body: bytes, lag_s: float, samples: Samples
) -> None:
    started = time.perf_counter()
    try:
        async with http.post(url, data=body, headers={"content-type": "application/json"}) as reply:
            first = await reply.content.readany()
            first_byte = time.perf_counter()
            while await reply.content.readany():
                pass
            done = time.perf_counter()
            if reply.status != 200 or not first:
                samples.errors += 1
                return
    except aiohttp.ClientError:
        samples.errors += 1
        return
    samples.latency_s.append(done - started)
    samples.first_byte_s.append(first_byte - started)
    samples.lag_s.append(lag_s)


@dataclass(frozen=True)
class Load:
    rate_rps: float
    poisson: bool
    rng: random.Random


async def drive(
    http: aiohttp.ClientSession, url: str, body: bytes, load: Load, seconds: float, samples: Samples
) -> None:
    """Open loop: each request leaves at its scheduled time, whether or not others finished."""
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.01
    tasks = []
    for offset in arrivals(load.rate_rps, int(load.rate_rps * seconds), load.poisson, load.rng):
        delay = start + offset - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        lag = max(0.0, loop.time() - (start + offset))
        tasks.append(asyncio.create_task(one_request(http, url, body, lag, samples)))
    await asyncio.gather(*tasks)


async def compare(
    http: aiohttp.ClientSession,
    urls: dict[str, str],
    body: bytes,
    load: Load,
    args: argparse.Namespace,
) -> dict[str, Samples]:
    """Alternate blocks of direct and routed load so that drift in background noise hits both."""
    for url in urls.values():  # warm up connections and code paths
        await drive(http, url, body, load, 1.0, Samples())
    results = {target: Samples() for target in urls}
    for _ in range(args.blocks):
        for target, url in urls.items():
            await drive(http, url, body, load, args.duration_s / args.blocks, results[target])
    return results


async def measure(direct: str, router: str, args: argparse.Namespace) -> list[dict[str, object]]:
    path = "/v1/chat/completions"
    urls = {"direct": direct + path, "router": router + path}
    rng = random.Random(args.seed)
    rows: list[dict[str, object]] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        for stream in (False, True):
            request = {
                "model": MODEL,
                "messages": [{"role": "user", "content": "hello"}],
                "max_tokens": args.tokens,
                "stream": stream,
            }
            for rate in args.rates:
                results = await compare(
                    http, urls, orjson.dumps(request), Load(rate, args.poisson, rng), args
                )
                direct_stats, router_stats = summary(results["direct"]), summary(results["router"])
                row: dict[str, object] = {"stream": stream, "rate_rps": rate}
                row.update(direct=direct_stats, router=router_stats)
                for stat in ("p50_ms", "p99_ms"):
                    row[f"added_{stat}"] = router_stats[stat] - direct_stats[stat]
                rows.append(row)
                print_row(row)
    return rows


def print_header() -> None:
    columns = "direct p50     p99 | router p50     p99 | added p50     p99 | errors lag p99"
    print(f"{'mode':<10} {'rate':>5} | {columns}")
    print("-" * 100)


def print_row(row: dict[str, object]) -> None:
    direct, router = row["direct"], row["router"]
    assert isinstance(direct, dict) and isinstance(router, dict)
    mode = "stream" if row["stream"] else "json"
    errors = direct["errors"] + router["errors"]
    lag = max(direct["send_lag_p99_ms"], router["send_lag_p99_ms"])
    print(
        f"{mode:<10} {row['rate_rps']:>5g} | {direct['p50_ms']:>8.3f}ms {direct['p99_ms']:>5.2f}ms | "
        f"{router['p50_ms']:>8.3f}ms {router['p99_ms']:>5.2f}ms | "
        f"{router['p50_ms'] - direct['p50_ms']:>7.3f}ms {router['p99_ms'] - direct['p99_ms']:>5.2f}ms | "
        f"{errors:>6} {lag:>5.2f}ms",
        flush=True,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def processes(tokens: int) -> Iterator[tuple[str, str]]:
    """The fake engine and the router, each in its own process; yields their base URLs."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    command = [sys.executable, "-m", "tests.fakes.engine", "--instant", "--tokens", str(tokens)]
    engine = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    router: subprocess.Popen[bytes] | None = None
    try:
        assert engine.stdout is not None
        direct = "http://127.0.0.1:" + engine.stdout.readline().split()[1]
        with tempfile.TemporaryDirectory() as tmp:
            stack = Path(tmp) / "stack.yaml"
            model = {
                "name": MODEL,
                "task": "chat",
                "engine": "vllm",
                "source": "fake",
                "replicas": 0,
                "endpoints": [direct],
            }
            stack.write_text(json.dumps({"models": [model]}))
            port = free_port()
            router = subprocess.Popen(
                [sys.executable, "-c", SERVE_ROUTER, str(stack), str(port)], cwd=REPO, env=env
            )
            routed = f"http://127.0.0.1:{port}"
            asyncio.run(wait_ready(routed))
            yield direct, routed
    finally:
        for process in (router, engine):
            if process is not None:
                process.terminate()
                process.wait(10)


async def wait_ready(url: str) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(url + "/ready") as reply:
                    if reply.status == 200:
                        return
            await asyncio.sleep(0.05)
    raise RuntimeError("router did not become ready")


def main() -> None:
    parser = argparse.ArgumentParser(
        description="router-added latency vs a direct call to a fake engine"
    )
    parser.add_argument("--rates", type=float, nargs="+", default=[100.0, 500.0])
    parser.add_argument("--duration-s", type=float, default=6.0, help="per rate, mode and target")
    parser.add_argument("--blocks", type=int, default=3, help="alternating direct/router blocks")
    parser.add_argument("--tokens", type=int, default=8, help="tokens per answer (stream chunks)")
    parser.add_argument(
        "--poisson", action="store_true", help="Poisson arrivals (default: constant)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    load_before = os.getloadavg()
    with processes(args.tokens) as (direct, router):
        print_header()
        rows = uvloop.run(measure(direct, router, args))
    report = {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "cpus": os.cpu_count(),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
