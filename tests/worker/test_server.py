"""serve() in a real process: it drains on SIGTERM and exits 0; a failed load exits non-zero."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

Worker = tuple[subprocess.Popen[bytes], str]

pytestmark = pytest.mark.slow

RUN_WORKER = (
    "import sys; from corral.config import load_stack; from corral.worker.server import serve; "
    "serve(load_stack(sys.argv[1]), sys.argv[2], host='127.0.0.1', port=int(sys.argv[3]))"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_stack(tmp_path: Path, source: str) -> Path:
    stack = tmp_path / "stack.yaml"
    stack.write_text(
        "worker:\n  drain_timeout_s: 20\n"
        f"models:\n  - {{name: smol, task: chat, engine: llamacpp, source: '{source}', threads: 2}}\n"
    )
    return stack


@pytest.fixture
def worker(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Worker]:
    source = getattr(request, "param", "smollm2-135m-instruct")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", RUN_WORKER, str(write_stack(tmp_path, source)), "smol", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        yield process, f"http://127.0.0.1:{port}"
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def wait_healthy(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.05)
    raise AssertionError("the worker never became healthy")


def test_sigterm_drains_the_stream_in_flight_then_exits_0(worker: Worker) -> None:
    process, url = worker
    wait_healthy(url, process)
    body = {
        "model": "smol",
        "prompt": "Count:",
        "max_tokens": 40,
        "ignore_eos": True,
        "stream": True,
    }
    request = urllib.request.Request(f"{url}/v1/completions", data=json.dumps(body).encode())
    with urllib.request.urlopen(request, timeout=60) as response:
        first = response.readline()
        process.send_signal(signal.SIGTERM)
        rest = response.read().decode()
    assert first.startswith(b"data: {")
    frames = [f for f in rest.split("\n\n") if f.startswith("data: {")]
    assert rest.rstrip().endswith("data: [DONE]")
    assert json.loads(frames[-1][6:])["choices"][0]["finish_reason"] == "length"
    assert process.wait(30) == 0


@pytest.mark.parametrize("worker", ["/nonexistent/model.gguf"], indirect=True)
def test_a_model_that_cannot_load_ends_the_process_with_an_error(worker: Worker) -> None:
    process, _ = worker
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0
    assert b"does not exist" in stderr


def test_sigterm_ends_kv_event_streams_at_once(worker: Worker) -> None:
    process, url = worker
    wait_healthy(url, process)
    with urllib.request.urlopen(f"{url}/v1/kv/events", timeout=30) as events:
        snapshot = json.loads(events.readline().removeprefix(b"data: "))
        assert snapshot["events"] == [{"type": "AllBlocksCleared"}]
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        events.read()  # returns when the server ends the stream
    assert process.wait(30) == 0
    assert time.monotonic() - started < 5  # the stream did not hold the 20 s drain up
