"""Prefix index memory: many distinct long prompts through the prefix policy stay in bound.

Routes ``--prompts`` distinct prompts of ``--prompt-chars`` characters (every block of
each is new) through the router's approximate ``prefix`` policy -- prepare (canonical
text, character-block hashes), pick (score, learn the blocks) and release, as the proxy
does -- over ``--endpoints`` endpoints, with the index bounded by ``--max-bytes``. Memory
is measured with tracemalloc (every Python allocation since before the policy existed,
so the index and anything else the policy keeps) and the process RSS. Prints a table,
writes bench/out/prefix_index_memory.json, and exits 1 if memory ever passed the bound.

    .venv/bin/python bench/prefix_index_memory.py [--prompts 100000] [--max-bytes 67108864]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import time
import tracemalloc
from pathlib import Path

from corral.config import RoutingConfig
from corral.prefix.index import ENTRY_BYTES, PrefixIndex
from corral.router.endpoint import Endpoint
from corral.router.routing import RequestContext, build_policy
from corral.router.routing.registry import PolicyParts

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "out" / "prefix_index_memory.json"
MIB = 1024 * 1024


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def prompt(number: int, chars: int, filler: str) -> dict[str, object]:
    head = f"conversation {number}: "  # first block differs, so every chained block does
    return {"messages": [{"role": "user", "content": head + filler[: chars - len(head)]}]}


async def run(args: argparse.Namespace) -> dict[str, object]:
    rng = random.Random(args.seed)
    words = ["alpha", "beta", "gamma", "delta", "prefix", "cache", "router", "token"]
    filler = " ".join(rng.choice(words) for _ in range(args.prompt_chars // 3))
    pool = [Endpoint(f"http://10.0.0.{i}:8000", "m", healthy=True) for i in range(args.endpoints)]
    routing = RoutingConfig(
        index_max_blocks=args.max_blocks,
        index_max_bytes=args.max_bytes,
        prefix_block_chars=args.block_chars,
    )
    bound = min(args.max_bytes, args.max_blocks * ENTRY_BYTES)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    index = PrefixIndex(max_blocks=routing.index_max_blocks, max_bytes=routing.index_max_bytes)
    policy = build_policy(
        "prefix", rng=random.Random(args.seed), parts=PolicyParts(rng, routing=routing, index=index)
    )
    rows: list[dict[str, object]] = []
    checkpoints = {int(args.prompts * step / 10) for step in range(1, 11)}
    started = time.perf_counter()
    worst = 0
    for number in range(1, args.prompts + 1):
        ctx = RequestContext(
            "m", "chat", "/v1/chat/completions", prompt(number, args.prompt_chars, filler), None, {}
        )
        await policy.prepare(ctx)
        endpoint = policy.pick(ctx, pool)
        assert endpoint is not None
        if number in checkpoints:
            current, peak = tracemalloc.get_traced_memory()
            worst = max(worst, current - base, peak - base)
            row: dict[str, object] = {
                "prompts": number,
                "blocks": len(index),
                "accounted_mib": index.bytes / MIB,
                "traced_mib": (current - base) / MIB,
                "traced_peak_mib": (peak - base) / MIB,
                "rss_mib": rss_bytes() / MIB,
                "evictions": index.evictions,
                "elapsed_s": time.perf_counter() - started,
            }
            rows.append(row)
            print_row(row)
    tracemalloc.stop()
    return {
        "bound_mib": bound / MIB,
        "capacity_blocks": index.capacity,
        "worst_traced_mib": worst / MIB,
        "within_bound": worst <= bound,
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rows": rows,
    }


def print_row(row: dict[str, object]) -> None:
    print(
        f"{row['prompts']:>9} {row['blocks']:>10} {row['accounted_mib']:>10.1f} "
        f"{row['traced_mib']:>10.1f} {row['traced_peak_mib']:>10.1f} {row['rss_mib']:>8.1f} "
        f"{row['evictions']:>12} {row['elapsed_s']:>8.1f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=100_000)
    parser.add_argument("--prompt-chars", type=int, default=8000)
    parser.add_argument("--block-chars", type=int, default=RoutingConfig().prefix_block_chars)
    parser.add_argument("--endpoints", type=int, default=4)
    parser.add_argument("--max-bytes", type=int, default=64 * MIB)
    parser.add_argument("--max-blocks", type=int, default=RoutingConfig().index_max_blocks)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    print(
        f"{'prompts':>9} {'blocks':>10} {'acct MiB':>10} {'traced MiB':>10} {'peak MiB':>10} "
        f"{'RSS MiB':>8} {'evictions':>12} {'time s':>8}"
    )
    result = asyncio.run(run(args))
    print(
        f"bound {result['bound_mib']:.1f} MiB ({result['capacity_blocks']} blocks); worst traced "
        f"{result['worst_traced_mib']:.1f} MiB: {'within' if result['within_bound'] else 'OVER'} the bound"
    )
    report = {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        **result,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    if not result["within_bound"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
