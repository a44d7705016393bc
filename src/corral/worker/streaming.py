"""Responses that notice a client going away, and stop the work it asked for.

Both helpers listen for ``http.disconnect`` on the ASGI receive channel *while*
the work runs, instead of checking between frames: a client that closes its
connection while the engine is still prefilling, or while its request is waiting
in the queue, cancels it at once. (The request body has been read in full before,
so the only message left on the channel is the disconnect.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from typing import TypeVar

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

logger = logging.getLogger(__name__)

T = TypeVar("T")


async def wait_for_disconnect(receive: Receive) -> None:
    """Return when the client has disconnected (or the response is complete)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(receive: Receive, work: Awaitable[T]) -> T | None:
    """The result of ``work``, or ``None`` if the client left first (``work`` is then cancelled)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(wait_for_disconnect(receive))
    try:
        done, _ = await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
    return task.result() if task in done else None


class EventStreamResponse(Response):
    """``text/event-stream`` from an async iterator of ready-made SSE frames.

    ``on_close`` is called as soon as the client disconnects, and again (it must be
    idempotent) when the response ends for any reason, cancellation included.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        frames: AsyncGenerator[bytes, None],
        *,
        on_close: Callable[[], None],
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._frames = frames
        self._on_close = on_close
        self.status_code = 200
        self.background = None
        self.init_headers(
            {"cache-control": "no-cache", "x-accel-buffering": "no", **(headers or {})}
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        watcher = asyncio.ensure_future(wait_for_disconnect(receive))
        watcher.add_done_callback(self._client_left)
        try:
            async with contextlib.aclosing(self._frames) as frames:
                await send(
                    {
                        "type": "http.response.start",
                        "status": self.status_code,
                        "headers": self.raw_headers,
                    }
                )
                async for frame in frames:
                    if watcher.done():
                        return
                    await send({"type": "http.response.body", "body": frame, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # the client went away while we were writing to it
            logger.debug("client disconnected during a stream")
        finally:
            watcher.cancel()
            self._on_close()

    def _client_left(self, watcher: asyncio.Future[None]) -> None:
        if not watcher.cancelled():
            self._on_close()
