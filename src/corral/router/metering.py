"""The router's metrics at the proxy: one timer per response, counters per event.

Per response the proxy pays a few label look-ups and one histogram observation per
streamed chunk; endpoint health and in-flight gauges are read from the pool at scrape
time. Token counts come from the worker's final ``usage`` (found in the last bytes of the
body without parsing the JSON), so the router never re-reads a whole response.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from corral.metrics import EndpointState, RouterMetrics
from corral.protocol.fields import last_int_field
from corral.router.pool import EndpointPool


class ResponseTimer:
    """One response on its way to the client: TTFT once, a gap per later chunk, then done."""

    __slots__ = ("_clock", "_last_s", "_meter", "_model", "_started_s", "_streaming")

    def __init__(self, meter: RouterMeter, model: str, started_s: float, *, streaming: bool) -> None:
        self._meter = meter
        self._model = model
        self._started_s = started_s
        self._streaming = streaming
        self._clock = meter.clock
        self._last_s: float | None = None

    def chunk(self) -> None:
        if not self._streaming:
            return
        now = self._clock()
        metrics = self._meter.metrics
        if self._last_s is None:
            metrics.ttft.labels(self._model).observe(now - self._started_s)
        else:
            metrics.itl.labels(self._model).observe(now - self._last_s)
        self._last_s = now

    def done(self, endpoint: str, status: int, tail: bytes) -> int | None:
        """Record the response; the tokens its usage reports (prompt + completion), if any."""
        metrics, model = self._meter.metrics, self._model
        metrics.request_duration.labels(model).observe(self._clock() - self._started_s)
        metrics.requests.labels(model, endpoint, str(status)).inc()
        prompt = last_int_field(tail, b'"prompt_tokens"')
        completion = last_int_field(tail, b'"completion_tokens"')
        if prompt is not None:
            metrics.prompt_tokens.labels(model).inc(prompt)
        if completion is not None:
            metrics.completion_tokens.labels(model).inc(completion)
        cached = last_int_field(tail, b'"cached_tokens"')
        if cached is not None:
            metrics.cached_tokens_actual.labels(model).inc(cached)
        return None if prompt is None else prompt + (completion or 0)


class RouterMeter:
    """What the proxy and the app report; owns nothing but the metrics it writes."""

    def __init__(self, metrics: RouterMetrics, *, clock: Callable[[], float] = time.perf_counter) -> None:
        self.metrics = metrics
        self.clock = clock

    def watch(self, pool: EndpointPool, models: list[str]) -> None:
        """Endpoint gauges from the pool, and a zero series per model for every counter."""
        metrics = self.metrics
        metrics.watch_endpoints(
            lambda: [
                EndpointState(model, e.url, e.healthy, e.in_flight)
                for model in models
                for e in pool.endpoints(model)
            ]
        )
        for model in models:
            for family in (metrics.retries, metrics.prompt_tokens, metrics.completion_tokens,
                           metrics.cached_tokens_predicted, metrics.cached_tokens_actual,
                           metrics.request_duration, metrics.ttft, metrics.itl):
                family.labels(model)
            for outcome in ("agree", "over", "under", "unknown"):
                metrics.cache_predictions.labels(model, outcome)
            metrics.upstream_errors.labels(model, "none", "connect")

    def timer(self, model: str, started_s: float, *, streaming: bool) -> ResponseTimer:
        return ResponseTimer(self, model, started_s, streaming=streaming)

    def refused(self, model: str, status: int) -> None:
        """A request answered by the router itself (no endpoint, bad input for a known model)."""
        self.metrics.requests.labels(model, "none", str(status)).inc()

    def picked(self, model: str, policy: str, reason: str) -> None:
        self.metrics.routing_decisions.labels(model, policy, reason).inc()

    def retried(self, model: str) -> None:
        self.metrics.retries.labels(model).inc()

    def upstream_error(self, model: str, endpoint: str, kind: str) -> None:
        self.metrics.upstream_errors.labels(model, endpoint, kind).inc()

    def prefilled(self, model: str, outcome: str, duration_s: float) -> None:
        """A disaggregated prefill ended (see :mod:`corral.router.prefill`)."""
        self.metrics.prefills.labels(model, outcome).inc()
        if outcome == "ok":
            self.metrics.prefill_duration.labels(model).observe(duration_s)

    def prediction(self, model: str, outcome: str, predicted: int, actual: int | None) -> None:
        """The self-check's verdict (the actual tokens are counted with every response)."""
        metrics = self.metrics
        metrics.cache_predictions.labels(model, outcome).inc()
        metrics.cached_tokens_predicted.labels(model).inc(predicted)
