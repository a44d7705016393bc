"""Time to first token with and without the worker's prefix store, on one worker.

A worker (``serve()`` on 127.0.0.1, a real process) gets, per run, from two users:

    1. cold          user A's ~1.5k-token prompt, the first time (nothing reusable)
    2. repeat        A's prompt + a follow-up question, next: llama.cpp's own reuse of
                     the previous prompt
    3. other user    user B's ~1.5k-token prompt (cold too; it replaces A in the context)
    4. interleaved   A's prompt + another follow-up, after B: with the store, A's prefix
                     is loaded from RAM; without it, A is prefilled again from scratch

The same sequence runs on a worker with the store (``worker.prefix_store.ram_bytes``
512 MiB) and one without (``ram_bytes: 0``), run by run in turn so that both see the same
machine; every run uses fresh prompts (a different first block), so runs share nothing. TTFT is the time from sending the request to
the first text chunk of the SSE stream; ``cached`` is ``usage.prompt_tokens_details
.cached_tokens``. Then, in this process, the cost of the store itself: copying the KV of
a 1.5k-token prefix out of llama.cpp and back (``corral.worker.seq_state``).

    .venv/bin/python bench/prefix_store.py --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

from worker_process import start_worker, stream_completion

from corral.sources import resolve_source
from corral.worker.llama_model import load_llama
from corral.worker.seq_state import capture_prefix, restore

SCENARIOS = ("cold", "repeat", "other_user", "interleaved")
WORDS = (
    "lighthouse keeper storm harbour ship lantern logbook tide gull rope anchor cliff "
    "garden tomato bean compost rain soil seed spade fence orchard apple winter market "
    "river bridge mill baker bread village letter road evening morning quiet bright"
).split()


class Request(NamedTuple):
    scenario: str
    ttft_s: float
    prompt_tokens: int
    cached_tokens: int


def long_text(seed: str, words: int) -> str:
    rng = random.Random(seed)
    sentences = []
    while words > 0:
        length = rng.randint(8, 16)
        sentences.append(" ".join(rng.choice(WORDS) for _ in range(length)).capitalize() + ".")
        words -= length
    return f"Session {seed}. " + " ".join(sentences)


def stream(port: int, prompt: str, max_tokens: int) -> tuple[float, int, int]:
    """One streamed completion: (TTFT, prompt tokens, cached tokens)."""
    streamed = stream_completion(port, prompt, max_tokens)
    usage = streamed.usage
    return streamed.first_s, usage["prompt_tokens"], usage["prompt_tokens_details"]["cached_tokens"]


def run_users(port: int, run: str, words: int, max_tokens: int) -> list[Request]:
    """The four requests of one run (see the module docstring)."""
    user_a, user_b = long_text(f"{run}-a", words), long_text(f"{run}-b", words)
    prompts = (
        ("cold", user_a),
        ("repeat", user_a + "\nQuestion: what did the keeper see at night?\nAnswer:"),
        ("other_user", user_b),
        ("interleaved", user_a + "\nQuestion: where was the garden?\nAnswer:"),
    )
    return [Request(name, *stream(port, prompt, max_tokens)) for name, prompt in prompts]


def measure_workers(args: argparse.Namespace) -> dict[str, list[Request]]:
    """Both workers at once (an idle one costs no CPU); runs alternate between them."""
    sides = {"store": 512 * 1024 * 1024, "no_store": 0}
    workers = {
        label: start_worker(
            args.model, args.threads, args.context_length,
            cache_yaml=f"{{ram_bytes: {ram_bytes}}}",
        )
        for label, ram_bytes in sides.items()
    }
    requests: dict[str, list[Request]] = {label: [] for label in sides}
    try:
        for label, (_, port, _) in workers.items():
            stream(port, long_text(f"warmup-{label}", 40), 2)
        for run in range(args.runs):
            for label, (_, port, _) in workers.items():
                requests[label] += run_users(port, f"{label}-{run}", args.words, args.max_tokens)
            print(f"  run {run + 1}/{args.runs} done", file=sys.stderr)
    finally:
        for process, _, stack in workers.values():
            process.send_signal(signal.SIGTERM)
            process.wait(60)
            stack.unlink()
    return requests


def measure_copies(args: argparse.Namespace, repeats: int = 5) -> dict[str, Any]:
    """Copying the KV of a long prefix out of llama.cpp and back, in this process."""
    llama = load_llama(
        resolve_source(args.model).weights,
        context_length=args.context_length,
        threads=args.threads,
    )
    tokens = llama.tokenize(long_text("copy", args.words).encode(), add_bos=True, special=True)
    n_tokens = len(tokens) // 16 * 16
    llama.eval(tokens)
    saves, loads = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        state = capture_prefix(llama, n_tokens)
        saves.append(time.perf_counter() - start)
        start = time.perf_counter()
        assert restore(llama, state)
        loads.append(time.perf_counter() - start)
    llama.close()
    return {
        "tokens": n_tokens,
        "state_bytes": state.nbytes,
        "bytes_per_token": round(state.nbytes / n_tokens),
        "save_s_median": round(statistics.median(saves), 4),
        "load_s_median": round(statistics.median(loads), 4),
    }


def summarize(requests: list[Request]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for scenario in SCENARIOS:
        mine = [r for r in requests if r.scenario == scenario]
        out[scenario] = {
            "ttft_s": [round(r.ttft_s, 4) for r in mine],
            "ttft_s_median": round(statistics.median(r.ttft_s for r in mine), 4),
            "ttft_s_best": round(min(r.ttft_s for r in mine), 4),
            "prompt_tokens": [r.prompt_tokens for r in mine],
            "cached_tokens": [r.cached_tokens for r in mine],
        }
    return out


def print_table(result: dict[str, Any]) -> None:
    on, off = result["store"], result["no_store"]
    print(
        f"\n{result['model']}  threads={result['threads']}  runs={result['runs']}  "
        f"prompt ~{statistics.median(on['cold']['prompt_tokens']):.0f} tokens  "
        f"max_tokens={result['max_tokens']}"
    )
    print(f"{'TTFT s: median (best) / cached':34}{'with store':>24}{'without store':>24}")
    labels = {
        "cold": "cold (first time)",
        "repeat": "repeat (last prompt reused)",
        "other_user": "other user's prompt (cold)",
        "interleaved": "A again, after B (interleaved)",
    }
    for scenario, label in labels.items():
        cells = [
            f"{side[scenario]['ttft_s_median']:.3f} ({side[scenario]['ttft_s_best']:.3f}) / "
            f"{statistics.median(side[scenario]['cached_tokens']):>4.0f}"
            for side in (on, off)
        ]
        print(f"{label:34}{cells[0]:>24}{cells[1]:>24}")
    copies = result["copies"]
    print(
        f"store cost: {copies['tokens']} tokens = {copies['state_bytes'] / 1e6:.1f} MB "
        f"({copies['bytes_per_token']} B/token); save {copies['save_s_median'] * 1e3:.1f} ms, "
        f"load {copies['load_s_median'] * 1e3:.1f} ms"
    )
    for stat in ("median", "best"):
        ratio = off["interleaved"][f"ttft_s_{stat}"] / on["interleaved"][f"ttft_s_{stat}"]
        print(f"interleaved TTFT, {stat}: {ratio:.0f}x lower with the store")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--words", type=int, default=1300, help="about 1.5k tokens for SmolLM2")
    parser.add_argument("--max-tokens", type=int, default=2)
    parser.add_argument("--context-length", type=int, default=2048)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "out" / "prefix_store.json"
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    result = {
        "model": args.model,
        "threads": args.threads,
        "runs": args.runs,
        "max_tokens": args.max_tokens,
        **{label: summarize(runs) for label, runs in measure_workers(args).items()},
        "copies": measure_copies(args),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
