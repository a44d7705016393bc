"""The production transport: one pooled aiohttp client session per process.

Bodies pass through untouched in both directions: no decompression, no re-encoding; no
cookies are kept.
Create it inside the running event loop (the router does so in its lifespan).
"""

from __future__ import annotations

from collections.abc import Sequence

import aiohttp

from corral.router.transport.base import (
    ConnectError,
    RawHeaders,
    StreamError,
    TransportError,
    TransportTimeout,
)


class AiohttpTransport:
    """:class:`~corral.router.transport.base.Transport` over one ``aiohttp.ClientSession``."""

    def __init__(
        self, *, connect_timeout_s: float, request_timeout_s: float, idle_timeout_s: float | None = None
    ) -> None:
        self._connect_timeout_s = connect_timeout_s
        self._idle_timeout_s = idle_timeout_s
        self._timeout = aiohttp.ClientTimeout(
            total=request_timeout_s,
            connect=connect_timeout_s,
            sock_connect=connect_timeout_s,
            sock_read=idle_timeout_s,  # the longest silence: before the first byte and between chunks
        )
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, enable_cleanup_closed=False)
        self._session = aiohttp.ClientSession(
            connector=connector,
            # One session serves every client: a cookie a worker set for one must never go
            # out with another's request (the client gets Set-Cookie as it is).
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=self._timeout,
            auto_decompress=False,
            skip_auto_headers=("Accept-Encoding", "User-Agent"),
            raise_for_status=False,
        )

    async def send(
        self,
        endpoint_url: str,
        path: str,
        body: bytes,
        headers: Sequence[tuple[str, str]],
        *,
        method: str = "POST",
        timeout_s: float | None = None,
    ) -> AiohttpResponse:
        timeout = self._timeout
        if timeout_s is not None:
            timeout = aiohttp.ClientTimeout(
                total=timeout_s,
                connect=self._connect_timeout_s,
                sock_connect=self._connect_timeout_s,
                sock_read=self._idle_timeout_s,
            )
        try:
            response = await self._session.request(
                method, endpoint_url + path, data=body or None, headers=headers, timeout=timeout
            )
        except aiohttp.ClientConnectorError as exc:
            raise ConnectError(
                f"cannot connect to {endpoint_url}: {exc.os_error}", endpoint=endpoint_url
            ) from exc
        except aiohttp.ConnectionTimeoutError as exc:
            raise ConnectError(
                f"connecting to {endpoint_url} timed out", endpoint=endpoint_url
            ) from exc
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise _translate(exc, endpoint_url) from exc
        return AiohttpResponse(response, endpoint_url)

    async def aclose(self) -> None:
        await self._session.close()


class AiohttpResponse:
    """An upstream response whose body is read as it arrives."""

    __slots__ = ("_endpoint_url", "_eof", "_response", "headers", "status")

    def __init__(self, response: aiohttp.ClientResponse, endpoint_url: str) -> None:
        self._response = response
        self._endpoint_url = endpoint_url
        self._eof = False
        self.status = response.status
        self.headers: RawHeaders = [(name.lower(), value) for name, value in response.raw_headers]

    def chunks(self) -> AiohttpResponse:
        return self

    def __aiter__(self) -> AiohttpResponse:
        return self

    async def __anext__(self) -> bytes:
        try:
            chunk = await self._response.content.readany()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise _translate(exc, self._endpoint_url) from exc
        if not chunk:
            self._eof = True
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        if self._eof or self._response.content.at_eof():
            self._response.release()  # the connection goes back to the pool
        else:
            self._response.close()  # drops the connection: the worker sees the client leave


def _translate(exc: Exception, endpoint_url: str) -> TransportError:
    """aiohttp's errors and timeouts (read or total) -> ours."""
    if isinstance(exc, TimeoutError):
        return TransportTimeout(f"{endpoint_url} did not answer in time", endpoint=endpoint_url)
    detail = str(exc) or type(exc).__name__
    return StreamError(f"connection to {endpoint_url} failed: {detail}", endpoint=endpoint_url)
