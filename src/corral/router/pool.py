"""The endpoint pool: every model's replicas, their health and their in-flight counts.

Health is kept two ways. Actively, a background task asks discovery for the current
endpoints and sends ``GET {url}/health`` to each every ``interval_s`` (200 means healthy).
Passively, the proxy calls :meth:`EndpointPool.eject` when it cannot connect, which marks
the endpoint unhealthy at once, until a later health check succeeds. With an
``engine_load`` reader, a vLLM endpoint's ``/metrics`` is read after each passing check
(``Endpoint.engine_load``, for the load scorer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping

from corral.router.discovery.base import Discovery
from corral.router.endpoint import Endpoint
from corral.router.engine_load import EngineLoadReader
from corral.router.tasks import cancel_all
from corral.router.transport.base import Transport, TransportError

logger = logging.getLogger(__name__)


class EndpointPool:
    """Endpoints per model; owns the health-check task (stop it with :meth:`aclose`)."""

    def __init__(
        self,
        models: Iterable[str],
        discovery: Discovery,
        transport: Transport,
        *,
        interval_s: float,
        timeout_s: float,
        breaker_failures: int = 3,
        engine_load: EngineLoadReader | None = None,
    ) -> None:
        self._breaker_failures = breaker_failures
        self._engine_load = engine_load
        self._by_model: dict[str, tuple[Endpoint, ...]] = {model: () for model in models}
        self._discovery = discovery
        self._transport = transport
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._task: asyncio.Task[None] | None = None
        self._woken = asyncio.Event()

    def endpoints(self, model: str) -> tuple[Endpoint, ...]:
        """The model's current endpoints, healthy or not (an immutable snapshot)."""
        return self._by_model.get(model, ())

    def models_without_healthy_endpoint(self) -> list[str]:
        return [
            model
            for model, endpoints in self._by_model.items()
            if not any(endpoint.healthy for endpoint in endpoints)
        ]

    def acquire(self, endpoint: Endpoint, prefill_tokens: int = 0) -> None:
        """Count a request (and the prompt tokens it will make ``endpoint`` prefill) against
        it; call it the moment the endpoint is picked, so that a burst spreads."""
        endpoint.in_flight += 1
        endpoint.queued_tokens += prefill_tokens

    def prefilled(self, endpoint: Endpoint, prefill_tokens: int) -> None:
        """The request's prompt is done (its first byte arrived, or it failed)."""
        endpoint.queued_tokens -= prefill_tokens

    def release(self, endpoint: Endpoint) -> None:
        endpoint.in_flight -= 1

    def answered(self, endpoint: Endpoint, *, ok: bool, reason: str = "") -> None:
        """A circuit breaker per endpoint: ``breaker_failures`` failed answers in a row open
        it (the endpoint is ejected); the next passing health check is the half-open probe
        that closes it again."""
        if ok:
            endpoint.consecutive_failures = 0
            return
        endpoint.consecutive_failures += 1
        if endpoint.consecutive_failures >= self._breaker_failures:
            self.eject(endpoint, f"{endpoint.consecutive_failures} failures in a row ({reason})")

    def eject(self, endpoint: Endpoint, reason: str) -> None:
        """Passive ejection: stop routing to ``endpoint`` until a health check passes."""
        if endpoint.healthy:
            logger.warning("ejecting %s (model %s): %s", endpoint.url, endpoint.model, reason)
        endpoint.healthy = False
        endpoint.last_error = reason

    async def start(self) -> None:
        """Run one discovery and health round now, then keep doing so in the background."""
        await self.refresh()
        self._task = asyncio.create_task(self._run(), name="corral-router-health")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        await cancel_all([task])

    def wake(self) -> None:
        """Discovery saw a change: take its view now and check only the new endpoints
        (a watching discovery calls this, so changes need not wait for the next round)."""
        self._woken.set()

    async def refresh(self) -> None:
        """One round: take discovery's current view, then check every endpoint's health."""
        self._sync(await self._discovery.endpoints())
        everything = [endpoint for endpoints in self._by_model.values() for endpoint in endpoints]
        await asyncio.gather(*(self._check(endpoint) for endpoint in everything))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + self._interval_s
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), max(0.0, due - loop.time()))
            try:
                if self._woken.is_set():
                    self._woken.clear()
                    new = self._sync(await self._discovery.endpoints())
                    await asyncio.gather(*(self._check(endpoint) for endpoint in new))
                if loop.time() >= due:
                    due = loop.time() + self._interval_s
                    await self.refresh()
            except Exception:
                logger.exception("health round failed; trying again in %.1f s", self._interval_s)

    def _sync(self, discovered: Mapping[str, tuple[str, ...]]) -> list[Endpoint]:
        """Take discovery's view; returns the endpoints it added."""
        added: list[Endpoint] = []
        for model, current in self._by_model.items():
            urls = discovered.get(model, ())
            if tuple(endpoint.url for endpoint in current) == urls:
                continue
            known = {endpoint.url: endpoint for endpoint in current}
            self._by_model[model] = tuple(known.get(url) or Endpoint(url, model) for url in urls)
            added += [endpoint for endpoint in self._by_model[model] if endpoint.url not in known]
            logger.info("model %s: endpoints now %s", model, ", ".join(urls) or "none")
        return added

    async def _check(self, endpoint: Endpoint) -> None:
        try:
            response = await self._transport.send(
                endpoint.url, "/health", b"", (), method="GET", timeout_s=self._timeout_s
            )
            try:
                async for _ in response.chunks():
                    pass
            finally:
                await response.aclose()
        except TransportError as exc:
            self._mark(endpoint, healthy=False, reason=exc.message)
            endpoint.engine_load = None
            return
        self._mark(
            endpoint, healthy=response.status == 200, reason=f"/health answered {response.status}"
        )
        if self._engine_load is not None:  # vLLM endpoints: their own load, from /metrics
            await self._engine_load.update(endpoint)

    def _mark(self, endpoint: Endpoint, *, healthy: bool, reason: str) -> None:
        if healthy and not endpoint.healthy:
            logger.info("%s (model %s) is healthy", endpoint.url, endpoint.model)
            endpoint.last_error = None
        elif not healthy and (endpoint.healthy or endpoint.last_error != reason):
            logger.warning("%s (model %s) is unhealthy: %s", endpoint.url, endpoint.model, reason)
            endpoint.last_error = reason
        endpoint.healthy = healthy
        if healthy:
            endpoint.consecutive_failures = 0
