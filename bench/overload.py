"""Overload: many more requests than the stack can serve, and what comes back.

A fake engine (scripted TTFT) behind the router, in separate processes on 127.0.0.1; the
model's concurrency limit (router.model_limits) is the stack's capacity. An open-loop
client sends ``--requests`` at ``--overload`` times that capacity. Expected: only 200 and
429 (or 503) answers, no 5xx made by the router, and the router's memory flat: its RSS is
sampled before, during and after.

    PYTHONPATH=. python bench/overload.py [--requests 10000] [--overload 5]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "out" / "overload.json"
SERVE_ROUTER = (
    "import sys; from corral.config import load_stack; from corral.router.server import serve; "
    "serve(load_stack(sys.argv[1]), host='127.0.0.1', port=int(sys.argv[2]))"
)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextlib.contextmanager
def stack(args: argparse.Namespace) -> Iterator[tuple[str, int]]:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    started: list[subprocess.Popen[str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            engine = subprocess.Popen(
                [sys.executable, "-m", "tests.fakes.engine", "--ttft-s", str(args.ttft_s), "--tokens", "4"],
                cwd=REPO, env=env, stdout=subprocess.PIPE, text=True,
            )
            started.append(engine)
            assert engine.stdout is not None
            engine_url = "http://127.0.0.1:" + engine.stdout.readline().split()[1]
            config = {
                "router": {"model_limits": {"m": {"concurrent_requests": args.capacity}}},
                "models": [{"name": "m", "task": "chat", "engine": "vllm", "source": "fake",
                            "replicas": 0, "endpoints": [engine_url]}],
            }
            stack_file = Path(tmp) / "stack.yaml"
            stack_file.write_text(json.dumps(config))
            with contextlib.closing(__import__("socket").socket()) as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            router = subprocess.Popen([sys.executable, "-c", SERVE_ROUTER, str(stack_file), str(port)],
                                      cwd=REPO, env=env, text=True)
            started.append(router)
            yield f"http://127.0.0.1:{port}", router.pid
        finally:
            for process in reversed(started):
                process.terminate()
                process.wait(10)


async def wait_ready(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{url}/ready") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.05)
    raise SystemExit("router not ready")


async def drive(url: str, pid: int, args: argparse.Namespace) -> dict[str, object]:
    await wait_ready(url)
    capacity_rps = args.capacity / args.ttft_s
    rate = capacity_rps * args.overload
    statuses: collections.Counter[int] = collections.Counter()
    rss = [rss_mib(pid)]
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def one() -> None:
            try:
                async with session.post(f"{url}/v1/chat/completions", data=body,
                                        headers={"content-type": "application/json"}) as response:
                    await response.read()
                    statuses[response.status] += 1
            except aiohttp.ClientError:
                statuses[-1] += 1

        tasks = []
        start = time.perf_counter()
        for i in range(args.requests):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one()))
            if i % max(1, args.requests // 10) == 0:
                rss.append(rss_mib(pid))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    rss.append(rss_mib(pid))
    return {
        "requests": args.requests, "capacity_rps": capacity_rps, "offered_rps": rate,
        "achieved_send_rps": args.requests / elapsed, "duration_s": elapsed,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "router_5xx": sum(v for k, v in statuses.items() if k >= 500 and k != 503),
        "router_rss_mib": {"before": rss[0], "max": max(rss), "after": rss[-1], "samples": rss},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--overload", type=float, default=5.0)
    parser.add_argument("--capacity", type=int, default=8, help="concurrent requests the model takes")
    parser.add_argument("--ttft-s", type=float, default=0.05, help="the fake engine's time per request")
    args = parser.parse_args()
    with stack(args) as (url, pid):
        result = asyncio.run(drive(url, pid, args))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2))
    rss = result["router_rss_mib"]
    print(f"{result['requests']} requests at {result['offered_rps']:.0f}/s "
          f"({args.overload:g}x a capacity of {result['capacity_rps']:.0f}/s), sent at {result['achieved_send_rps']:.0f}/s")
    print(f"answers: {result['statuses']}   5xx made by the router: {result['router_5xx']}")
    print(f"router RSS MiB: before {rss['before']:.1f}, max {rss['max']:.1f}, after {rss['after']:.1f}")  # type: ignore[index]
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
