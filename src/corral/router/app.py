"""The router's ASGI app: OpenAI-compatible endpoints in front of the workers.

    POST /v1/chat/completions | /v1/completions | /v1/embeddings  -> a worker (proxy.py)
    GET  /v1/models, /v1/models/{name}   every model and alias
    GET  /health                         the process is up
    GET  /ready                          200 when every model has a healthy endpoint, else 503
    GET  /openapi.json                   the OpenAPI 3.1 description (router/openapi.py)

A raw ASGI app rather than a framework: the hot path is a dict lookup, a bounded body
read, an orjson parse of the routing fields, the policy's ``prepare`` (prefix-aware
policies hash the prompt there), a pick and the proxy.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from corral.config import LOCAL_ENGINES, ModelConfig, StackConfig, Task
from corral.errors import (
    APIError,
    ContextLengthError,
    InvalidRequestError,
    MethodNotAllowedError,
    NoHealthyEndpointError,
    RouteNotFoundError,
)
from corral.metrics import RouterMetrics
from corral.protocol.fields import ENDPOINT_TASKS, parse_json_object, routing_fields
from corral.router.admission import ModelQueue
from corral.router.asgi import (
    ClientDisconnected,
    Receive,
    Scope,
    Send,
    read_body,
    send_bytes,
    send_error,
)
from corral.router.auth import ApiKey, Authenticator
from corral.router.discovery.base import PREFILL_POOL_SUFFIX, Discovery, prefill_pool
from corral.router.discovery.kubernetes import KubernetesDiscovery
from corral.router.discovery.static import StaticDiscovery
from corral.router.engine_load import EngineLoadReader
from corral.router.limits import create_limiter, reserve_tokens
from corral.router.metering import RouterMeter
from corral.router.models import ModelTable
from corral.router.openapi import openapi_document
from corral.router.pool import EndpointPool
from corral.router.prefill import Prefiller
from corral.router.prompt_length import PromptLengthCheck
from corral.router.proxy import Proxy
from corral.router.routing.base import Policy, RequestContext
from corral.router.routing.service import RoutingService
from corral.router.transport.aiohttp_transport import AiohttpTransport
from corral.router.transport.base import Transport

logger = logging.getLogger(__name__)

_MODELS_PREFIX = "/v1/models/"


class RouterApp:
    """The ASGI callable. Its lifespan (or :meth:`startup` / :meth:`shutdown`) owns the
    HTTP client, the endpoint pool and its health checks, and the routing service (its
    tokenizers and KV event followers)."""

    def __init__(
        self,
        stack: StackConfig,
        *,
        transport: Transport | None = None,
        discovery: Discovery | None = None,
        policy: Policy | None = None,
        rng: random.Random | None = None,
        wall_clock: Callable[[], float] = time.time,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._config = stack.router
        self.metrics = RouterMetrics(registry or CollectorRegistry())
        self._meter = RouterMeter(self.metrics)
        self._models = ModelTable(stack.models, created=int(wall_clock()))
        self._auth = Authenticator(stack.router.auth, stack.models)
        self._stack = stack
        self._openapi_json: bytes | None = None
        self._prompts = PromptLengthCheck(stack.models, cache_bytes=stack.router.routing.tokenizer_cache_bytes)
        self._limits = create_limiter(
            stack, lambda action: self.metrics.shared_limits_errors.labels(action).inc()
        )
        self._rng = rng or random.Random()
        self._chunk_tokens = stack.cache.chunk_tokens
        self.routing = RoutingService(stack, rng=self._rng, policy=policy)
        self._wake_pool: Callable[[], None] | None = None
        self._discovery = discovery or _discovery_for(stack, on_change=self._discovery_changed)
        self._owns_discovery = discovery is None
        self._given_transport = transport
        self._transport: Transport | None = None
        self.pool: EndpointPool | None = None
        self._proxy: Proxy | None = None
        self._queues: dict[str, ModelQueue] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def startup(self) -> None:
        """Open the HTTP client, discover endpoints and check their health once."""
        config = self._config
        transport = self._given_transport or AiohttpTransport(
            connect_timeout_s=config.connect_timeout_s,
            request_timeout_s=config.request_timeout_s,
            idle_timeout_s=config.idle_timeout_s,
        )
        self._transport = transport
        split = [model.name for model in self._models.models if model.prefill_replicas or model.prefill_endpoints]
        pool = EndpointPool(
            [*(model.name for model in self._models.models), *(prefill_pool(name) for name in split)],
            self._discovery,
            transport,
            interval_s=config.health_interval_s,
            timeout_s=config.connect_timeout_s,
            breaker_failures=config.breaker_failures,
            engine_load=EngineLoadReader(
                transport, _vllm_pools(self._models.models, split), timeout_s=config.connect_timeout_s
            ),
        )
        self._wake_pool = pool.wake
        try:
            await pool.start()
            policy = await self.routing.start(pool, transport)
            await self._prompts.start(self.routing.tokenizers)
        except BaseException:
            await self._prompts.aclose()
            await self.routing.aclose()
            await pool.aclose()
            if self._given_transport is None:
                await transport.aclose()
            raise
        self.pool = pool
        self._queues = {
            model.name: ModelQueue(model.name, _capacity(pool, model), queue_size=config.queue_size,
                                   wait_s=config.queue_wait_s)
            for model in self._models.models
        }
        models = [model.name for model in self._models.models]
        self._meter.watch(pool, models)
        self.routing.selfcheck.on_outcome = self._meter.prediction
        self._proxy = Proxy(
            pool,
            policy,
            transport,
            retries=config.retries,
            observer=self.routing.selfcheck,
            meter=self._meter,
            prefiller=Prefiller(
                pool, transport, self._meter, models=split, rng=self._rng,
                min_tokens=max(self._chunk_tokens, config.prefill_min_tokens), timeout_s=config.prefill_timeout_s,
            ) if split else None,
        )
        logger.info(
            "router ready to route %d models (%s policy)",
            len(self._models.models),
            self.routing.name,
        )

    async def shutdown(self) -> None:
        self._proxy = None
        self._wake_pool = None
        await self._limits.aclose()
        await self._prompts.aclose()  # before routing closes the tokenizers they share
        await self.routing.aclose()
        if self.pool is not None:
            await self.pool.aclose()
            self.pool = None
        if self._owns_discovery:
            await self._discovery.aclose()
        if self._transport is not None and self._given_transport is None:
            await self._transport.aclose()
        self._transport = None

    def _discovery_changed(self) -> None:
        if self._wake_pool is not None:
            self._wake_pool()

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        try:
            task = ENDPOINT_TASKS.get(path)
            if task is not None:
                _require_method(scope, "POST")
                key = self._auth.authenticate(scope["headers"])
                await self._infer(scope, receive, send, task, key)
            elif path == "/health":
                await send_bytes(send, 200, b'{"status":"ok"}')
            elif path == "/ready":
                await self._ready(send)
            elif path == "/openapi.json":
                _require_method(scope, "GET")
                await send_bytes(send, 200, self._openapi())
            elif path == "/metrics":
                _require_method(scope, "GET")
                await send_bytes(send, 200, generate_latest(self.metrics.registry),
                                 content_type=CONTENT_TYPE_LATEST.encode())
            elif path == "/v1/models":
                _require_method(scope, "GET")
                self._auth.authenticate(scope["headers"])
                await send_bytes(send, 200, self._models.listing)
            elif path.startswith(_MODELS_PREFIX):
                _require_method(scope, "GET")
                self._auth.authenticate(scope["headers"])
                await send_bytes(send, 200, self._models.describe(path[len(_MODELS_PREFIX) :]))
            else:
                raise RouteNotFoundError(path)
        except APIError as exc:
            await send_error(send, exc)
        except ClientDisconnected:
            logger.debug("client left before sending its whole request to %s", path)

    async def _infer(
        self, scope: Scope, receive: Receive, send: Send, task: Task, key: ApiKey | None
    ) -> None:
        """Validate just enough to route, then hand the original bytes to the proxy."""
        body = await read_body(scope, receive, self._config.max_body_bytes)
        data = parse_json_object(body)
        fields = routing_fields(data)
        path: str = scope["path"]
        try:
            model = self._models.resolve(fields.model, task, path)
        except APIError as exc:
            self._meter.refused("unknown", exc.status)
            raise
        self._auth.authorize(key, model.name)
        try:
            _check_max_tokens(model, data)
            plan = await self._prompts.check(model, path, data, _positive_int(_max_tokens(data)))
        except APIError as exc:
            self._meter.refused(model.name, exc.status)
            raise
        proxy = self._proxy
        if proxy is None:
            self._meter.refused(model.name, 503)
            raise NoHealthyEndpointError(model.name)  # not started, or shutting down
        raw_headers = scope["headers"]
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in raw_headers}
        ctx = RequestContext(model.name, task, path, data, fields.user, headers)
        ctx.routing.plan = plan  # rendered and cut once: the kv policy hashes the same pieces
        try:
            grant = await self._limits.acquire(
                key.name if key else None, model.name, reserve_tokens(body, _max_tokens(data))
            )
        except APIError as exc:
            self._meter.refused(model.name, exc.status)
            raise
        if grant is not None:
            ctx.routing.response_headers = grant.headers
        try:
            await self._send_on(ctx, body, raw_headers, receive, send, proxy)
        finally:
            if grant is not None:
                grant.release(ctx.routing.used_tokens)

    async def _send_on(
        self, ctx: RequestContext, body: bytes, raw_headers: Any, receive: Receive, send: Send, proxy: Proxy
    ) -> None:
        """Wait for room at the model's workers (or 503), then route and forward."""
        queue = self._queues[ctx.model]
        try:
            await queue.enter()
        except APIError as exc:
            self._meter.refused(ctx.model, exc.status)
            raise
        try:
            await self.routing.prepare(ctx)
            await proxy.forward(ctx, body, raw_headers, receive, send)
        finally:
            queue.leave()

    def _openapi(self) -> bytes:
        """The OpenAPI description (router/openapi.py), built on first request."""
        if self._openapi_json is None:
            self._openapi_json = orjson.dumps(openapi_document(self._stack))
        return self._openapi_json

    async def _ready(self, send: Send) -> None:
        if self.pool is None:
            missing = [model.name for model in self._models.models]
        else:
            # A model whose prefill workers are all down still answers (its decode workers prefill).
            missing = [name for name in self.pool.models_without_healthy_endpoint() if PREFILL_POOL_SUFFIX not in name]
        if missing:
            body = {"ready": False, "models_without_healthy_endpoint": missing}
            await send_bytes(send, 503, orjson.dumps(body), headers=[(b"retry-after", b"1")])
        else:
            await send_bytes(send, 200, b'{"ready":true}')

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    logger.exception("router failed to start")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _discovery_for(stack: StackConfig, *, on_change: Callable[[], None]) -> Discovery:
    """``router.discovery``: watch pods through the Kubernetes API, or the stack's endpoints."""
    if stack.router.discovery is not None:
        return KubernetesDiscovery(stack.router.discovery, stack.models, on_change=on_change)
    return StaticDiscovery(stack.models)


def _vllm_pools(models: Sequence[ModelConfig], split: list[str]) -> list[str]:
    """The pools of vLLM replicas, whose own load the pool reads from their /metrics."""
    names = [model.name for model in models if model.engine == "vllm"]
    return [*names, *(prefill_pool(name) for name in names if name in split)]


def _capacity(pool: EndpointPool, model: ModelConfig) -> Callable[[], int]:
    """What the model's healthy endpoints hold at once (0: unknown, e.g. vLLM: no limit)."""
    per_endpoint = model.queue_size + 1 if model.engine in LOCAL_ENGINES else 0
    if per_endpoint == 0:
        return lambda: 0
    return lambda: per_endpoint * sum(1 for endpoint in pool.endpoints(model.name) if endpoint.healthy)


def _max_tokens(data: dict[str, Any]) -> object:
    return data.get("max_completion_tokens") or data.get("max_tokens")


def _positive_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _check_max_tokens(model: ModelConfig, data: dict[str, Any]) -> None:
    """Refuse, before any worker sees it, a max_tokens over the model's cap or its context."""
    asked = _max_tokens(data)
    if not isinstance(asked, int) or isinstance(asked, bool):
        return  # absent, or a type error the worker names precisely
    param = "max_completion_tokens" if data.get("max_completion_tokens") else "max_tokens"
    if model.max_tokens_cap is not None and asked > model.max_tokens_cap:
        raise InvalidRequestError(
            f"'{param}' is {asked}, over the limit of {model.max_tokens_cap} for model '{model.name}'",
            param=param, code="max_tokens_over_limit",
        )
    if asked >= model.context_length:
        raise ContextLengthError(
            f"'{param}' is {asked}, but model '{model.name}' has a context of {model.context_length} "
            "tokens for the prompt and the completion together"
        )


def _require_method(scope: Scope, method: str) -> None:
    if scope["method"] != method:
        raise MethodNotAllowedError(scope["method"], scope["path"], method)


def create_app(
    stack: StackConfig,
    *,
    transport: Transport | None = None,
    discovery: Discovery | None = None,
    policy: Policy | None = None,
    rng: random.Random | None = None,
    wall_clock: Callable[[], float] = time.time,
) -> RouterApp:
    """The router for ``stack``.

    By default the app opens its own aiohttp client at startup, discovers the endpoints
    listed in the stack file (or, with ``router.discovery``, watches worker pods through the
    Kubernetes API) and routes with ``stack.router.routing.policy``. Tests (and
    embedders) may inject a ``transport`` (e.g. an in-memory
    :class:`~corral.router.transport.asgi_transport.ASGITransport`; the caller then owns
    it), a ``discovery``, a ``policy``, the ``rng`` for tie-breaking and the ``wall_clock``
    used for ``created`` in ``/v1/models``.
    """
    return RouterApp(
        stack,
        transport=transport,
        discovery=discovery,
        policy=policy,
        rng=rng,
        wall_clock=wall_clock,
    )
