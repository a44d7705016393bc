"""kill -9 of the worker serving a stream, through `corral up` with two real SmolLM2 replicas.

The client of that stream gets an SSE error event and a clean end of the response; the next
200 requests (4 at a time) all succeed on the other replica; the supervisor restarts the
killed worker on its port. The router names the endpoint that answered in
``x-corral-endpoint``; the worker's command line carries its ``--port``.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
from tests.integration.conftest import RunningStack, stack_from_text

pytestmark = pytest.mark.slow

STACK = """
models:
  - name: smollm2-135m-instruct
    aliases: [chat]
    task: chat
    engine: llamacpp
    source: smollm2-135m-instruct
    replicas: 2
    threads: 1
    context_length: 1024
supervisor:
  restart_backoff_s: 0.2
"""
MESSAGES = [{"role": "user", "content": "Tell me a long story about a lighthouse keeper."}]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    with stack_from_text(tmp_path_factory, "kill-mid-stream", STACK) as running:
        yield running


def worker_pid(stack: RunningStack, endpoint: str) -> int:
    port = urlsplit(endpoint).port
    found = [pid for pid, cmd in stack.children().items() if f"--port {port} " in f"{cmd} "]
    assert len(found) == 1, (endpoint, stack.children())
    return found[0]


def data_frames(lines: list[str]) -> list[str]:
    return [line[len("data: "):] for line in lines if line.startswith("data: ")]


def test_kill_9_mid_stream(stack: RunningStack) -> None:
    body = {"model": "chat", "messages": MESSAGES, "stream": True, "max_tokens": 800, "ignore_eos": True,
            "temperature": 0}
    lines: list[str] = []
    with httpx.Client(base_url=stack.base_url, timeout=60) as client:
        with client.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            endpoint = response.headers["x-corral-endpoint"]
            victim = worker_pid(stack, endpoint)
            for line in response.iter_lines():  # ends without an exception: a clean end
                lines.append(line)
                if len(data_frames(lines)) == 5:
                    os.kill(victim, signal.SIGKILL)
        frames = data_frames(lines)
        assert len(frames) > 5 and "[DONE]" not in frames, frames[-3:]
        content = [orjson.loads(frame) for frame in frames[:-1]]
        assert all(chunk["object"] == "chat.completion.chunk" for chunk in content)
        error = orjson.loads(frames[-1])["error"]
        assert error["code"] == "upstream_error" and "mid-stream" in error["message"], error

        def follow_up(index: int) -> str:
            reply = client.post("/v1/chat/completions", json={
                "model": "chat", "messages": [{"role": "user", "content": f"Say {index}."}], "max_tokens": 2,
            })
            assert reply.status_code == 200, reply.text
            assert reply.json()["choices"][0]["message"]["content"] is not None
            return reply.headers["x-corral-endpoint"]

        with ThreadPoolExecutor(4) as pool:
            served = list(pool.map(follow_up, range(200)))
    assert len(served) == 200
    assert served[0] != endpoint  # the killed one is out of the pool at once

    deadline = time.monotonic() + 60
    while "ready again" not in stack.output() and time.monotonic() < deadline:
        time.sleep(0.25)
    assert "ready again" in stack.output(), stack.output()
    restarted = worker_pid(stack, endpoint)  # the same port, a new process
    assert restarted != victim
