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
from typing import Literal

import uvicorn
from prometheus_client import CollectorRegistry

from corral.config import ModelConfig, StackConfig
from corral.errors import ConfigError
from corral.metrics import WorkerMetrics
from corral.serving import DrainingServer, server_config
from corral.worker.app import create_app
from corral.worker.embeddings import OnnxEmbeddingEngine
from corral.worker.engine import Engine, PrefixCachingEngine
from corral.worker.kvstore.settings import TierPlaces
from corral.worker.llamacpp import LlamaCppEngine

logger = logging.getLogger(__name__)

#: A worker's part in its model's pool: ``both`` prefills and decodes; a ``prefill`` worker
#: is sent prompts only (max_tokens 1, see corral.router.prefill) and writes their KV to the
#: lower tiers before it answers, so that a ``decode`` worker finds it there.
WorkerRole = Literal["both", "prefill", "decode"]

#: Engine kind (ModelConfig.engine) -> the engine that hosts it in this process,
#: given the model, the stack it belongs to (prefix identity, cache tiers and where
#: they live: the run directory, the stack's Redis) and the worker's role.
ENGINES: dict[str, Callable[[ModelConfig, StackConfig | None, WorkerRole], Engine]] = {
    "llamacpp": lambda model, stack, role: LlamaCppEngine(
        model,
        prefix=stack.prefix if stack else None,
        cache=stack.cache if stack else None,
        places=TierPlaces.of(stack) if stack else None,
        sync_store=role == "prefill",
    ),
    "onnx-embed": lambda model, stack, role: OnnxEmbeddingEngine(model),
}


def create_engine(model: ModelConfig, stack: StackConfig | None = None, role: WorkerRole = "both") -> Engine:
    factory = ENGINES.get(model.engine)
    if factory is None:
        raise ConfigError(
            f"models ({model.name}).engine: '{model.engine}' does not run in a corral worker "
            f"(it runs: {', '.join(ENGINES)})"
        )
    if role == "prefill" and (stack is None or (stack.cache.redis is None and stack.cache.disk is None)):
        raise ConfigError(
            f"models ({model.name}): a prefill worker hands its KV on through a shared tier; set cache.redis"
        )
    return factory(model, stack, role)


class _WorkerServer(DrainingServer):
    """Ends the app's long-lived streams (KV events) as soon as the drain begins."""

    def __init__(self, config: uvicorn.Config, *, end_streams: Callable[[], None]) -> None:
        super().__init__(config)
        self._end_streams = end_streams

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._end_streams()
        await super().shutdown(sockets)


def serve(
    stack: StackConfig,
    model_name: str,
    *,
    host: str,
    port: int,
    sock: socket.socket | None = None,
    role: WorkerRole = "both",
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

    engine = create_engine(model, stack, role)
    metrics = WorkerMetrics(CollectorRegistry(), model=model.name)
    if isinstance(engine, PrefixCachingEngine):
        metrics.watch_kv_tiers(lambda: engine.prefix_stats.tiers)
    app = create_app(model, engine, metrics=metrics, on_load_failure=on_load_failure)
    config = server_config(app, host=host, port=port, drain_timeout_s=stack.worker.drain_timeout_s)
    server = _WorkerServer(config, end_streams=app.state.end_streams)
    logger.info("starting the worker for %s on %s:%d", model.name, host, port)
    server.run(sockets=[sock] if sock is not None else None)
    if failures:
        raise failures[0]
    if not server.started:
        raise SystemExit(1)
