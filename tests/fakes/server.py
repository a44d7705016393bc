"""Serve an ASGI app on 127.0.0.1 (port 0) inside the test's own event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal

import uvicorn


class _InLoopServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # signals stay with pytest


@contextlib.asynccontextmanager
async def serve_app(
    app: Any, *, lifespan: Literal["on", "off", "auto"] = "auto", drain_s: float = 1.0
) -> AsyncIterator[str]:
    """Yields the base URL (``http://127.0.0.1:PORT``) while ``app`` is served there."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        http="httptools",
        lifespan=lifespan,
        access_log=False,
        log_level="warning",
        log_config=None,
        timeout_graceful_shutdown=drain_s,  # type: ignore[arg-type]
    )
    server = _InLoopServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("server stopped before it started")
        await asyncio.sleep(0.005)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def closed_port_url() -> str:
    """A loopback URL where nothing listens (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"
