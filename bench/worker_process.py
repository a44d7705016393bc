"""A corral worker in its own process on 127.0.0.1, for benchmarks: start it, wait for /health."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

RUN_WORKER = (
    "import sys; from corral.config import load_stack; from corral.worker.server import serve; "
    "serve(load_stack(sys.argv[1]), 'bench', host='127.0.0.1', port=int(sys.argv[2]))"
)


def start_worker(
    model: str, threads: int, context_length: int, *, cache_yaml: str = ""
) -> tuple[subprocess.Popen[bytes], int, Path]:
    """A completion worker named ``bench`` for ``model``; ``cache_yaml`` is the stack's cache section."""
    stack = Path(tempfile.mkstemp(suffix=".yaml")[1])
    stack.write_text(
        (f"cache: {cache_yaml}\n" if cache_yaml else "")
        + "models:\n"
        f"  - {{name: bench, task: completion, engine: llamacpp, source: '{model}', "
        f"threads: {threads}, context_length: {context_length}}}\n"
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    process = subprocess.Popen([sys.executable, "-c", RUN_WORKER, str(stack), str(port)])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the worker exited with status {process.returncode}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return process, port, stack
        except OSError:
            pass
        time.sleep(0.1)
    process.kill()
    raise SystemExit("the worker did not become healthy in 120 s")


def open_completion_stream(port: int, prompt: str, max_tokens: int) -> tuple[float, http.client.HTTPResponse]:
    """POST a greedy, EOS-ignoring streamed completion to the worker; (start time, response)."""
    body = {
        "model": "bench",
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    start = time.perf_counter()
    connection.request("POST", "/v1/completions", json.dumps(body), {"content-type": "application/json"})
    return start, connection.getresponse()


class Streamed(NamedTuple):
    """A streamed completion as the client saw it: first and last text chunk (seconds after
    sending), the text, and the final usage."""

    first_s: float
    last_s: float
    text: str
    usage: dict[str, Any]


def stream_completion(port: int, prompt: str, max_tokens: int) -> Streamed:
    """:func:`open_completion_stream`, read to the end."""
    start, response = open_completion_stream(port, prompt, max_tokens)
    first = last = 0.0
    texts: list[str] = []
    usage: dict[str, Any] = {}
    for line in response:
        if not line.startswith(b"data: {"):
            continue
        chunk = json.loads(line[6:])
        if chunk.get("usage"):
            usage = chunk["usage"]
        elif chunk["choices"] and chunk["choices"][0]["text"]:
            last = time.perf_counter() - start
            first = first or last
            texts.append(chunk["choices"][0]["text"])
    response.close()
    return Streamed(first, last, "".join(texts), usage)
