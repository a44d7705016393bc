"""What the prefix-aware policies cost per request, in-process (no HTTP): prepare + pick.

For each policy (``prefix``: character blocks; ``kv``: tokens, piece cache, chain cache,
early stop) and workload (bench/prefix_workload.py), routes ``--requests`` requests one
at a time after a warm-up and reports the CPU per request on the event loop's thread and
in the whole process (the tokenizer thread included), and, for reference, llama.cpp's own
tokenizing speed and what tokenizing each prompt whole would cost. Prints a table and
writes bench/out/prefix_prepare_cost.json.

    .venv/bin/python bench/prefix_prepare_cost.py [--prompt-chars 8000] [--requests 1000]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import uvloop
from prefix_workload import Workload, held_blocks

from corral.config import RoutingConfig
from corral.prefix.hashing import token_bytes
from corral.prefix.index import PrefixIndex
from corral.prefix.prompt import read_prompt
from corral.prefix.tokenizer import PromptTokenizer
from corral.router.endpoint import Endpoint
from corral.router.routing import RequestContext, build_policy
from corral.router.routing.registry import PolicyParts

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "out" / "prefix_prepare_cost.json"
SOURCE = "smollm2-135m-instruct"
CHAT = "/v1/chat/completions"


async def measure(policy_name: str, kind: str, args: argparse.Namespace) -> dict[str, Any]:
    workload = Workload(kind, prompt_chars=args.prompt_chars, sessions=args.sessions, seed=0)
    index = PrefixIndex(max_blocks=10**7, max_bytes=1 << 30, children_tokens=policy_name == "kv")
    urls = ["http://w0", "http://w1"]
    tokenizer = executor = None
    if policy_name == "kv":
        held = held_blocks(workload, source=SOURCE, model="m", block_size=16, engines=len(urls))
        for url, chains in zip(urls, held, strict=True):
            for chain in chains:
                tokens = token_bytes(chain["tokens"]) if args.event_tokens else None
                index.store(url, chain["hashes"], "ram", None, tokens)
        tokenizer = PromptTokenizer.load(SOURCE, cache_bytes=RoutingConfig().tokenizer_cache_bytes)
        executor = ThreadPoolExecutor(1)
    parts = PolicyParts(random.Random(0), index=index, tokenizer=tokenizer, executor=executor)
    policy = build_policy(policy_name, rng=random.Random(0), parts=parts)
    pool = [Endpoint(url, "m", healthy=True) for url in urls]
    bodies = [
        workload.body("m", stream=False, max_tokens=8) for _ in range(args.requests + args.warmup)
    ]

    async def route(body: dict[str, Any]) -> RequestContext:
        ctx = RequestContext("m", "chat", CHAT, body, None, {})
        await policy.prepare(ctx)
        policy.pick(ctx, pool)
        return ctx

    for body in bodies[: args.warmup]:
        await route(body)
    wall, cpu, loop = time.perf_counter(), time.process_time(), time.thread_time()
    predicted = prompt = 0
    for body in bodies[args.warmup :]:
        ctx = await route(body)
        predicted += ctx.routing.predicted_cached_tokens or 0
        prompt += ctx.routing.blocks.prompt_tokens if ctx.routing.blocks else 0
    count = args.requests
    row: dict[str, Any] = {
        "policy": policy_name,
        "workload": kind,
        "wall_us": (time.perf_counter() - wall) / count * 1e6,
        "process_cpu_us": (time.process_time() - cpu) / count * 1e6,
        "loop_cpu_us": (time.thread_time() - loop) / count * 1e6,
        "predicted_cached_share": predicted / prompt if prompt else 0.0,
    }
    if tokenizer is not None:
        whole = [read_prompt(CHAT, body) for body in bodies[:100]]
        started = time.perf_counter()
        tokens = sum(len(tokenizer.tokenize(prompt) or ()) for prompt in whole if prompt)
        seconds = time.perf_counter() - started
        row["whole_prompt_tokenize_us"] = seconds / len(whole) * 1e6
        row["llama_cpp_us_per_token"] = seconds / tokens * 1e6
        tokenizer.close()
    if executor is not None:
        executor.shutdown()
    return row


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    print(
        f"{'policy':<7} {'workload':<13} {'wall us':>8} {'CPU us':>8} {'loop us':>8} {'cached':>7} {'whole-prompt tokenize us':>25}"
    )
    for kind in args.workloads:
        for name in ("prefix", "kv"):
            row = await measure(name, kind, args)
            rows.append(row)
            whole = ""
            if "whole_prompt_tokenize_us" in row:
                per_token = row["llama_cpp_us_per_token"]
                whole = f"{row['whole_prompt_tokenize_us']:.0f} ({per_token:.1f} us/token)"
            print(
                f"{name:<7} {kind:<13} {row['wall_us']:>8.0f} {row['process_cpu_us']:>8.0f} "
                f"{row['loop_cpu_us']:>8.0f} {row['predicted_cached_share']:>7.0%} {whole:>25}",
                flush=True,
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt-chars", type=int, default=8000)
    parser.add_argument("--sessions", type=int, default=64)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--workloads", nargs="+", default=["conversation", "unique"])
    parser.add_argument(
        "--no-event-tokens",
        dest="event_tokens",
        action="store_false",
        help="the held blocks come without their tokens (the router must tokenize to rule them out)",
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    rows = uvloop.run(run(args))
    report = {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
