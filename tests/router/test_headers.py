"""Which headers cross the router in each direction."""

from __future__ import annotations

from corral.router import headers


def test_to_worker_keeps_what_matters_and_drops_hop_by_hop() -> None:
    sent = [
        (b"host", b"router:8000"),
        (b"authorization", b"Bearer k"),
        (b"content-type", b"application/json"),
        (b"content-length", b"12"),
        (b"x-request-id", b"r1"),
        (b"connection", b"keep-alive, x-hop"),
        (b"x-hop", b"1"),
        (b"transfer-encoding", b"chunked"),
        (b"expect", b"100-continue"),
        (b"upgrade", b"h2c"),
    ]
    assert headers.to_worker(sent) == [
        ("authorization", "Bearer k"),
        ("content-type", "application/json"),
        ("x-request-id", "r1"),
    ]


def test_to_client_keeps_retry_after_and_names_the_endpoint() -> None:
    received = [
        (b"content-type", b"text/event-stream"),
        (b"retry-after", b"3"),
        (b"transfer-encoding", b"chunked"),
        (b"connection", b"close"),
        (b"server", b"uvicorn"),
        (b"date", b"Fri"),
        (b"x-request-id", b"r1"),
    ]
    assert headers.to_client(received, "http://127.0.0.1:9001") == [
        (b"content-type", b"text/event-stream"),
        (b"retry-after", b"3"),
        (b"x-request-id", b"r1"),
        (b"x-corral-endpoint", b"http://127.0.0.1:9001"),
    ]


def test_content_length_and_event_stream_detection() -> None:
    assert headers.content_length([(b"content-length", b"42")]) == 42
    assert headers.content_length([(b"content-length", b"x")]) is None
    assert headers.content_length([]) is None
    assert headers.is_event_stream([(b"content-type", b"text/event-stream; charset=utf-8")])
    assert not headers.is_event_stream([(b"content-type", b"application/json")])
