"""Load an engine reports about itself: vLLM's ``/metrics``, read on the health interval.

The router's own count of a replica's requests (``Endpoint.in_flight``) is exact and
instant but sees only this router. vLLM counts every request, whoever sent it (several
router replicas, clients that bypass the router), and knows how full its KV cache is::

    vllm:num_requests_running   requests in the running batch          (gauge, per engine)
    vllm:num_requests_waiting   requests queued for a slot or KV blocks (gauge, per engine)
    vllm:kv_cache_usage_perc    KV cache blocks in use, 0..1            (gauge, per engine;
                                vllm:gpu_cache_usage_perc before vLLM renamed it)

:class:`EngineLoadReader` reads those after each passing health check of a vLLM endpoint
(``GET /metrics``, Prometheus text, parsed with prometheus_client's parser after the
three families' lines are picked out, so a large exposition costs little on the event
loop) and keeps them in ``Endpoint.engine_load`` (None when unknown: no vLLM, a failed
read, an unhealthy endpoint). Engines of one server (data parallel) are summed, their
cache usage averaged. :func:`extra_load` is what the load scorer adds.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client.parser import text_string_to_metric_families

from corral.router.transport.base import Transport, TransportError

if TYPE_CHECKING:
    from corral.router.endpoint import Endpoint

logger = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
KV_USAGE = "vllm:kv_cache_usage_perc"
KV_USAGE_OLD = "vllm:gpu_cache_usage_perc"
_FAMILIES = (RUNNING, WAITING, KV_USAGE, KV_USAGE_OLD)
_PREFIXES = (*_FAMILIES, *(f"# TYPE {name} " for name in _FAMILIES))
#: A vLLM exposition is tens to hundreds of kB; more than this is not read.
MAX_METRICS_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class EngineLoad:
    """What a replica's engine said at its last read."""

    running: float
    waiting: float
    kv_cache_usage: float  # 0..1


def parse_vllm_metrics(text: str) -> EngineLoad | None:
    """The load in a vLLM ``/metrics`` text; None when running or waiting is missing."""
    wanted = "\n".join(line for line in text.splitlines() if line.startswith(_PREFIXES))
    values: dict[str, list[float]] = {}
    try:
        for family in text_string_to_metric_families(wanted + "\n"):
            for sample in family.samples:
                if sample.name in _FAMILIES:
                    values.setdefault(sample.name, []).append(sample.value)
    except ValueError as exc:
        logger.debug("unreadable vLLM metrics: %s", exc)
        return None
    if RUNNING not in values or WAITING not in values:
        return None
    usage = values.get(KV_USAGE) or values.get(KV_USAGE_OLD) or [0.0]
    return EngineLoad(
        running=sum(values[RUNNING]),
        waiting=sum(values[WAITING]),
        kv_cache_usage=min(1.0, max(0.0, sum(usage) / len(usage))),
    )


def extra_load(endpoint: Endpoint) -> float:
    """What the engine's own numbers add to the router's ``in_flight`` count, in requests.

    The requests vLLM holds beyond those this router has in flight there (other routers',
    or ones that finished since the read: the read is up to a health interval old), plus
    its KV cache usage (0..1): between replicas with as many requests, the one with the
    fuller cache -- nearer to queueing and preempting -- counts as more loaded. 0.0 with
    no engine metrics, so replicas without them are scored on ``in_flight`` alone.
    """
    load = endpoint.engine_load
    if load is None:
        return 0.0
    return max(0.0, load.running + load.waiting - endpoint.in_flight) + load.kv_cache_usage


class EngineLoadReader:
    """Reads ``/metrics`` of the endpoints of the given models (pools) after health checks."""

    def __init__(self, transport: Transport, models: Iterable[str], *, timeout_s: float) -> None:
        self._transport = transport
        self._models = frozenset(models)
        self._timeout_s = timeout_s
        self._warned: set[str] = set()

    def wants(self, endpoint: Endpoint) -> bool:
        return endpoint.model in self._models

    async def update(self, endpoint: Endpoint) -> None:
        """Refresh ``endpoint.engine_load`` (None if unhealthy, not vLLM, or unreadable)."""
        if not endpoint.healthy or not self.wants(endpoint):
            endpoint.engine_load = None
            return
        endpoint.engine_load = await self.read(endpoint.url)

    async def read(self, url: str) -> EngineLoad | None:
        try:
            response = await self._transport.send(
                url,
                METRICS_PATH,
                b"",
                [("accept", "text/plain")],
                method="GET",
                timeout_s=self._timeout_s,
            )
            try:
                if response.status != 200:
                    self._warn_once(url, f"/metrics answered {response.status}")
                    return None
                body = bytearray()
                async for chunk in response.chunks():
                    body += chunk
                    if len(body) > MAX_METRICS_BYTES:
                        self._warn_once(url, f"/metrics is over {MAX_METRICS_BYTES} bytes")
                        return None
            finally:
                await response.aclose()
        except TransportError as exc:
            logger.debug("reading %s%s: %s", url, METRICS_PATH, exc.message)
            return None
        load = parse_vllm_metrics(body.decode("utf-8", "replace"))
        if load is None:
            self._warn_once(url, f"/metrics has no {RUNNING} and {WAITING}")
        return load

    def _warn_once(self, url: str, why: str) -> None:
        if url not in self._warned:
            self._warned.add(url)
            logger.warning("%s: %s; its load is the router's own count only", url, why)
