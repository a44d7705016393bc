"""Serving an ASGI app the corral way: uvicorn with uvloop and httptools, graceful drain.

Shared by the router and the workers. A signal (SIGTERM, SIGINT) only starts the
graceful shutdown: stop accepting, let in-flight requests finish for up to the drain
timeout, run the app's shutdown, then return. uvicorn would re-raise the signal once it
is done, so a process that drained cleanly would still exit 143; here it exits 0.
A second SIGINT stops waiting for the drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import socket
import threading
from collections.abc import Generator
from types import FrameType
from typing import Any

import uvicorn

from corral.gc_pauses import QuietCollector


class DrainingServer(uvicorn.Server):
    """uvicorn's server whose signal handlers only request a (graceful) exit; with a
    ``collector``, the garbage collector's long pauses are kept off the hot path once it
    has started (:class:`~corral.gc_pauses.QuietCollector`)."""

    def __init__(self, config: uvicorn.Config, *, collector: QuietCollector | None = None) -> None:
        super().__init__(config)
        self._collector = collector

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self._collector is not None:
            self._collector.start(asyncio.get_running_loop())

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._collector is not None:
            self._collector.stop()
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self._stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _stop(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True  # a second Ctrl-C: stop waiting for the drain
        self.should_exit = True


def server_config(app: Any, *, host: str, port: int, drain_timeout_s: float, **extra: Any) -> uvicorn.Config:
    """uvicorn settings for a hot path: no access log, no server/date headers, no proxy headers."""
    settings: dict[str, Any] = {
        "loop": "uvloop",
        "http": "httptools",
        "ws": "none",
        "lifespan": "on",
        "log_config": None,
        "access_log": False,
        "server_header": False,
        "date_header": False,
        "proxy_headers": False,
        "timeout_graceful_shutdown": math.ceil(drain_timeout_s),
        **extra,
    }
    return uvicorn.Config(app, host=host, port=port, **settings)
