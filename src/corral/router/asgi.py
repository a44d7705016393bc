"""Small raw-ASGI pieces for the router: read a bounded body, send JSON and errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, ClassVar

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


class RouteNotFoundError(APIError):
    status: ClassVar[int] = 404
    type: ClassVar[str] = "not_found_error"

    def __init__(self, path: str) -> None:
        super().__init__(f"no route for {path}", code="route_not_found")


class MethodNotAllowedError(APIError):
    status: ClassVar[int] = 405
    type: ClassVar[str] = "invalid_request_error"

    def __init__(self, method: str, path: str, allowed: str) -> None:
        super().__init__(
            f"{method} is not allowed on {path} (use {allowed})",
            code="method_not_allowed",
            headers={"Allow": allowed},
        )


async def read_body(scope: Scope, receive: Receive, limit_bytes: int) -> bytes:
    """The whole request body, refusing (413) as soon as it is known to exceed the limit."""
    declared = content_length(scope["headers"])
    if declared is not None and declared > limit_bytes:
        raise PayloadTooLargeError(limit_bytes)
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientDisconnected
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        if len(body) > limit_bytes:
            raise PayloadTooLargeError(limit_bytes)
        return body
    parts = [body]
    size = len(body)
    while message.get("more_body", False):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit_bytes:
            raise PayloadTooLargeError(limit_bytes)
        parts.append(chunk)
    return b"".join(parts)


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
