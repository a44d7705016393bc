"""Running a worker: pick the engine for a model, serve the app with uvicorn.

``serve()`` blocks. SIGTERM or SIGINT stops accepting connections, lets in-flight
requests finish for up to ``worker.drain_timeout_s``, closes the engine and returns
(the process exits 0). If the model fails to load, the server stops and the load
error is raised, so the caller exits non-zero and a supervisor can restart it.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable

from corral.config import ModelConfig, StackConfig
from corral.errors import ConfigError
from corral.serving import DrainingServer, server_config
from corral.worker.app import create_app
from corral.worker.embeddings import OnnxEmbeddingEngine
from corral.worker.engine import Engine
from corral.worker.llamacpp import LlamaCppEngine

logger = logging.getLogger(__name__)

#: Engine kind (ModelConfig.engine) -> the engine that hosts it in this process.
ENGINES: dict[str, Callable[[ModelConfig], Engine]] = {
    "llamacpp": LlamaCppEngine,
    "onnx-embed": OnnxEmbeddingEngine,
}


def create_engine(model: ModelConfig) -> Engine:
    factory = ENGINES.get(model.engine)
    if factory is None:
        raise ConfigError(
            f"models ({model.name}).engine: '{model.engine}' does not run in a corral worker "
            f"(it runs: {', '.join(ENGINES)})"
        )
    return factory(model)


def serve(
    stack: StackConfig,
    model_name: str,
    *,
    host: str,
    port: int,
    sock: socket.socket | None = None,
) -> None:
    """Serve one model of ``stack`` on ``host:port`` until SIGTERM/SIGINT (blocking).

    ``sock``, an already bound socket, is used instead of binding ``host:port``
    (tests and benchmarks bind port 0 themselves to learn the port).
    """
    model = stack.model(model_name)
    failures: list[BaseException] = []

    def on_load_failure(exc: BaseException) -> None:
        failures.append(exc)
        server.should_exit = True

    app = create_app(model, create_engine(model), on_load_failure=on_load_failure)
    config = server_config(app, host=host, port=port, drain_timeout_s=stack.worker.drain_timeout_s)
    server = DrainingServer(config)
    logger.info("starting the worker for %s on %s:%d", model.name, host, port)
    server.run(sockets=[sock] if sock is not None else None)
    if failures:
        raise failures[0]
    if not server.started:
        raise SystemExit(1)
