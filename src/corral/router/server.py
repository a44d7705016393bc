"""Run the router: uvicorn with uvloop and httptools, no access log, graceful drain.

On SIGTERM (or SIGINT) uvicorn stops accepting connections, lets in-flight requests and
streams finish for up to ``RouterConfig.drain_timeout_s``, cancels what is left (which
closes those upstream requests), runs the app's shutdown, and :func:`serve` returns.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from types import FrameType

import uvicorn

from corral.config import StackConfig
from corral.router.app import create_app

logger = logging.getLogger(__name__)


def serve(stack: StackConfig, *, host: str | None = None, port: int | None = None) -> None:
    """Serve the router for ``stack`` until SIGTERM/SIGINT; blocking.

    Logging is left as the caller configured it. Raises SystemExit(1) if the server
    could not start (e.g. the port is taken).
    """
    config = stack.router
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(stack),
            host=config.host if host is None else host,
            port=config.port if port is None else port,
            loop="uvloop",
            http="httptools",
            lifespan="on",
            access_log=False,
            log_config=None,
            server_header=False,
            proxy_headers=False,
            timeout_graceful_shutdown=config.drain_timeout_s,  # type: ignore[arg-type]
            timeout_keep_alive=30,
            backlog=4096,
        )
    )
    with _signals_end_cleanly():
        server.run()
    if not server.started:
        raise SystemExit(1)
    logger.info("router stopped")


@contextlib.contextmanager
def _signals_end_cleanly() -> Iterator[None]:
    """uvicorn re-raises the signal that stopped it once it is done; with this handler in
    place that re-raise is a no-op, so a drained shutdown on SIGTERM exits 0."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _ignore) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _ignore(signum: int, frame: FrameType | None) -> None:
    logger.debug("signal %d after shutdown ignored", signum)
