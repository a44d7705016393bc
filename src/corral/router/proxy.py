"""The proxy: one request to a worker and its response back, bytes unchanged.

    pick endpoint ─> send ─> status < 500 and a first byte? ─> relay the rest as it arrives
        ^              │ connect error (eject), broken before a byte, 5xx
        └── retry on another replica (RouterConfig.retries), never the same if another exists

Before a byte reached the client every failure is still an ordinary JSON error response;
after, a failing SSE stream gets an error frame and a clean end (so does one cut by the
server's drain timeout). The client's disconnect is watched on ASGI ``receive`` for the
whole exchange: it cancels the request task, and closing the upstream response is how the
worker learns to stop generating.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import CollectorRegistry

from corral.errors import APIError, NoHealthyEndpointError, OverloadedError, UpstreamError
from corral.metrics import RouterMetrics
from corral.protocol.sse import error_frame
from corral.router import headers as header_rules
from corral.router.asgi import Receive, Send, send_error
from corral.router.discovery.base import prefill_pool
from corral.router.endpoint import Endpoint
from corral.router.metering import RouterMeter
from corral.router.pool import EndpointPool
from corral.router.prefill import Prefiller
from corral.router.routing.base import Policy, RequestContext
from corral.router.transport.base import (
    ConnectError,
    RawHeaders,
    StreamError,
    Transport,
    TransportError,
    UpstreamResponse,
)

logger = logging.getLogger(__name__)


#: The response header stating how many prompt tokens the router expects the worker to
#: reuse from its cache (only when the policy predicts it).
PREDICTED_CACHED_HEADER = b"x-corral-predicted-cached-tokens"


class ResponseObserver(Protocol):
    """Told how a response the policy made a prediction for ended: ``tail`` holds its last
    body bytes (where a final ``usage`` sits), or is empty if it broke off."""

    def answered(self, ctx: RequestContext, endpoint: Endpoint, tail: bytes) -> None: ...


@dataclass(slots=True)
class _Opened:
    """An upstream response chosen for the client, with its first body chunk read."""

    endpoint: Endpoint
    upstream: UpstreamResponse
    chunks: AsyncIterator[bytes]
    first: bytes


class DisconnectWatch:
    """Listens on ASGI ``receive`` and cancels the request task when the client leaves.

    Call :meth:`stop` before sending the last body message: servers report completion of
    the response as ``http.disconnect`` too, and that is how the watch ends -- on its own,
    not cancelled: a cancelled task keeps its CancelledError, whose traceback holds the
    task's frames, a reference cycle per request that only a full garbage collection
    reclaims (measured: most of what reached the old generation under load).
    """

    __slots__ = ("_stopped", "_target", "_watcher", "fired")

    def __init__(self, receive: Receive) -> None:
        self.fired = False
        self._stopped = False
        target = asyncio.current_task()
        assert target is not None, "DisconnectWatch must be created inside a task"
        self._target = target
        self._watcher = asyncio.ensure_future(self._watch(receive))

    async def _watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        if not self._stopped:
            self.fired = True
            self._target.cancel()

    def stop(self) -> None:
        self._stopped = True


class Proxy:
    """Forwards requests to the endpoints its policy picks from the pool."""

    def __init__(
        self,
        pool: EndpointPool,
        policy: Policy,
        transport: Transport,
        *,
        retries: int,
        observer: ResponseObserver | None = None,
        meter: RouterMeter | None = None,
        prefiller: Prefiller | None = None,
    ) -> None:
        self._prefiller = prefiller
        self._pool = pool
        self._policy = policy
        self._transport = transport
        self._attempts = retries + 1
        self._observer = observer
        self._meter = meter or RouterMeter(RouterMetrics(CollectorRegistry()))

    async def forward(
        self,
        ctx: RequestContext,
        body: bytes,
        client_headers: RawHeaders,
        receive: Receive,
        send: Send,
    ) -> None:
        """Answer the client from a worker; never raises for upstream or client failures."""
        watch = DisconnectWatch(receive)
        started_s = self._meter.clock()
        try:
            await self._exchange(
                ctx, body, header_rules.to_worker(client_headers), send, watch, started_s
            )
        except asyncio.CancelledError:
            if not watch.fired:
                raise
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            logger.debug("client left; %s request to model %s cancelled", ctx.path, ctx.model)
        finally:
            watch.stop()

    async def _exchange(
        self,
        ctx: RequestContext,
        body: bytes,
        headers: Sequence[tuple[str, str]],
        send: Send,
        watch: DisconnectWatch,
        started_s: float,
    ) -> None:
        if self._prefiller is not None and self._prefiller.handles(ctx.model):
            await self._prefiller.prefill(ctx, headers)
        try:
            opened = await self._open(ctx, body, headers)
        except APIError as exc:
            watch.stop()
            self._meter.refused(ctx.model, exc.status)
            await send_error(send, exc)
            return
        try:
            await self._relay(ctx, opened, send, watch, started_s)
        finally:
            self._pool.release(opened.endpoint)
            await opened.upstream.aclose()

    async def _open(
        self, ctx: RequestContext, body: bytes, headers: Sequence[tuple[str, str]]
    ) -> _Opened:
        """The first usable upstream response, retrying failures that sent the client nothing."""
        tried: list[Endpoint] = []
        error: APIError | None = None
        for attempt in range(self._attempts):
            endpoint = self._pick(ctx, tried)
            if endpoint is None:
                raise NoHealthyEndpointError(ctx.model)
            tried.append(endpoint)
            prefill_tokens = ctx.routing.prefill_tokens
            opened: _Opened | None = None
            try:
                opened = await self._try(
                    endpoint, ctx, body, headers, final=attempt + 1 == self._attempts
                )
            except ConnectError as exc:
                self._pool.eject(endpoint, exc.message)
                self._meter.upstream_error(ctx.model, endpoint.url, "connect")
                error = exc
            except StreamError as exc:
                self._meter.upstream_error(ctx.model, endpoint.url, "stream")
                self._pool.answered(endpoint, ok=False, reason=exc.message)
                error = exc
            except TransportError:
                self._meter.upstream_error(ctx.model, endpoint.url, "timeout")
                raise
            finally:
                self._pool.prefilled(endpoint, prefill_tokens)  # first byte, or failed
                if opened is None:
                    self._pool.release(endpoint)
            if opened is not None:
                return opened
            if attempt + 1 < self._attempts:
                self._meter.retried(ctx.model)
                reason = error.message if error else "5xx"
                logger.info("retrying %s for model %s: %s", ctx.path, ctx.model, reason)
        if not any(endpoint.healthy for endpoint in self._pool.endpoints(ctx.model)):
            raise NoHealthyEndpointError(ctx.model)  # every replica is down now
        # The last attempt passes a 5xx through, so only a transport error gets here.
        raise error or UpstreamError(f"no worker of model '{ctx.model}' answered")

    def _pick(self, ctx: RequestContext, tried: list[Endpoint]) -> Endpoint | None:
        """The policy's choice, counted against the endpoint at once; untried ones first."""
        candidates = self._pool.endpoints(ctx.model)
        if ctx.routing.peers is None:
            ctx.routing.peers = [e.url for e in (*candidates, *self._pool.endpoints(prefill_pool(ctx.model)))]
        endpoint = None
        if tried:
            untried = [candidate for candidate in candidates if candidate not in tried]
            endpoint = self._policy.pick(ctx, untried) if untried else None
        if endpoint is None:
            endpoint = self._policy.pick(ctx, candidates)
        if endpoint is not None:
            self._pool.acquire(endpoint, ctx.routing.prefill_tokens)
            reason = "retry" if tried else ("cache_hit" if ctx.routing.predicted_cached_tokens else "pick")
            self._meter.picked(ctx.model, self._policy.name, reason)
        return endpoint

    async def _try(
        self,
        endpoint: Endpoint,
        ctx: RequestContext,
        body: bytes,
        headers: Sequence[tuple[str, str]],
        *,
        final: bool,
    ) -> _Opened | None:
        """One attempt: the response with its first chunk, or None for a 5xx worth retrying."""
        upstream = await self._transport.send(endpoint.url, ctx.path, body, headers)
        try:
            if upstream.status >= 500 and not final:
                logger.info("%s answered %d for model %s", endpoint.url, upstream.status, ctx.model)
                self._meter.upstream_error(ctx.model, endpoint.url, "status")
                self._pool.answered(endpoint, ok=False, reason=f"answered {upstream.status}")
                await upstream.aclose()
                return None
            chunks = aiter(upstream.chunks())
            first = await anext(chunks, b"")
        except BaseException:
            await upstream.aclose()
            raise
        return _Opened(endpoint, upstream, chunks, first)

    async def _relay(
        self,
        ctx: RequestContext,
        opened: _Opened,
        send: Send,
        watch: DisconnectWatch,
        started_s: float,
    ) -> None:
        """Send the response on as it arrives; an SSE stream that breaks gets an error frame."""
        headers = header_rules.to_client(opened.upstream.headers, opened.endpoint.url)
        predicted = ctx.routing.predicted_cached_tokens
        observed = predicted is not None and opened.upstream.status == 200
        observer = self._observer if observed else None
        if predicted is not None:
            headers.append((PREDICTED_CACHED_HEADER, str(predicted).encode()))
        headers.extend(ctx.routing.response_headers)
        start = {
            "type": "http.response.start",
            "status": opened.upstream.status,
            "headers": headers,
        }
        await send(start)
        status, url = opened.upstream.status, opened.endpoint.url
        self._pool.answered(opened.endpoint, ok=status < 500, reason=f"answered {status}")
        timer = self._meter.timer(ctx.model, started_s, streaming=header_rules.is_event_stream(headers))
        chunk = opened.first
        if len(chunk) == header_rules.content_length(headers):  # the whole body, in one piece
            watch.stop()
            await send({"type": "http.response.body", "body": chunk, "more_body": False})
            ctx.routing.used_tokens = timer.done(url, status, chunk)
            if observer is not None:
                observer.answered(ctx, opened.endpoint, chunk)
            return
        # The last two chunks, kept by reference: the final usage frame is in them.
        older = last = b""
        try:
            while chunk:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                timer.chunk()
                older, last = last, chunk
                chunk = await anext(opened.chunks, b"")
        except TransportError as exc:
            self._meter.upstream_error(ctx.model, url, "stream")
            self._pool.answered(opened.endpoint, ok=False, reason=exc.message)
            ctx.routing.used_tokens = timer.done(url, status, older + last)
            await self._end_broken(opened, headers, exc, send, watch)
            return
        except asyncio.CancelledError:
            if not watch.fired and header_rules.is_event_stream(headers):
                # Not the client leaving: the server's drain timeout ran out. Say so, then go.
                watch.stop()
                await _end_stream(send, OverloadedError("the router is shutting down; retry"))
            raise
        watch.stop()
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        ctx.routing.used_tokens = timer.done(url, status, older + last)
        if observer is not None:
            observer.answered(ctx, opened.endpoint, older + last)

    async def _end_broken(
        self,
        opened: _Opened,
        headers: RawHeaders,
        exc: TransportError,
        send: Send,
        watch: DisconnectWatch,
    ) -> None:
        """The worker failed after the client got bytes: mend an SSE stream, else cut it."""
        url = opened.endpoint.url
        logger.warning(
            "%s failed mid-response (model %s): %s", url, opened.endpoint.model, exc.message
        )
        if not header_rules.is_event_stream(headers):
            return  # a truncated JSON body cannot be mended; the server drops the connection
        watch.stop()
        await _end_stream(
            send, UpstreamError(f"the worker failed mid-stream: {exc.message}", endpoint=url)
        )


async def _end_stream(send: Send, error: APIError) -> None:
    """End an SSE response that already started with an error frame (OpenAI's error shape)."""
    await send({"type": "http.response.body", "body": error_frame(error), "more_body": False})
