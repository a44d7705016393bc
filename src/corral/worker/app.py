"""The worker's HTTP app: an OpenAI-compatible subset over one engine.

    GET  /health                 503 {"status": "loading"} until the model is loaded, then 200
    GET  /v1/models              the model's name and aliases
    POST /v1/chat/completions    chat models
    POST /v1/completions         completion and chat models
    POST /v1/embeddings          embedding models
    POST /tokenize, /detokenize  vLLM's shape: {"tokens", "count", "max_model_len"} / {"prompt"}
    GET  /v1/kv/events           SSE: the prefix blocks held, a snapshot then live batches
    GET  /v1/kv/blocks           the snapshot batch as JSON, with the prefix store's stats
                                 (both only where the engine keeps prefixes: llama.cpp;
                                 the schema is corral.prefix.events)

The server listens at once; the model loads in the background (see ServedModel.load).
Every error, of any kind, is answered by one handler in OpenAI's error shape.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import numpy as np
import numpy.typing as npt
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from corral.config import ModelConfig
from corral.errors import APIError, ConfigError, UnsupportedParameterError, WrongTaskError
from corral.metrics import WorkerMetrics
from corral.worker.completions import CompletionEndpoints
from corral.worker.engine import EmbeddingEngine, Engine, PrefixCachingEngine, TextEngine
from corral.worker.kv_events import KVEventFeed
from corral.worker.metering import Meter
from corral.worker.schemas import DetokenizeRequest, EmbeddingRequest, ModelOnly, TokenizeRequest
from corral.worker.served import CLIENT_CLOSED, ServedModel, json_response, read_body
from corral.worker.streaming import EventStreamResponse, unless_disconnected

logger = logging.getLogger(__name__)


def create_app(
    model: ModelConfig,
    engine: Engine,
    *,
    metrics: WorkerMetrics | None = None,
    on_load_failure: Callable[[BaseException], None] | None = None,
) -> Starlette:
    """The worker app for ``model`` served by ``engine`` (which the app starts and closes).

    ``app.state.end_streams()`` ends the long-lived KV event streams; the server calls it
    when a graceful shutdown begins, since they would otherwise hold up the drain.
    """
    served = ServedModel(model, engine)
    metrics = metrics or WorkerMetrics(CollectorRegistry(), model=model.name)
    meter = Meter(metrics, engine, queue_size=model.queue_size)
    served.on_loaded = metrics.model_load.set
    admin = _Admin(served)
    routes = [
        Route("/health", admin.health, methods=["GET"]),
        Route("/metrics", _metrics_endpoint(metrics.registry), methods=["GET"]),
        Route("/v1/models", admin.models, methods=["GET"]),
        Route("/tokenize", admin.tokenize, methods=["POST"]),
        Route("/detokenize", admin.detokenize, methods=["POST"]),
        *_task_routes(served, meter),
    ]
    kv = _KVEvents(engine) if isinstance(engine, PrefixCachingEngine) else None
    if kv is not None:
        routes += [
            Route("/v1/kv/events", kv.events, methods=["GET"]),
            Route("/v1/kv/blocks", kv.blocks, methods=["GET"]),
        ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        loader = asyncio.create_task(served.load(on_load_failure))
        try:
            yield
        finally:
            if kv is not None:
                kv.feed.close()
            loader.cancel()
            await asyncio.gather(loader, return_exceptions=True)
            await engine.aclose()

    handlers: dict[Any, Any] = dict.fromkeys(
        (APIError, HTTPException, ClientDisconnect, Exception), error_response
    )
    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)
    app.state.end_streams = kv.feed.close if kv is not None else _nothing
    return app


def _nothing() -> None:
    pass


def _metrics_endpoint(registry: CollectorRegistry) -> Callable[[Request], Awaitable[Response]]:
    async def scrape(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return scrape


def _task_routes(served: ServedModel, meter: Meter) -> list[Route]:
    """Every endpoint exists on every worker; those the task cannot answer say so (400)."""
    engine = served.engine
    embed = chat = text = _refuse(served)
    if served.config.task == "embedding":
        if not isinstance(engine, EmbeddingEngine):
            raise ConfigError(
                f"model '{served.name}' is an embedding model but its engine cannot embed"
            )
        embed = _Embeddings(served, engine).create
    else:
        if not isinstance(engine, TextEngine):
            raise ConfigError(f"model '{served.name}' generates text but its engine cannot")
        completions = CompletionEndpoints(served, engine, meter)
        chat, text = completions.chat, completions.text
    return [
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/completions", text, methods=["POST"]),
        Route("/v1/embeddings", embed, methods=["POST"]),
    ]


def _refuse(served: ServedModel) -> Callable[[Request], Awaitable[Response]]:
    async def refuse(request: Request) -> Response:
        body = await read_body(request, ModelOnly)
        served.check_name(body.model)
        raise WrongTaskError(served.name, served.config.task, request.url.path)

    return refuse


class _Admin:
    def __init__(self, served: ServedModel) -> None:
        self._served = served

    async def health(self, request: Request) -> Response:
        served = self._served
        if served.load_error is not None:
            return json_response({"status": "failed", "error": str(served.load_error)}, status=503)
        if not served.engine.loaded:
            return json_response({"status": "loading"}, status=503, headers={"Retry-After": "1"})
        return json_response({"status": "ok"})

    async def models(self, request: Request) -> Response:
        config = self._served.config
        data = [
            {
                "id": name,
                "object": "model",
                "created": self._served.created,
                "owned_by": "corral",
                "root": config.name,
                "max_model_len": config.context_length,
            }
            for name in config.served_names
        ]
        return json_response({"object": "list", "data": data})

    async def tokenize(self, request: Request) -> Response:
        body = await read_body(request, TokenizeRequest)
        self._served.check_name(body.model)
        prompt = body.tokenizable()
        self._served.check_loaded()
        engine = self._served.engine
        tokens = await engine.tokenize(prompt, add_special_tokens=body.add_special_tokens)
        return json_response(
            {"tokens": tokens, "count": len(tokens), "max_model_len": engine.context_length}
        )

    async def detokenize(self, request: Request) -> Response:
        body = await read_body(request, DetokenizeRequest)
        self._served.check_name(body.model)
        self._served.check_loaded()
        return json_response({"prompt": await self._served.engine.detokenize(body.tokens)})


class _KVEvents:
    """The prefix blocks an engine holds: a live SSE feed, and a snapshot for debugging."""

    def __init__(self, engine: PrefixCachingEngine) -> None:
        self._engine = engine
        self.feed = KVEventFeed(engine.kv_events)

    async def events(self, request: Request) -> Response:
        subscription = self.feed.subscribe()
        return EventStreamResponse(subscription.frames(), on_close=subscription.close)

    async def blocks(self, request: Request) -> Response:
        snapshot = self._engine.kv_events.snapshot().to_dict()
        return json_response({**snapshot, "store": self._engine.prefix_stats.to_dict()})


class _Embeddings:
    def __init__(self, served: ServedModel, engine: EmbeddingEngine) -> None:
        self._served = served
        self._engine = engine

    async def create(self, request: Request) -> Response:
        body = await read_body(request, EmbeddingRequest)
        self._served.admit(body.model, "/v1/embeddings")
        if body.dimensions is not None and body.dimensions != self._engine.dimensions:
            raise UnsupportedParameterError(
                "dimensions", f"this model returns {self._engine.dimensions} dimensions only"
            )
        result = await unless_disconnected(request.receive, self._engine.embed(body.inputs()))
        if result is None:
            return Response(status_code=CLIENT_CLOSED)
        data = [
            {"object": "embedding", "index": i, "embedding": _vector(row, body.encoding_format)}
            for i, row in enumerate(result.vectors)
        ]
        usage = {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens}
        return json_response(
            {"object": "list", "data": data, "model": self._served.name, "usage": usage}
        )


def _vector(row: npt.NDArray[np.float32], encoding_format: str) -> Any:
    if encoding_format == "base64":
        return base64.b64encode(row.astype("<f4").tobytes()).decode("ascii")
    return row  # orjson writes float32 arrays natively


def error_response(request: Request, exc: Exception) -> Response:
    """The one exception handler: every error in OpenAI's shape."""
    if isinstance(exc, APIError):
        return json_response(exc.to_dict(), status=exc.status, headers=exc.headers)
    if isinstance(exc, HTTPException):
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        error = {"message": str(exc.detail), "type": kind, "param": None, "code": exc.status_code}
        return json_response({"error": error}, status=exc.status_code, headers=exc.headers)
    if isinstance(exc, ClientDisconnect):
        return Response(status_code=CLIENT_CLOSED)
    logger.error("unhandled error on %s %s: %r", request.method, request.url.path, exc)
    return json_response(APIError("internal server error").to_dict(), status=500)
