"""Every corral metric, defined once, on an injected CollectorRegistry.

Names start with ``corral_``; counters end in ``_total``; histograms carry their unit
(``_seconds``). Labels are bounded sets: model names, endpoint URLs, status codes,
policy names, error kinds and KV tiers -- never anything per request. Dashboards and
alert rules (``corral.observability``) use these names; a test runs every one of their
queries against a real Prometheus scraping a real stack.

vLLM workers expose ``vllm:*`` names instead; docs/observability.md maps them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import NamedTuple, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

#: Latency buckets from 5 ms to 2 min: CPU prefill of long prompts takes seconds.
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 120)
#: Inter-token gaps: 1 ms to 2 s.
ITL_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1, 2)


class RouterMetrics:
    """What the router measures: traffic, latency as the client sees it, routing, health."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "corral_router_requests_total", "Requests answered, by model, endpoint and HTTP status.",
            ["model", "endpoint", "status"], registry=registry,
        )
        self.request_duration = Histogram(
            "corral_router_request_duration_seconds", "End-to-end latency seen by the router.",
            ["model"], buckets=LATENCY_BUCKETS_S, registry=registry,
        )
        self.ttft = Histogram(
            "corral_router_time_to_first_token_seconds", "Time to the first streamed chunk.",
            ["model"], buckets=LATENCY_BUCKETS_S, registry=registry,
        )
        self.itl = Histogram(
            "corral_router_inter_token_latency_seconds", "Gap between consecutive streamed chunks.",
            ["model"], buckets=ITL_BUCKETS_S, registry=registry,
        )
        self.prompt_tokens = Counter(
            "corral_router_prompt_tokens_total", "Prompt tokens, from the workers' usage.",
            ["model"], registry=registry,
        )
        self.completion_tokens = Counter(
            "corral_router_completion_tokens_total", "Completion tokens, from the workers' usage.",
            ["model"], registry=registry,
        )
        self.routing_decisions = Counter(
            "corral_router_routing_decisions_total", "Endpoints picked, by policy and reason.",
            ["model", "policy", "reason"], registry=registry,
        )
        self.retries = Counter(
            "corral_router_retries_total", "Requests retried on another endpoint before the first byte.",
            ["model"], registry=registry,
        )
        self.upstream_errors = Counter(
            "corral_router_upstream_errors_total", "Failures talking to an endpoint, by kind.",
            ["model", "endpoint", "kind"], registry=registry,
        )
        self.cached_tokens_predicted = Counter(
            "corral_router_cached_tokens_predicted_total", "Prompt tokens the router expected the worker to reuse.",
            ["model"], registry=registry,
        )
        self.cached_tokens_actual = Counter(
            "corral_router_cached_tokens_actual_total", "Prompt tokens the workers reported they reused (usage.prompt_tokens_details.cached_tokens).",
            ["model"], registry=registry,
        )
        self.cache_predictions = Counter(
            "corral_router_cache_predictions_total", "Per request: did prediction and reuse agree.",
            ["model", "outcome"], registry=registry,
        )
        # Rate limits shared through Redis (router.shared_limits).
        self.shared_limits_errors = Counter(
            "corral_router_shared_limits_errors_total",
            "Rate-limit calls Redis did not answer, by what the router did: local, open or closed "
            "(a request decided without Redis), release or renew (its counts left to expire).",
            ["action"], registry=registry,
        )
        self.prefills = Counter(
            "corral_router_prefills_total",
            "Disaggregated prefills: ok, failed or no_endpoint (the decode worker prefilled itself).",
            ["model", "outcome"], registry=registry,
        )
        self.prefill_duration = Histogram(
            "corral_router_prefill_duration_seconds", "Time a prefill worker took to prefill and store a prompt.",
            ["model"], buckets=LATENCY_BUCKETS_S, registry=registry,
        )


    def watch_endpoints(self, snapshot: Callable[[], Iterable[EndpointState]]) -> None:
        """Endpoint gauges read at scrape time from ``snapshot`` (the pool): nothing on the hot path."""
        self.registry.register(_EndpointCollector(snapshot))


class EndpointState(NamedTuple):
    model: str
    endpoint: str
    healthy: bool
    in_flight: int


class _EndpointCollector(Collector):
    """corral_router_endpoint_healthy and corral_router_in_flight_requests, per endpoint."""

    def __init__(self, snapshot: Callable[[], Iterable[EndpointState]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        healthy = GaugeMetricFamily(
            "corral_router_endpoint_healthy", "1 when the endpoint passes its health checks.",
            labels=["model", "endpoint"],
        )
        in_flight = GaugeMetricFamily(
            "corral_router_in_flight_requests", "Requests being proxied, by model and endpoint.",
            labels=["model", "endpoint"],
        )
        for state in self._snapshot():
            healthy.add_metric([state.model, state.endpoint], 1.0 if state.healthy else 0.0)
            in_flight.add_metric([state.model, state.endpoint], float(state.in_flight))
        yield healthy
        yield in_flight


class WorkerMetrics:
    """What a worker measures: its queue, its engine's speed, its caches, its memory."""

    def __init__(self, registry: CollectorRegistry, *, model: str, with_process: bool = True) -> None:
        self.registry = registry
        self.model = model
        if with_process:
            ProcessCollector(registry=registry)  # process_resident_memory_bytes and friends
        labels = ["model"]
        self.queue_depth = Gauge(
            "corral_worker_queue_depth", "Requests waiting for the engine.", labels, registry=registry,
        ).labels(model)
        self.queue_capacity = Gauge(
            "corral_worker_queue_capacity", "Most requests that may wait (queue_size).", labels, registry=registry,
        ).labels(model)
        self.running = Gauge(
            "corral_worker_running_sequences", "Sequences being generated.", labels, registry=registry,
        ).labels(model)
        self.requests = Counter(
            "corral_worker_requests_total", "Requests finished, by outcome (stop, length, error, cancelled, rejected).",
            ["model", "outcome"], registry=registry,
        )
        self.prompt_tokens = Counter(
            "corral_worker_prompt_tokens_total", "Prompt tokens processed (prefill, including reused ones).",
            labels, registry=registry,
        ).labels(model)
        self.cached_prompt_tokens = Counter(
            "corral_worker_cached_prompt_tokens_total", "Prompt tokens reused from a KV cache instead of prefilled.",
            labels, registry=registry,
        ).labels(model)
        self.generation_tokens = Counter(
            "corral_worker_generation_tokens_total", "Tokens generated (decode).", labels, registry=registry,
        ).labels(model)
        self.ttft = Histogram(
            "corral_worker_time_to_first_token_seconds", "From admission to the first generated token.",
            labels, buckets=LATENCY_BUCKETS_S, registry=registry,
        ).labels(model)
        self.itl = Histogram(
            "corral_worker_inter_token_latency_seconds", "Gap between consecutive generated tokens.",
            labels, buckets=ITL_BUCKETS_S, registry=registry,
        ).labels(model)
        self.model_load = Gauge(
            "corral_worker_model_load_seconds", "How long the model took to load.", labels, registry=registry,
        ).labels(model)

    # -- KV cache tiers (RAM, disk, Redis), read from the engine at scrape time -------------

    def watch_kv_tiers(self, read: Callable[[], Iterable[KVTierReading]]) -> None:
        """corral_worker_kv_tier_* per tier, from ``read`` (the engine's tier stats)."""
        self.registry.register(_KVTierCollector(self.model, read))


class KVTierReading(Protocol):
    """One tier's counters (corral.worker.kvstore.stats.TierStats has these fields)."""

    @property
    def tier(self) -> str: ...
    @property
    def hits(self) -> int: ...
    @property
    def hit_tokens(self) -> int: ...
    @property
    def misses(self) -> int: ...
    @property
    def stored(self) -> int: ...
    @property
    def evicted(self) -> int: ...
    @property
    def entries(self) -> int: ...
    @property
    def nbytes(self) -> int: ...
    @property
    def errors(self) -> Mapping[str, int]: ...


class _KVTierCollector(Collector):
    """corral_worker_kv_tier_{hits,hit_tokens,misses,stores,evictions,errors}_total, _bytes, _entries."""

    _COUNTERS = (
        ("hits", "hits", "Prompts whose prefix KV was loaded from this tier."),
        ("hit_tokens", "hit_tokens", "Prompt tokens not prefilled thanks to this tier."),
        ("misses", "misses", "Lookups in this tier that found nothing it served."),
        ("stores", "stored", "Prefix states written to this tier."),
        ("evictions", "evicted", "Prefix states dropped from this tier to stay within its bound."),
    )

    def __init__(self, model: str, read: Callable[[], Iterable[KVTierReading]]) -> None:
        self._model = model
        self._read = read

    def describe(self) -> Iterator[Metric]:
        return self._families([])

    def collect(self) -> Iterator[Metric]:
        return self._families(list(self._read()))

    def _families(self, tiers: list[KVTierReading]) -> Iterator[Metric]:
        labels = ["model", "tier"]
        for name, field, help_text in self._COUNTERS:
            counter = CounterMetricFamily(f"corral_worker_kv_tier_{name}", help_text, labels=labels)
            for tier in tiers:
                counter.add_metric([self._model, tier.tier], getattr(tier, field))
            yield counter
        errors = CounterMetricFamily(
            "corral_worker_kv_tier_errors", "Tier faults by kind: corrupt, incompatible, rejected, "
            "unavailable, read, write, dropped (each a recompute or a state not kept, never a failed request).",
            labels=["model", "tier", "kind"],
        )
        for tier in tiers:
            for kind, count in sorted(tier.errors.items()):
                errors.add_metric([self._model, tier.tier, kind], count)
        yield errors
        held = GaugeMetricFamily("corral_worker_kv_tier_bytes", "Bytes of prefix KV held in this tier.", labels=labels)
        entries = GaugeMetricFamily("corral_worker_kv_tier_entries", "Prefix states held in this tier.", labels=labels)
        for tier in tiers:
            held.add_metric([self._model, tier.tier], tier.nbytes)
            entries.add_metric([self._model, tier.tier], tier.entries)
        yield held
        yield entries
