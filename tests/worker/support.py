"""Fakes and servers for the worker's tests (fixtures in conftest.py).

FakeTextEngine and FakeEmbeddingEngine are real implementations of the engine
protocols (no mocks): words are tokens, generation replays a script of text pieces
on the event loop, and every stream's fate (finished, cancelled) is recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import llama_cpp.llama_cpp as llama_lib
import numpy as np
import openai
import uvicorn
from openai.types import CompletionUsage
from starlette.applications import Starlette

from corral.config import ModelConfig
from corral.errors import APIError, ContextLengthError, InvalidRequestError, OverloadedError
from corral.serving import server_config
from corral.worker.app import create_app
from corral.worker.engine import ChatPrompt, Embeddings, Prompt, SamplingParams
from corral.worker.kv_events import KVEventLog
from corral.worker.prefix_store import PrefixStats
from corral.worker.streams import TokenStream


@dataclass
class FakeTextEngine:
    """Tokens are words; each generation yields ``script`` one piece per token."""

    context_length: int = 64
    capacity: int = 2
    script: tuple[str, ...] = ("Hello", ",", " world", "!")
    delay_s: float = 0.0
    fail_after: int | None = None
    load_gate: asyncio.Event | None = None
    load_error: Exception | None = None
    loaded: bool = False
    started: list[TokenStream] = field(default_factory=list)
    cancelled: list[TokenStream] = field(default_factory=list)
    params: list[SamplingParams] = field(default_factory=list)
    first_token: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False

    async def start(self) -> None:
        if self.load_gate is not None:
            await self.load_gate.wait()
        if self.load_error is not None:
            raise self.load_error
        self.loaded = True

    async def aclose(self) -> None:
        self.closed = True

    async def tokenize(self, prompt: Prompt, *, add_special_tokens: bool = True) -> list[int]:
        if isinstance(prompt, list):
            return prompt
        if isinstance(prompt, ChatPrompt):
            if any(m["content"] == "raise" for m in prompt.messages):
                raise InvalidRequestError("template refused", param="messages")
            prompt = " ".join(m["content"] for m in prompt.messages)
        return [len(word) for word in prompt.split()]

    async def detokenize(self, tokens: Sequence[int]) -> str:
        return " ".join("x" * token for token in tokens)

    def generate(self, prompt_tokens: list[int], params: SamplingParams) -> TokenStream:
        max_tokens = params.max_tokens or self.context_length - len(prompt_tokens)
        if len(prompt_tokens) + max_tokens > self.context_length:
            raise ContextLengthError("too long for the fake context")
        if sum(not s.ended and not s.cancelled for s in self.started) >= self.capacity:
            raise OverloadedError("fake queue full", retry_after_s=2)
        stream = TokenStream(len(prompt_tokens))
        self.started.append(stream)
        self.params.append(params)
        stream.on_cancel(lambda: self.cancelled.append(stream))
        asyncio.get_running_loop().create_task(self._produce(stream, max_tokens))
        return stream

    async def _produce(self, stream: TokenStream, max_tokens: int) -> None:
        count = 0
        for piece in self.script[:max_tokens]:
            await asyncio.sleep(self.delay_s)
            if stream.cancelled:
                return
            if self.fail_after is not None and count >= self.fail_after:
                stream.fail(APIError("the fake engine broke"))
                return
            stream.push(piece)
            count += 1
            self.first_token.set()
        stream.finish(
            "length" if max_tokens <= len(self.script) else "stop", count, cached_tokens=1
        )


@dataclass
class FakePrefixEngine(FakeTextEngine):
    """A FakeTextEngine that publishes KV events: tests record blocks into its log."""

    kv_events: KVEventLog = field(default_factory=lambda: KVEventLog(block_size=4))
    prefix_stats: PrefixStats = field(default_factory=lambda: PrefixStats(1, 2, 300, 1000))


@dataclass
class FakeEmbeddingEngine:
    """Vector i of a text is one-hot at ``len(text) % dimensions``."""

    dimensions: int = 4
    context_length: int = 16
    loaded: bool = False

    async def start(self) -> None:
        self.loaded = True

    async def aclose(self) -> None:
        self.loaded = False

    async def tokenize(self, prompt: Prompt, *, add_special_tokens: bool = True) -> list[int]:
        if isinstance(prompt, ChatPrompt):
            raise InvalidRequestError("no messages here", param="messages")
        return prompt if isinstance(prompt, list) else [ord(c) for c in prompt]

    async def detokenize(self, tokens: Sequence[int]) -> str:
        return "".join(chr(t) for t in tokens)

    async def embed(self, inputs: Sequence[str | list[int]]) -> Embeddings:
        vectors = np.zeros((len(inputs), self.dimensions), np.float32)
        for row, item in enumerate(inputs):
            vectors[row, len(item) % self.dimensions] = 1.0
        return Embeddings(vectors, sum(len(item) for item in inputs))


def model_config(task: str = "chat", engine: str = "llamacpp", **extra: object) -> ModelConfig:
    return ModelConfig.model_validate(
        {
            "name": "test-model",
            "aliases": ["alias"],
            "task": task,
            "engine": engine,
            "source": "x",
            **extra,
        }
    )


class _QuietServer(uvicorn.Server):
    """Leaves the test runner's signal handlers alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.asynccontextmanager
async def running(app: Starlette) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1, port 0, in this event loop; yield its URL."""
    sock = _bound_socket()
    server = _QuietServer(server_config(app, host="127.0.0.1", port=0, drain_timeout_s=1.0))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.005)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task


@contextlib.contextmanager
def running_in_thread(app: Starlette) -> Iterator[str]:
    """Serve ``app`` on its own thread and loop (uvloop), for module-scoped real-model servers."""
    sock = _bound_socket()
    server = _QuietServer(server_config(app, host="127.0.0.1", port=0, drain_timeout_s=1.0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the test server did not start")
        threading.Event().wait(0.005)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)


class RealWorker(NamedTuple):
    url: str
    engine: Any


def real_worker(config: dict[str, Any]) -> Iterator[RealWorker]:
    from corral.worker.server import create_engine

    model = ModelConfig.model_validate(config)
    engine = create_engine(model)
    with running_in_thread(create_app(model, engine)) as url:
        deadline = time.monotonic() + 60
        while not engine.loaded:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{model.name} did not load")
            time.sleep(0.02)
        yield RealWorker(url, engine)


# -- helpers shared by the test modules -------------------------------------------------


async def wait_until(condition: Callable[[], object], timeout_s: float = 2.0) -> None:
    """Poll a fake's recorded state (the fakes expose lists and flags, not events)."""
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)


def post(url: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def usage_of(reply: Any) -> CompletionUsage:
    usage: CompletionUsage | None = reply.usage
    assert usage is not None, "the worker sends usage on every response"
    return usage


def prompt_evals(engine: Any) -> tuple[int, int]:
    """llama.cpp's own counters: (prompt tokens evaluated in batches, single-token evals)."""
    perf = llama_lib.llama_perf_context(engine.llama.ctx)
    return perf.n_p_eval, perf.n_eval
