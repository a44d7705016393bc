"""How the router reaches workers: the :class:`Transport` seam and its implementations."""

from corral.router.transport.base import (
    ConnectError,
    RawHeaders,
    StreamError,
    Transport,
    TransportError,
    TransportTimeout,
    UpstreamResponse,
)

__all__ = [
    "ConnectError",
    "RawHeaders",
    "StreamError",
    "Transport",
    "TransportError",
    "TransportTimeout",
    "UpstreamResponse",
]
