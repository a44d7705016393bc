"""Is `corral bench` ever the bottleneck? Its request rate against a server that answers instantly.

Starts an instant fake engine in its own process (a raw asyncio Protocol under uvloop that
answers every POST with the same pre-built SSE stream: N chunks, a usage chunk, [DONE];
either in one write, or ``spaced``: one write per chunk, 1 ms apart, so that the client
pays for one socket read and one timestamp per chunk),
then runs the real CLI, `python -m corral bench`, in another process at several concurrency
levels, and reads request throughput from the JSON result. Both processes share this
machine's cores, so the figure is a lower bound for the client alone.

    .venv/bin/python bench/client_throughput.py                 # table + bench/out/client_throughput.json
    .venv/bin/python bench/client_throughput.py --num-prompts 20000 --concurrency 32,128
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

HERE = Path(__file__).resolve().parent
TARGET_RPS = 1000.0
#: Gap between the chunks of a ``spaced`` answer: long enough that each chunk is its own read.
SPACED_S = 0.001


# -- the instant engine (runs with --serve) -------------------------------------------------


def canned_stream(tokens: int) -> list[bytes]:
    """One HTTP response as pieces (head + first chunk, each further chunk, the end):
    chunked SSE with ``tokens`` chat chunks, a usage chunk and [DONE]."""

    def chunk(data: bytes) -> bytes:
        return b"%x\r\n%s\r\n" % (len(data), data)

    events = [
        {
            "id": "x",
            "object": "chat.completion.chunk",
            "choices": [
                {
                    "index": 0,
                    "delta": {"content": f" t{i}"},
                    "finish_reason": "length" if i == tokens - 1 else None,
                }
            ],
        }
        for i in range(tokens)
    ]
    events.append(
        {"id": "x", "choices": [], "usage": {"prompt_tokens": 8, "completion_tokens": tokens}}
    )
    pieces = [chunk(b"data: " + orjson.dumps(e) + b"\n\n") for e in events]
    pieces[0] = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        + pieces[0]
    )
    pieces[-1] += chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"
    return pieces


class InstantEngine(asyncio.Protocol):
    """Answers each complete request (head + Content-Length body) with the canned stream:
    in one write (``whole``), or one write per SSE event, ``SPACED_S`` apart (``spaced``: the
    client then gets one read per chunk, the costly case for it)."""

    def __init__(self, pieces: list[bytes], spaced: bool) -> None:
        self._pieces = pieces
        self._whole = b"".join(pieces)
        self._spaced = spaced
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self._buffer[:end].lower()
            length = 0
            at = head.find(b"content-length:")
            if at >= 0:
                length = int(head[at + 15 :].split(b"\r\n", 1)[0])
            if len(self._buffer) < end + 4 + length:
                return
            path = head.split(b" ", 2)[1]
            self._buffer = self._buffer[end + 4 + length :]
            assert self._transport is not None
            if path == b"/tokenize":  # no tokenizer here: the bench estimates lengths
                self._transport.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            elif self._spaced:
                self._write_from(0)
            else:
                self._transport.write(self._whole)

    def _write_from(self, i: int) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        self._transport.write(self._pieces[i])
        if i + 1 < len(self._pieces):
            asyncio.get_running_loop().call_later(SPACED_S, self._write_from, i + 1)


async def serve(tokens: int, spaced: bool) -> None:
    loop = asyncio.get_running_loop()
    pieces = canned_stream(tokens)
    server = await loop.create_server(
        lambda: InstantEngine(pieces, spaced), "127.0.0.1", 0, backlog=4096
    )
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


# -- the measurement -------------------------------------------------------------------------


def start_engine(tokens: int, mode: str) -> tuple[subprocess.Popen[str], int]:
    engine = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--tokens", str(tokens), "--write", mode],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert engine.stdout is not None
    line = engine.stdout.readline()
    if not line.startswith("PORT "):
        engine.kill()
        raise RuntimeError(f"the instant engine did not start: {line!r}")
    return engine, int(line.split()[1])


def run_bench(
    port: int, mode: str, concurrency: int, num_prompts: int, out_dir: Path
) -> dict[str, object]:
    name = f"{mode}-c{concurrency}"
    command = [
        sys.executable,
        "-m",
        "corral",
        "bench",
        "--model",
        "instant",
        "--base-url",
        f"http://127.0.0.1:{port}",
        "--tokenize",
        "approx",
        "--num-prompts",
        str(num_prompts),
        "--input-len",
        "32",
        "--output-len",
        "16",
        "--max-concurrency",
        str(concurrency),
        "--warmup",
        "100",
        "--no-progress",
        "--no-plots",
        "--result-dir",
        str(out_dir),
        "--name",
        name,
    ]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"corral bench failed:\n{done.stdout}\n{done.stderr}")
    result = json.loads((out_dir / f"{name}.json").read_text())
    return {
        "engine_writes": mode,
        "max_concurrency": concurrency,
        "num_prompts": num_prompts,
        "completed": result["completed"],
        "failed": result["failed"],
        "duration_s": result["duration"],
        "request_throughput": result["request_throughput"],
        "output_throughput": result["output_throughput"],
        "mean_ttft_ms": result["mean_ttft_ms"],
        "p99_e2el_ms": result["p99_e2el_ms"],
        "process_wall_s": wall,
    }


def print_table(rows: list[dict[str, object]]) -> None:
    print(
        f"{'writes':>9} {'concurrency':>11} {'requests':>9} {'failed':>6} {'seconds':>8} {'req/s':>9} "
        f"{'tok/s':>9} {'TTFT ms':>8} {'p99 E2EL':>9}"
    )
    for r in rows:
        print(
            f"{r['engine_writes']:>9} {r['max_concurrency']:>11} {r['completed']:>9} {r['failed']:>6} {r['duration_s']:>8.2f} "
            f"{r['request_throughput']:>9.0f} {r['output_throughput']:>9.0f} {r['mean_ttft_ms']:>8.2f} "
            f"{r['p99_e2el_ms']:>9.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help="run the instant engine (internal)")
    parser.add_argument("--tokens", type=int, default=16, help="chunks per streamed answer")
    parser.add_argument("--num-prompts", type=int, default=10_000)
    parser.add_argument("--concurrency", default="16,64,256,512")
    parser.add_argument(
        "--write",
        choices=("whole", "spaced", "both"),
        default="both",
        help="how the engine writes each answer",
    )
    parser.add_argument("--out", type=Path, default=HERE / "out" / "client_throughput.json")
    args = parser.parse_args()
    if args.serve:
        import uvloop

        uvloop.run(serve(args.tokens, args.write == "spaced"))
        return
    modes = ("whole", "spaced") if args.write == "both" else (args.write,)
    rows = []
    for mode in modes:
        engine, port = start_engine(args.tokens, mode)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                for c in args.concurrency.split(","):
                    rows.append(run_bench(port, mode, int(c), args.num_prompts, Path(tmp)))
        finally:
            engine.kill()
            engine.wait()
    print_table(rows)
    best = {
        m: max(float(r["request_throughput"]) for r in rows if r["engine_writes"] == m)
        for m in modes
    }  # type: ignore[arg-type]
    worst_mode = min(best, key=lambda m: best[m])
    verdict = "PASS" if best[worst_mode] >= TARGET_RPS else "FAIL"
    for mode, rps in best.items():
        print(f"best with {mode} writes: {rps:.0f} streamed requests/s, {args.tokens} chunks each")
    print(
        f"{verdict}: target {TARGET_RPS:.0f} requests/s in every write mode; {os.cpu_count()} CPUs "
        "shared by the engine and the client"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "platform": platform.platform(),
                },
                "tokens_per_request": args.tokens,
                "target_request_throughput": TARGET_RPS,
                "best_request_throughput": best,
                "passed": verdict == "PASS",
                "runs": rows,
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
