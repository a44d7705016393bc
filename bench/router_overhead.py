"""Router overhead: request latency through the router vs straight to the engine, or
through a routing policy vs round-robin.

Starts fake engines (instant: no model time) and the router as separate processes on
127.0.0.1, then drives open-loop load (constant or Poisson arrivals) at each rate, for
non-streaming and streaming chat requests, alternating short blocks of each target so
background noise hits all alike. Latency is measured from the moment a request is sent to
its last byte; the lag of each send behind its schedule is kept too, to show the load
generator kept up. The router process's CPU time per request is measured per target
(/proc), which bounds the rate one core can route. Prints a table and writes JSON.

    .venv/bin/python bench/router_overhead.py [--rates 100 500] [--duration-s 6] [--poisson]

With ``--policy P`` the router serves two model names over the same engines -- one routed
round-robin, one by ``P`` -- and the table shows what ``P`` adds over round-robin, with
prompts of ``--prompt-chars`` from ``--workload`` (bench/prefix_workload.py). For ``kv``
the fake engines announce, as KV events, the blocks of the conversations they hold.

    .venv/bin/python bench/router_overhead.py --policy kv --prompt-chars 8000 --rates 500 1000 1500
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pstats
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import uvloop
from prefix_workload import Workload, held_blocks

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "bench" / "out"
MODEL = "bench-model"
SOURCE = "smollm2-135m-instruct"  # the tokenizer of the models behind the fake engines
SERVE_ROUTER = (
    "import sys; from corral.config import load_stack; from corral.router import serve; "
    "serve(load_stack(sys.argv[1]), port=int(sys.argv[2]))"
)
#: The same under cProfile, writing its stats to sys.argv[3] when the router exits.
PROFILE_ROUTER = (
    "import cProfile, sys; from corral.config import load_stack; from corral.router import serve; "
    "cProfile.run('serve(load_stack(sys.argv[1]), port=int(sys.argv[2]))', sys.argv[3])"
)


@dataclass
class Samples:
    latency_s: list[float] = field(default_factory=list)
    first_byte_s: list[float] = field(default_factory=list)
    lag_s: list[float] = field(default_factory=list)
    errors: int = 0
    router_cpu_s: float = 0.0
    loop_cpu_s: float = 0.0
    sent: int = 0


@dataclass(frozen=True)
class Target:
    """Where one kind of request goes: a URL, and the model name it asks for."""

    name: str
    url: str
    model: str


class RouterCPU:
    """CPU seconds (user + system) the router process has used so far: all its threads,
    and its main thread alone (the event loop; tokenizing runs on another thread)."""

    def __init__(self, pid: int | None) -> None:
        self._paths = (
            None
            if pid is None
            else (Path(f"/proc/{pid}/stat"), Path(f"/proc/{pid}/task/{pid}/stat"))
        )
        self._tick_s = 1.0 / os.sysconf("SC_CLK_TCK")

    def seconds(self) -> tuple[float, float]:
        if self._paths is None:
            return 0.0, 0.0
        return self._read(self._paths[0]), self._read(self._paths[1])

    def _read(self, path: Path) -> float:
        fields = path.read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) * self._tick_s


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def summary(samples: Samples) -> dict[str, float | int]:
    ms = 1000.0
    sent = samples.sent or float("nan")
    return {
        "router_cpu_us_per_request": samples.router_cpu_s / sent * 1e6,
        "router_loop_cpu_us_per_request": samples.loop_cpu_s / sent * 1e6,
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


@dataclass(frozen=True)
class Requests:
    """The bodies to send: one workload, streamed or not."""

    workload: Workload
    stream: bool
    max_tokens: int

    def body(self, model: str) -> bytes:
        return orjson.dumps(
            self.workload.body(model, stream=self.stream, max_tokens=self.max_tokens)
        )


async def drive(
    http: aiohttp.ClientSession,
    target: Target,
    requests: Requests,
    load: Load,
    seconds: float,
    samples: Samples,
    cpu: RouterCPU,
) -> None:
    """Open loop: each request leaves at its scheduled time, whether or not others finished."""
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.01
    tasks = []
    cpu_before = cpu.seconds()
    for offset in arrivals(load.rate_rps, int(load.rate_rps * seconds), load.poisson, load.rng):
        body = requests.body(target.model)
        delay = start + offset - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        lag = max(0.0, loop.time() - (start + offset))
        tasks.append(asyncio.create_task(one_request(http, target.url, body, lag, samples)))
    await asyncio.gather(*tasks)
    cpu_after = cpu.seconds()
    samples.router_cpu_s += cpu_after[0] - cpu_before[0]
    samples.loop_cpu_s += cpu_after[1] - cpu_before[1]
    samples.sent += len(tasks)


async def compare(
    http: aiohttp.ClientSession,
    targets: list[Target],
    requests: Requests,
    load: Load,
    args: argparse.Namespace,
    cpu: RouterCPU,
) -> dict[str, Samples]:
    """Alternate blocks of each target so that drift in background noise hits all alike."""
    for target in targets:  # warm up connections, code paths and caches
        await drive(http, target, requests, load, args.warmup_s, Samples(), cpu)
    results = {target.name: Samples() for target in targets}
    for _ in range(args.blocks):
        for target in targets:
            seconds = args.duration_s / args.blocks
            await drive(http, target, requests, load, seconds, results[target.name], cpu)
    return results


async def measure(
    targets: list[Target], args: argparse.Namespace, cpu: RouterCPU
) -> list[dict[str, object]]:
    rng = random.Random(args.seed)
    workload = Workload(
        args.workload, prompt_chars=args.prompt_chars, sessions=args.sessions, seed=args.seed
    )
    rows: list[dict[str, object]] = []
    baseline, others = targets[0], targets[1:]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        for stream in args.modes:
            requests = Requests(workload, stream, args.tokens)
            for rate in args.rates:
                results = await compare(
                    http, targets, requests, Load(rate, args.poisson, rng), args, cpu
                )
                for target in others:
                    base_stats, stats = (
                        summary(results[baseline.name]),
                        summary(results[target.name]),
                    )
                    row: dict[str, object] = {"stream": stream, "rate_rps": rate}
                    row.update(baseline=baseline.name, target=target.name)
                    row.update({baseline.name: base_stats, target.name: stats})
                    for stat in ("p50_ms", "p99_ms"):
                        row[f"added_{stat}"] = stats[stat] - base_stats[stat]
                    rows.append(row)
                    print_row(row)
    return rows


def print_header(baseline: str, target: str) -> None:
    columns = (
        f"{baseline[:11]:>11} p50     p99 | {target[:11]:>11} p50     p99 | added p50     p99 | "
        "errors lag p99 | router CPU us/req: all, loop"
    )
    print(f"{'mode':<6} {'rate':>5} | {columns}")
    print("-" * 130)


def print_row(row: dict[str, object]) -> None:
    base, target = row[str(row["baseline"])], row[str(row["target"])]
    assert isinstance(base, dict) and isinstance(target, dict)
    mode = "stream" if row["stream"] else "json"
    errors = base["errors"] + target["errors"]
    lag = max(base["send_lag_p99_ms"], target["send_lag_p99_ms"])
    print(
        f"{mode:<6} {row['rate_rps']:>5g} | {base['p50_ms']:>12.3f}ms {base['p99_ms']:>6.2f}ms | "
        f"{target['p50_ms']:>12.3f}ms {target['p99_ms']:>6.2f}ms | "
        f"{target['p50_ms'] - base['p50_ms']:>7.3f}ms {target['p99_ms'] - base['p99_ms']:>5.2f}ms | "
        f"{errors:>6} {lag:>5.2f}ms | "
        f"{base['router_cpu_us_per_request']:>5.0f} -> {target['router_cpu_us_per_request']:>5.0f}, "
        f"{base['router_loop_cpu_us_per_request']:>5.0f} -> {target['router_loop_cpu_us_per_request']:>5.0f}",
        flush=True,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stack_file(args: argparse.Namespace, engines: list[str]) -> dict[str, object]:
    """Without a policy: one model behind the default policy. With one: the same engines
    under two names, one routed round-robin and one by the policy."""
    if args.policy is None:
        model = {"name": MODEL, "task": "chat", "engine": "vllm", "source": "fake", "replicas": 0}
        return {"models": [{**model, "endpoints": engines}]}
    model = {
        "task": "chat",
        "engine": "llamacpp",
        "source": SOURCE,
        "replicas": 0,
        "endpoints": engines,
        # SmolLM2's own context: 8,000-character prompts (~2k tokens) fit with room, as they
        # would in a real deployment; --context-length 2048 puts every prompt at the limit,
        # where the router's prompt-length check must tokenize.
        "context_length": args.context_length,
    }
    routing = {"policy": args.policy, "models": {"bench-round_robin": "round_robin"}}
    return {
        "router": {"routing": routing},
        "models": [
            {**model, "name": "bench-round_robin"},
            {**model, "name": f"bench-{args.policy}"},
        ],
    }


@contextlib.contextmanager
def processes(args: argparse.Namespace) -> Iterator[tuple[list[str], str, int]]:
    """The fake engines and the router, each in its own process; yields the engines' base
    URLs, the router's, and the router's pid."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    started: list[subprocess.Popen[str] | subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            engines = []
            for number, blocks in enumerate(kv_snapshots(args)):
                command = [
                    sys.executable,
                    "-m",
                    "tests.fakes.engine",
                    "--instant",
                    "--tokens",
                    str(args.tokens),
                ]
                if blocks is not None:
                    held = Path(tmp) / f"blocks-{number}.json"
                    held.write_bytes(orjson.dumps(blocks))
                    command += ["--kv-blocks", str(held)]
                engine = subprocess.Popen(
                    command, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True
                )
                started.append(engine)
                assert engine.stdout is not None
                engines.append("http://127.0.0.1:" + engine.stdout.readline().split()[1])
            stack = Path(tmp) / "stack.yaml"
            stack.write_text(json.dumps(stack_file(args, engines)))
            port = free_port()
            command = [sys.executable, "-c", SERVE_ROUTER, str(stack), str(port)]
            if args.profile is not None:
                command = [sys.executable, "-c", PROFILE_ROUTER, str(stack), str(port), str(args.profile)]
            if args.router_cpu is not None:
                command = ["taskset", "-c", str(args.router_cpu), *command]
            router = subprocess.Popen(command, cwd=REPO, env=env)
            started.append(router)
            routed = f"http://127.0.0.1:{port}"
            asyncio.run(wait_ready(routed))
            yield engines, routed, router.pid
        finally:
            for process in reversed(started):
                process.terminate()
                process.wait(10)


def kv_snapshots(args: argparse.Namespace) -> list[list[Any] | None]:
    """Per engine, the chains it announces (kv only), as the workload's sessions are spread:
    with their tokens, or (``--no-event-tokens``) their block hashes alone."""
    if args.policy != "kv" or args.workload == "hello":
        return [None] * args.engines
    workload = Workload(
        args.workload, prompt_chars=args.prompt_chars, sessions=args.sessions, seed=args.seed
    )
    held = held_blocks(
        workload, source=SOURCE, model="bench-kv", block_size=16, engines=args.engines
    )
    if args.event_tokens:
        return list(held)
    return [[block for chain in chains for block in chain["hashes"]] for chains in held]


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
    parser.add_argument("--warmup-s", type=float, default=1.0, help="per rate, mode and target")
    parser.add_argument(
        "--policy",
        choices=["round_robin", "least_loaded", "session", "prefix", "kv"],
        help="compare this policy with round_robin through the router (default: router vs direct)",
    )
    parser.add_argument("--prompt-chars", type=int, default=8000, help="with --policy")
    parser.add_argument("--context-length", type=int, default=8192, help="the models' context, with --policy")
    parser.add_argument(
        "--workload",
        choices=["conversation", "unique", "hello"],
        default="conversation",
        help="with --policy (without: a one-word prompt)",
    )
    parser.add_argument("--sessions", type=int, default=64, help="conversations (workload)")
    parser.add_argument(
        "--no-event-tokens",
        dest="event_tokens",
        action="store_false",
        help="kv: the fake engines announce held blocks without their tokens (the router must "
        "tokenize every new question to rule them out)",
    )
    parser.add_argument("--engines", type=int, help="fake engines (default 1, or 2 with --policy)")
    parser.add_argument(
        "--modes", choices=["json", "stream"], nargs="+", default=["json", "stream"]
    )
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--router-cpu", type=int, help="pin the router to this CPU and everything else to the others "
        "(does one core keep up with the rate?)"
    )
    parser.add_argument(
        "--profile", type=Path, help="run the router under cProfile; print its top functions, keep the stats here"
    )
    args = parser.parse_args()
    args.modes = [mode == "stream" for mode in args.modes]
    if args.policy is None:
        args.workload = "hello"
    args.engines = args.engines or (1 if args.policy is None else 2)
    if args.out is None:
        name = (
            "router_overhead"
            if args.policy is None
            else f"router_overhead_{args.policy}_{args.workload}"
        )
        args.out = OUT_DIR / f"{name}.json"
    load_before = os.getloadavg()
    if args.router_cpu is not None:
        # The router alone on its core; this load generator and the fake engines (started
        # from here, so they inherit it) on the others.
        others = set(os.sched_getaffinity(0)) - {args.router_cpu}
        if not others:
            raise SystemExit("--router-cpu needs a machine with at least two CPUs")
        os.sched_setaffinity(0, others)
    with processes(args) as (engines, router, pid):
        path = "/v1/chat/completions"
        if args.policy is None:
            targets = [
                Target("direct", engines[0] + path, MODEL),
                Target("router", router + path, MODEL),
            ]
        else:
            targets = [
                Target("round_robin", router + path, "bench-round_robin"),
                Target(args.policy, router + path, f"bench-{args.policy}"),
            ]
        print_header(targets[0].name, targets[1].name)
        rows = uvloop.run(measure(targets, args, RouterCPU(pid)))
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
    if args.profile is not None:
        pstats.Stats(str(args.profile)).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
