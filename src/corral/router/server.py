"""Run the router: uvicorn with uvloop and httptools, no access log, graceful drain.

On SIGTERM (or SIGINT) uvicorn stops accepting connections, lets in-flight requests and
streams finish for up to ``RouterConfig.drain_timeout_s``, cancels what is left (which
closes those upstream requests), runs the app's shutdown, and :func:`serve` returns.
Once started, full garbage collections run on a timer, not in the middle of a burst
(:class:`~corral.gc_pauses.QuietCollector`).
"""

from __future__ import annotations

import logging

from corral.config import StackConfig
from corral.gc_pauses import QuietCollector
from corral.router.app import create_app
from corral.serving import DrainingServer, server_config

logger = logging.getLogger(__name__)


def serve(stack: StackConfig, *, host: str | None = None, port: int | None = None) -> None:
    """Serve the router for ``stack`` until SIGTERM/SIGINT; blocking.

    Logging is left as the caller configured it. Raises SystemExit(1) if the server
    could not start (e.g. the port is taken).
    """
    config = stack.router
    server = DrainingServer(
        server_config(
            create_app(stack),
            host=config.host if host is None else host,
            port=config.port if port is None else port,
            drain_timeout_s=config.drain_timeout_s,
            timeout_keep_alive=30,
            backlog=4096,
        ),
        collector=QuietCollector(),
    )
    server.run()
    if not server.started:
        raise SystemExit(1)
    logger.info("router stopped")
