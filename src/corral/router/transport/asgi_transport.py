"""An in-memory transport that calls ASGI apps directly: the tests' fake network.

``ASGITransport({"http://w1": app})`` routes each request to the app registered under
its endpoint URL; a URL with no app raises :class:`ConnectError`, so removing an entry
takes a worker "down". The app sees a real ASGI exchange: the body, then
``http.disconnect`` once the response is complete or :meth:`aclose` was called early,
so fakes can observe a client that went away.
"""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping, Sequence
from typing import Any

from corral.router.transport.base import (
    ConnectError,
    RawHeaders,
    StreamError,
    TransportTimeout,
)

ASGIApp = Any  # Callable[[Scope, Receive, Send], Awaitable[None]]
_EOF = b""


class ASGITransport:
    """:class:`~corral.router.transport.base.Transport` over in-process ASGI apps."""

    def __init__(self, apps: MutableMapping[str, ASGIApp]) -> None:
        self.apps = apps

    async def send(
        self,
        endpoint_url: str,
        path: str,
        body: bytes,
        headers: Sequence[tuple[str, str]],
        *,
        method: str = "POST",
        timeout_s: float | None = None,
    ) -> ASGIResponse:
        app = self.apps.get(endpoint_url)
        if app is None:
            raise ConnectError(
                f"cannot connect to {endpoint_url}: no app there", endpoint=endpoint_url
            )
        exchange = ASGIResponse(endpoint_url, body)
        exchange.start(app, _scope(endpoint_url, method, path, body, headers))
        try:
            await asyncio.wait_for(asyncio.shield(exchange.started), timeout_s)
        except TimeoutError:
            exchange.started.add_done_callback(_consume)
            await exchange.aclose()
            raise TransportTimeout(
                f"{endpoint_url} did not answer in time", endpoint=endpoint_url
            ) from None
        except asyncio.CancelledError:
            # The caller gave up before the response started: the client went away. Like a
            # closed connection, that ends the app's side too, and nobody reads its outcome.
            exchange.started.add_done_callback(_consume)
            await asyncio.shield(exchange.aclose())
            raise
        return exchange

    async def aclose(self) -> None:
        return None


class ASGIResponse:
    """One in-memory exchange; also the :class:`UpstreamResponse` handed back."""

    def __init__(self, endpoint_url: str, body: bytes) -> None:
        self._endpoint_url = endpoint_url
        self._body: bytes | None = body
        self._chunks: asyncio.Queue[bytes | BaseException] = asyncio.Queue()
        self._gone = asyncio.Event()
        self._complete = False
        self._task: asyncio.Task[None] | None = None
        self.started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.status = 0
        self.headers: RawHeaders = []

    def start(self, app: ASGIApp, scope: dict[str, Any]) -> None:
        self._task = asyncio.create_task(app(scope, self._receive, self._send))
        self._task.add_done_callback(self._on_app_done)

    async def _receive(self) -> dict[str, Any]:
        if self._body is not None:
            body, self._body = self._body, None
            return {"type": "http.request", "body": body, "more_body": False}
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: dict[str, Any]) -> None:
        if self._gone.is_set() and not self._complete:
            return  # like a server whose client left: the bytes go nowhere
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = [(bytes(k).lower(), bytes(v)) for k, v in message.get("headers", [])]
            self.started.set_result(None)
        elif message["type"] == "http.response.body":
            if message.get("body"):
                self._chunks.put_nowait(bytes(message["body"]))
            if not message.get("more_body", False):
                self._complete = True
                self._chunks.put_nowait(_EOF)
                self._gone.set()

    def _on_app_done(self, task: asyncio.Task[None]) -> None:
        error = None if task.cancelled() else task.exception()
        if self._complete:
            return
        failure = StreamError(
            f"{self._endpoint_url} broke the connection ({error!r})", endpoint=self._endpoint_url
        )
        if not self.started.done():
            self.started.set_exception(failure)
        else:
            self._chunks.put_nowait(failure)

    def chunks(self) -> ASGIResponse:
        return self

    def __aiter__(self) -> ASGIResponse:
        return self

    async def __anext__(self) -> bytes:
        item = await self._chunks.get()
        if isinstance(item, BaseException):
            raise item
        if item is _EOF:
            self._chunks.put_nowait(_EOF)
            raise StopAsyncIteration
        return item

    async def aclose(self) -> None:
        self._gone.set()
        task = self._task
        if task is None or task.done():
            return
        await asyncio.wait({task}, timeout=1.0)
        if not task.done():
            task.cancel()
            await asyncio.wait({task})


def _consume(future: asyncio.Future[None]) -> None:
    """Retrieve an abandoned future's outcome (so asyncio does not report it as lost)."""
    if not future.cancelled():
        future.exception()


def _scope(
    endpoint_url: str, method: str, path: str, body: bytes, headers: Sequence[tuple[str, str]]
) -> dict[str, Any]:
    host = endpoint_url.split("://", 1)[-1].split("/", 1)[0]
    raw = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]
    raw.append((b"host", host.encode("latin-1")))
    if body:
        raw.append((b"content-length", str(len(body)).encode()))
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("latin-1"),
        "query_string": b"",
        "root_path": "",
        "headers": raw,
        "client": ("127.0.0.1", 0),
        "server": (host, 80),
    }
