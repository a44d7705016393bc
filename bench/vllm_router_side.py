"""What following vLLM replicas costs the router's event loop, in-process (no sockets).

Two costs land on the router's single event-loop thread for every vLLM replica:

- KV events: each msgpack batch is decoded and every stored block re-hashed into corral's
  chain (router/vllm_kv_events.py). Measured: blocks translated per second, for batches
  as vLLM sends them (one BlockStored per request prefix, block_size 16, map-shaped
  events), with the matching BlockRemoved batches so the index stays at a steady size.
- Load: every health round reads ``/metrics`` and parses three families out of it
  (router/engine_load.py). Measured: time per parse of a vLLM-sized exposition
  (``--metric-lines`` lines, the three families among them).

Prints a table and writes bench/out/vllm_router_side.json.

    .venv/bin/python bench/vllm_router_side.py [--prompts 2000] [--prompt-blocks 64]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

import msgpack

from corral.prefix.index import PrefixIndex
from corral.router.engine_load import parse_vllm_metrics
from corral.router.vllm_kv_events import BlockTranslator, decode_batch

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "out" / "vllm_router_side.json"
BS = 16


def event_batches(prompts: int, prompt_blocks: int, rng: random.Random) -> list[bytes]:
    """Stored + removed batches: ``prompts`` prefixes of ``prompt_blocks`` blocks each."""
    batches: list[bytes] = []
    for prompt in range(prompts):
        tokens = [rng.randrange(50_000) for _ in range(prompt_blocks * BS)]
        hashes = [(prompt << 16) + block for block in range(prompt_blocks)]
        stored = {"type": "BlockStored", "block_hashes": hashes, "parent_block_hash": None,
                  "token_ids": tokens, "block_size": BS, "lora_id": None, "medium": "GPU",
                  "lora_name": None, "extra_keys": [None] * prompt_blocks, "group_idx": 0,
                  "kv_cache_spec_kind": "full_attention"}  # fmt: skip
        batches.append(msgpack.packb([time.time(), [stored], 0]))
        removed = {"type": "BlockRemoved", "block_hashes": hashes, "medium": "GPU", "group_idx": 0}
        batches.append(msgpack.packb([time.time(), [removed], 0]))
    return batches


def measure_events(args: argparse.Namespace) -> dict[str, Any]:
    batches = event_batches(args.prompts, args.prompt_blocks, random.Random(0))
    index = PrefixIndex(max_blocks=10**7, max_bytes=1 << 32)
    translator = BlockTranslator(index, "http://vllm-0:8000", model="m", block_size=BS, max_blocks=10**6)
    started = time.perf_counter()
    for payload in batches:
        translator.apply(decode_batch(payload))
    elapsed = time.perf_counter() - started
    blocks = args.prompts * args.prompt_blocks
    return {
        "batches": len(batches),
        "blocks_stored": blocks,
        "seconds": elapsed,
        "blocks_per_s": blocks / elapsed,
        "us_per_stored_batch": elapsed / args.prompts * 1e6,
    }


def metrics_text(lines: int) -> str:
    """A vLLM-like exposition: histogram buckets for many series, our three gauges inside."""
    out = [
        "# TYPE vllm:num_requests_running gauge",
        'vllm:num_requests_running{engine="0",model_name="m"} 12.0',
        "# TYPE vllm:num_requests_waiting gauge",
        'vllm:num_requests_waiting{engine="0",model_name="m"} 3.0',
        "# TYPE vllm:kv_cache_usage_perc gauge",
        'vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.42',
        "# TYPE vllm:time_to_first_token_seconds histogram",
    ]
    bucket = 0
    while len(out) < lines:
        out.append(f'vllm:time_to_first_token_seconds_bucket{{engine="0",le="{bucket * 0.01:.2f}",model_name="m"}} {bucket}.0')
        bucket += 1
    return "\n".join(out) + "\n"


def measure_metrics(args: argparse.Namespace) -> dict[str, Any]:
    text = metrics_text(args.metric_lines)
    assert parse_vllm_metrics(text) is not None
    rounds = args.metric_rounds
    started = time.perf_counter()
    for _ in range(rounds):
        parse_vllm_metrics(text)
    elapsed = time.perf_counter() - started
    return {"lines": args.metric_lines, "bytes": len(text), "ms_per_parse": elapsed / rounds * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=2000)
    parser.add_argument("--prompt-blocks", type=int, default=64)
    parser.add_argument("--metric-lines", type=int, default=2000)
    parser.add_argument("--metric-rounds", type=int, default=200)
    args = parser.parse_args()
    events = measure_events(args)
    metrics = measure_metrics(args)
    print(f"{'measure':<44} {'value':>12}")
    print(f"{'KV events: blocks translated per second':<44} {events['blocks_per_s']:>12,.0f}")
    label = f"KV events: us per BlockStored of {args.prompt_blocks} blocks"
    print(f"{label:<44} {events['us_per_stored_batch']:>12,.1f}")
    label = f"/metrics: ms per parse ({metrics['bytes'] // 1024} kB, {args.metric_lines} lines)"
    print(f"{label:<44} {metrics['ms_per_parse']:>12,.3f}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"events": events, "metrics": metrics, "args": vars(args)}, indent=2))
    print(f"wrote {OUT.relative_to(REPO)}")


if __name__ == "__main__":
    main()
