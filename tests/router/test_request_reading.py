"""Reading a request: the routing fields, and the body size limit enforced while reading."""

from __future__ import annotations

from typing import Any

import pytest

from corral.errors import InvalidRequestError, PayloadTooLargeError
from corral.protocol.fields import parse_json_object, routing_fields
from corral.router.asgi import DISCARD_LIMIT_BYTES, ClientDisconnected, read_body


class Receiver:
    """ASGI receive that hands out the given messages and counts how many were read."""

    def __init__(self, *messages: dict[str, Any]) -> None:
        self.messages = list(messages)
        self.read = 0

    async def __call__(self) -> dict[str, Any]:
        self.read += 1
        return self.messages.pop(0)


def scope(content_length: int | None = None) -> dict[str, Any]:
    headers = [] if content_length is None else [(b"content-length", str(content_length).encode())]
    return {"type": "http", "headers": headers}


def part(body: bytes, more: bool) -> dict[str, Any]:
    return {"type": "http.request", "body": body, "more_body": more}


def test_routing_fields_read_model_stream_user() -> None:
    data = parse_json_object(b'{"model":"m","stream":true,"user":"u1","messages":[]}')
    assert routing_fields(data) == ("m", True, "u1")
    assert routing_fields({"model": "m", "stream": None}) == ("m", False, None)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"messages": []}', "'model' is required"),
        (b'{"model": 3}', "'model' is required"),
        (b'{"model": "m", "stream": "yes"}', "'stream' must be a boolean"),
        (b'{"model": "m", "user": 5}', "'user' must be a string"),
    ],
)
def test_bad_routing_fields_are_400(body: bytes, fragment: str) -> None:
    with pytest.raises(InvalidRequestError, match=fragment) as caught:
        routing_fields(parse_json_object(body))
    assert caught.value.status == 400


async def test_body_in_one_message() -> None:
    assert await read_body(scope(5), Receiver(part(b"hello", False)), 1024) == b"hello"


async def test_body_in_parts_is_joined() -> None:
    receive = Receiver(part(b"ab", True), part(b"", True), part(b"cd", False))
    assert await read_body(scope(), receive, 1024) == b"abcd"


async def test_declared_oversize_is_read_and_dropped_then_refused() -> None:
    """The client gets its 413 instead of a broken pipe: the rest of the body is drained."""
    receive = Receiver(part(b"x" * 1000, True), part(b"x" * 1000, False))
    with pytest.raises(PayloadTooLargeError) as caught:
        await read_body(scope(2000), receive, 1024)
    assert receive.read == 2
    assert caught.value.status == 413


async def test_body_declared_past_the_discard_limit_is_refused_before_reading() -> None:
    receive = Receiver(part(b"x", False))
    with pytest.raises(PayloadTooLargeError):
        await read_body(scope(DISCARD_LIMIT_BYTES + 1), receive, 1024)
    assert receive.read == 0


async def test_undeclared_oversize_is_drained_then_refused() -> None:
    receive = Receiver(*[part(b"x" * 400, True) for _ in range(10)], part(b"", False))
    with pytest.raises(PayloadTooLargeError):
        await read_body(scope(), receive, 1024)
    assert receive.read == 11


async def test_single_oversize_message_is_refused() -> None:
    with pytest.raises(PayloadTooLargeError):
        await read_body(scope(), Receiver(part(b"x" * 1025, False)), 1024)


async def test_body_exactly_at_the_limit_is_accepted() -> None:
    assert len(await read_body(scope(1024), Receiver(part(b"x" * 1024, False)), 1024)) == 1024


async def test_client_leaving_mid_body() -> None:
    with pytest.raises(ClientDisconnected):
        await read_body(scope(), Receiver(part(b"ab", True), {"type": "http.disconnect"}), 1024)
