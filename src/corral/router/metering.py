"""The router's metrics at the proxy: one timer per response, counters per event.

Per response the proxy pays a few label look-ups and one histogram observation per
streamed chunk; endpoint health and in-flight gauges are read from the pool at scrape
time. Token counts come from the worker's final ``usage`` (found in the last bytes of the
body without parsing the JSON), so the router never re-reads a whole response.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

from corral.metrics import EndpointState, RouterMetrics
from corral.protocol.fields import last_int_field
from corral.router.pool import EndpointPool


class _ModelSeries(NamedTuple):
    """One model's labelled children, looked up once (``labels()`` costs microseconds)."""

    ttft: Any
    itl: Any
    duration: Any
    prompt_tokens: Any
    completion_tokens: Any
    cached_tokens: Any


class ResponseTimer:
    """One response on its way to the client: TTFT once, a gap per later chunk, then done."""

    __slots__ = ("_clock", "_last_s", "_meter", "_model", "_series", "_started_s", "_streaming")

    def __init__(self, meter: RouterMeter, model: str, started_s: float, *, streaming: bool) -> None:
        self._meter = meter
        self._model = model
        self._series = meter.series(model)
        self._started_s = started_s
        self._streaming = streaming
        self._clock = meter.clock
        self._last_s: float | None = None

    def chunk(self) -> None:
        if not self._streaming:
            return
        now = self._clock()
        if self._last_s is None:
            self._series.ttft.observe(now - self._started_s)
        else:
            self._series.itl.observe(now - self._last_s)
        self._last_s = now

    def done(self, endpoint: str, status: int, tail: bytes) -> int | None:
        """Record the response; the tokens its usage reports (prompt + completion), if any."""
        series = self._series
        series.duration.observe(self._clock() - self._started_s)
        self._meter.answered(self._model, endpoint, status)
        prompt = last_int_field(tail, b'"prompt_tokens"')
        completion = last_int_field(tail, b'"completion_tokens"')
        if prompt is not None:
            series.prompt_tokens.inc(prompt)
        if completion is not None:
            series.completion_tokens.inc(completion)
        cached = last_int_field(tail, b'"cached_tokens"')
        if cached is not None:
            series.cached_tokens.inc(cached)
        return None if prompt is None else prompt + (completion or 0)


class RouterMeter:
    """What the proxy and the app report; owns nothing but the metrics it writes."""

    def __init__(self, metrics: RouterMetrics, *, clock: Callable[[], float] = time.perf_counter) -> None:
        self.metrics = metrics
        self.clock = clock
        self._series: dict[str, _ModelSeries] = {}
        self._answers: dict[tuple[str, str, int], Any] = {}
        self._decisions: dict[tuple[str, str, str], Any] = {}

    def series(self, model: str) -> _ModelSeries:
        """``model``'s per-response series (bounded: models are the stack's)."""
        series = self._series.get(model)
        if series is None:
            m = self.metrics
            series = self._series[model] = _ModelSeries(
                m.ttft.labels(model), m.itl.labels(model), m.request_duration.labels(model),
                m.prompt_tokens.labels(model), m.completion_tokens.labels(model),
                m.cached_tokens_actual.labels(model),
            )
        return series

    def answered(self, model: str, endpoint: str, status: int) -> None:
        """Count a response; the (model, endpoint, status) children are kept, as Prometheus
        keeps the series (endpoints come and go slowly; statuses are few)."""
        key = (model, endpoint, status)
        counter = self._answers.get(key)
        if counter is None:
            counter = self._answers[key] = self.metrics.requests.labels(model, endpoint, str(status))
        counter.inc()

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
        key = (model, policy, reason)
        counter = self._decisions.get(key)
        if counter is None:
            counter = self._decisions[key] = self.metrics.routing_decisions.labels(model, policy, reason)
        counter.inc()

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
