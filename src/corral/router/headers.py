"""Which headers cross the router, in each direction.

Hop-by-hop headers (RFC 9110 section 7.6.1) belong to one connection and never cross;
neither do the ones the router's own HTTP stack sets (host, content-length towards the
worker; server and date towards the client). Everything else passes unchanged:
Authorization, content-type, x-request-id, Retry-After, content-encoding, ...
"""

from __future__ import annotations

from corral.router.transport.base import RawHeaders

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
_NOT_TO_WORKER = HOP_BY_HOP | {b"host", b"content-length", b"expect"}
_NOT_TO_CLIENT = HOP_BY_HOP | {b"server", b"date"}

#: The response header naming the endpoint that answered (for operators and tests).
ENDPOINT_HEADER = b"x-corral-endpoint"


def to_worker(client_headers: RawHeaders) -> list[tuple[str, str]]:
    """A client's request headers as sent on to the worker."""
    dropped = _NOT_TO_WORKER | _named_by_connection(client_headers)
    return [
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in client_headers
        if name not in dropped
    ]


def to_client(worker_headers: RawHeaders, endpoint_url: str) -> RawHeaders:
    """A worker's response headers as sent on to the client, naming the endpoint."""
    dropped = _NOT_TO_CLIENT | _named_by_connection(worker_headers)
    kept = [(name, value) for name, value in worker_headers if name not in dropped]
    kept.append((ENDPOINT_HEADER, endpoint_url.encode("latin-1")))
    return kept


def content_length(headers: RawHeaders) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def is_event_stream(headers: RawHeaders) -> bool:
    for name, value in headers:
        if name == b"content-type":
            return value.lstrip().lower().startswith(b"text/event-stream")
    return False


def _named_by_connection(headers: RawHeaders) -> frozenset[bytes]:
    """Headers listed in ``Connection: a, b`` are hop-by-hop too."""
    for name, value in headers:
        if name == b"connection":
            return frozenset(token.strip().lower() for token in value.split(b",") if token.strip())
    return frozenset()
