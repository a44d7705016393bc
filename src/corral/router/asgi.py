"""Small raw-ASGI pieces for the router: read a bounded body, send JSON and errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from corral.errors import APIError, PayloadTooLargeError
from corral.router.headers import content_length
from corral.router.transport.base import RawHeaders

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON = b"application/json"


class ClientDisconnected(Exception):
    """The client left before its request was read; there is no one to answer."""


#: How much of an oversize body is read and thrown away so that the client gets its 413
#: instead of a broken pipe; a body declared or sent past this just has its connection closed.
DISCARD_LIMIT_BYTES = 64 * 1024 * 1024


async def read_body(scope: Scope, receive: Receive, limit_bytes: int) -> bytes:
    """The whole request body, or 413 once it is known to exceed the limit.

    The rest of an oversize body is read and dropped (up to DISCARD_LIMIT_BYTES) before
    the error is answered, so an ordinary client sees the 413 rather than a reset.
    """
    declared = content_length(scope["headers"])
    discard_limit = max(DISCARD_LIMIT_BYTES, limit_bytes)
    if declared is not None and declared > discard_limit:
        raise PayloadTooLargeError(limit_bytes)
    too_large = declared is not None and declared > limit_bytes
    parts: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk: bytes = message.get("body", b"")
        more = bool(message.get("more_body", False))
        size += len(chunk)
        too_large = too_large or size > limit_bytes
        if size > discard_limit:
            break
        if not too_large:
            parts.append(chunk)
    if too_large:
        raise PayloadTooLargeError(limit_bytes)
    return parts[0] if len(parts) == 1 else b"".join(parts)


async def send_bytes(
    send: Send,
    status: int,
    body: bytes,
    *,
    content_type: bytes = JSON,
    headers: RawHeaders | None = None,
) -> None:
    raw = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if headers:
        raw.extend(headers)
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_error(send: Send, error: APIError) -> None:
    """An error in OpenAI's JSON shape, with the error's own headers (e.g. Retry-After)."""
    extra = [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in error.headers.items()
    ]
    if isinstance(error, PayloadTooLargeError):
        extra.append((b"connection", b"close"))  # the unread rest of the body is not worth reading
    await send_bytes(send, error.status, error.to_json(), headers=extra)
