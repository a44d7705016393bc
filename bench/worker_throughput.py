"""Single-stream decode speed: corral's worker over HTTP vs llama-cpp-python in process.

Both sides run the same GGUF with the same threads, prompt, greedy sampling and
max_tokens, and ignore end-of-generation tokens so that every run decodes exactly
max_tokens tokens. The worker runs as a real process (``serve()`` on 127.0.0.1) and
is read as an SSE stream; the baseline drives ``Llama.generate()`` and detokenizes
each token, the least any application can do. Runs alternate between the two.

Decode speed is (tokens - 1) / (time of the last token - time of the first token),
so it leaves out prefill; time to first token is reported separately.

    .venv/bin/python bench/worker_throughput.py --model smollm2-135m-instruct --threads 2 --max-tokens 256 --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import time
from pathlib import Path
from typing import Any, NamedTuple

from worker_process import start_worker, stream_completion

from corral.sources import resolve_source
from corral.worker.llama_model import load_llama

PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle."


class Run(NamedTuple):
    """Raw timings of one generation, relative to the request."""

    tokens: int
    ttft_s: float
    last_s: float
    text: str

    @property
    def decode_tok_s(self) -> float:
        return (self.tokens - 1) / (self.last_s - self.ttft_s)


def run_direct(llama: Any, prompt_tokens: list[int], max_tokens: int) -> Run:
    """llama-cpp-python in this process: generate() token by token, detokenizing each."""
    pieces: list[bytes] = []
    start = time.perf_counter()
    first = 0.0
    generator = llama.generate(
        prompt_tokens, temp=0.0, top_k=0, top_p=1.0, min_p=0.0, repeat_penalty=1.0
    )
    for count, token in enumerate(generator, 1):
        pieces.append(llama.detokenize([token]))
        if count == 1:
            first = time.perf_counter() - start
        if count == max_tokens:
            break
    last = time.perf_counter() - start
    generator.close()
    return Run(max_tokens, first, last, b"".join(pieces).decode("utf-8", errors="replace"))


def run_worker(port: int, prompt: str, max_tokens: int) -> Run:
    """One streamed /v1/completions request; timestamps of the first and last text chunk."""
    streamed = stream_completion(port, prompt, max_tokens)
    return Run(streamed.usage["completion_tokens"], streamed.first_s, streamed.last_s, streamed.text)


def summarize(runs: list[Run]) -> dict[str, Any]:
    speeds = [r.decode_tok_s for r in runs]
    return {
        "decode_tok_s": [round(v, 2) for v in speeds],
        "decode_tok_s_median": round(statistics.median(speeds), 2),
        "decode_tok_s_best": round(max(speeds), 2),
        "ttft_s": [round(r.ttft_s, 4) for r in runs],
        "tokens": [r.tokens for r in runs],
    }


def print_table(result: dict[str, Any]) -> None:
    print(
        f"\n{result['model']}  threads={result['threads']}  prompt={result['prompt_tokens']} tokens"
        f"  max_tokens={result['max_tokens']}  runs={result['runs']} (alternating)"
    )
    print(f"{'decode tok/s':30}{'median':>10}{'best':>10}{'ttft s':>10}   every run")
    for name, key in (
        ("llama-cpp-python in process", "direct"),
        ("corral worker over HTTP", "worker"),
    ):
        side = result[key]
        runs = " ".join(f"{v:.1f}" for v in side["decode_tok_s"])
        print(
            f"{name:30}{side['decode_tok_s_median']:>10.2f}{side['decode_tok_s_best']:>10.2f}"
            f"{statistics.median(side['ttft_s']):>10.3f}   {runs}"
        )
    print(
        f"worker / direct: median {result['worker_over_direct']:.3f}, best "
        f"{result['worker_over_direct_best']:.3f} (goal >= 0.95); same text: {result['same_text']}"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", default="smollm2-135m-instruct", help="a packaged model name or a GGUF path"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--context-length", type=int, default=2048)
    parser.add_argument("--prompt", default=PROMPT)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "out" / "worker_throughput.json"
    )
    return parser.parse_args()


def measure(args: argparse.Namespace) -> tuple[list[Run], list[Run], int]:
    """Alternate direct and worker runs; returns (direct, worker, prompt tokens)."""
    llama = load_llama(
        resolve_source(args.model).weights, context_length=args.context_length, threads=args.threads
    )
    prompt_tokens = llama.tokenize(args.prompt.encode(), add_bos=True, special=True)
    process, port, stack = start_worker(args.model, args.threads, args.context_length)
    direct: list[Run] = []
    worker: list[Run] = []
    try:
        run_worker(port, args.prompt, 8)  # warm up both sides once
        run_direct(llama, prompt_tokens, 8)
        for _ in range(args.runs):
            direct.append(run_direct(llama, prompt_tokens, args.max_tokens))
            worker.append(run_worker(port, args.prompt, args.max_tokens))
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
        stack.unlink()
    return direct, worker, len(prompt_tokens)


def main() -> None:
    args = parse_args()
    direct, worker, prompt_tokens = measure(args)
    result = {
        "model": args.model,
        "threads": args.threads,
        "max_tokens": args.max_tokens,
        "runs": args.runs,
        "prompt_tokens": prompt_tokens,
        "direct": summarize(direct),
        "worker": summarize(worker),
        "same_text": direct[-1].text == worker[-1].text,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
    }
    for suffix, stat in (("", "decode_tok_s_median"), ("_best", "decode_tok_s_best")):
        result[f"worker_over_direct{suffix}"] = round(
            result["worker"][stat] / result["direct"][stat], 4
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
