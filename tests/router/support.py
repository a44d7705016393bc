"""Shared pieces for the router tests: stacks, a running router, an in-memory client."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, NamedTuple

import orjson
from tests.fakes.server import serve_app

from corral.config import StackConfig, parse_stack
from corral.router import RouterApp, create_app
from corral.router.transport.asgi_transport import ASGITransport
from corral.router.transport.base import Transport

CHAT_MESSAGES = [{"role": "user", "content": "hello there"}]


def make_stack(
    chat: Sequence[str] = (),
    embed: Sequence[str] = (),
    *,
    policy: str = "least_loaded",
    **router: Any,
) -> StackConfig:
    """``chat-model`` (alias ``chat``) and ``embed-model`` (alias ``embed``) at the given URLs."""

    def model(name: str, alias: str, task: str, urls: Sequence[str]) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": name, "aliases": [alias], "task": task, "source": "fake"}
        if urls:  # external workers
            return {**entry, "engine": "vllm", "replicas": 0, "endpoints": list(urls)}
        # workers the supervisor would start: no endpoint known to the router
        return {**entry, "engine": "llamacpp" if task == "chat" else "onnx-embed"}

    router_config = {"routing": {"policy": policy}, "health_interval_s": 60, **router}
    return parse_stack(
        {
            "router": router_config,
            "models": [
                model("chat-model", "chat", "chat", chat),
                model("embed-model", "embed", "embedding", embed),
            ],
        }
    )


@contextlib.asynccontextmanager
async def started(
    stack: StackConfig, transport: Transport | None = None, seed: int = 0
) -> AsyncIterator[RouterApp]:
    """The router app with its lifespan run (no server)."""
    app = create_app(stack, transport=transport, rng=random.Random(seed))
    await app.startup()
    try:
        yield app
    finally:
        await app.shutdown()


class Reply(NamedTuple):
    status: int
    headers: dict[bytes, bytes]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


class InMemoryClient:
    """Calls the router app through the in-memory transport (a real ASGI exchange)."""

    def __init__(self, app: Any) -> None:
        self._transport = ASGITransport({"http://router": app})

    async def post(
        self, path: str, body: bytes | dict[str, Any], headers: Sequence[tuple[str, str]] = ()
    ) -> Reply:
        raw = body if isinstance(body, bytes) else orjson.dumps(body)
        sent_headers = [("content-type", "application/json"), *headers]
        return await self._exchange("POST", path, raw, sent_headers)

    async def get(self, path: str) -> Reply:
        return await self._exchange("GET", path, b"", [])

    async def _exchange(
        self, method: str, path: str, body: bytes, headers: Sequence[tuple[str, str]]
    ) -> Reply:
        response = await self._transport.send("http://router", path, body, headers, method=method)
        try:
            data = b"".join([chunk async for chunk in response.chunks()])
        finally:
            await response.aclose()
        return Reply(response.status, dict(response.headers), data)


@contextlib.asynccontextmanager
async def serving(*engines: Any) -> AsyncIterator[list[str]]:
    """Serve each fake engine on its own 127.0.0.1 port; yields their base URLs."""
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(serve_app(engine, lifespan="off")) for engine in engines
        ]


@contextlib.asynccontextmanager
async def serving_router(stack: StackConfig, seed: int = 0) -> AsyncIterator[tuple[str, RouterApp]]:
    """The router on a real 127.0.0.1 port, with its real aiohttp transport."""
    app = create_app(stack, rng=random.Random(seed))
    async with serve_app(app, lifespan="on") as url:
        yield url, app


async def eventually(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Wait until ``condition()`` holds (checked every few milliseconds), or fail."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        if condition():
            return
        if loop.time() > deadline:
            raise AssertionError(f"still false after {timeout_s} s")
        await asyncio.sleep(0.002)
