"""The transport seam: how the router talks HTTP to a worker, in one method.

    Transport.send(endpoint_url, path, body, headers, *, method, timeout_s) -> UpstreamResponse

:class:`~corral.router.transport.aiohttp_transport.AiohttpTransport` is the production
implementation (one pooled client per process); :class:`~corral.router.transport.asgi_transport.ASGITransport`
calls an ASGI app in memory and is the fake the tests use.

Failures are raised as :class:`TransportError` subclasses, which are also
:class:`~corral.errors.UpstreamError` (502), so an escaping one still answers correctly:

    UpstreamError
    └── TransportError          the worker could not be reached or broke the exchange
        ├── ConnectError        nothing reached the worker: safe to retry, the endpoint is ejected
        ├── TransportTimeout    504: no answer (or no next byte) within the timeout
        └── StreamError         the connection failed after the request was sent
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import ClassVar, Protocol

from corral.errors import UpstreamError

#: Raw headers, ASGI style: lower-case names, byte values.
RawHeaders = list[tuple[bytes, bytes]]


class TransportError(UpstreamError):
    """A worker could not be reached, or the exchange with it failed."""


class ConnectError(TransportError):
    """The connection could not be made; the worker saw nothing of the request."""


class TransportTimeout(TransportError):
    status: ClassVar[int] = 504
    type: ClassVar[str] = "timeout_error"


class StreamError(TransportError):
    """The connection broke after the request was sent (before or during the response)."""


class UpstreamResponse(Protocol):
    """A worker's response whose body has not been read yet.

    ``headers`` are lower-case name/value byte pairs as the worker sent them.
    ``chunks()`` yields body bytes as they arrive (it may be iterated once) and raises
    :class:`TransportError` if the connection fails. ``aclose()`` must always be called:
    on a fully read body it returns the connection to the pool, otherwise it closes the
    connection, which is how a worker learns that the client went away.
    """

    status: int
    headers: RawHeaders

    def chunks(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class Transport(Protocol):
    """Sends one request to a worker and returns once the response headers arrived."""

    async def send(
        self,
        endpoint_url: str,
        path: str,
        body: bytes,
        headers: Sequence[tuple[str, str]],
        *,
        method: str = "POST",
        timeout_s: float | None = None,
    ) -> UpstreamResponse:
        """``timeout_s`` bounds the whole exchange (defaults to the transport's own)."""
        ...

    async def aclose(self) -> None: ...
