"""Worker metrics at the edge of the engine: one wrapper per generation, gauges read at scrape.

:class:`MeteredStream` wraps a :class:`~corral.worker.streams.TokenStream` and records,
as the HTTP layer consumes it, the time to the first piece of text, the gaps between
pieces (pieces the engine produced while the consumer was busy arrive joined, so under
load a gap can cover several tokens), the tokens of ``usage`` and the outcome.
Gauges (queue depth, running sequences, KV bytes) are functions read at scrape time,
so the hot path pays nothing for them.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from corral.metrics import WorkerMetrics
from corral.worker.engine import Engine
from corral.worker.streams import TokenStream


class MeteredStream:
    """A TokenStream that records TTFT, inter-token gaps, tokens and the outcome once."""

    def __init__(
        self,
        stream: TokenStream,
        metrics: WorkerMetrics,
        *,
        started_s: float,
        on_end: Callable[[], None],
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._stream = stream
        self._metrics = metrics
        self._started_s = started_s
        self._on_end = on_end
        self._clock = clock

    def __getattr__(self, name: str) -> Any:  # cancel, cancelled, finish_reason, usage
        return getattr(self._stream, name)

    async def __aiter__(self) -> AsyncIterator[str]:
        metrics, clock = self._metrics, self._clock
        last: float | None = None
        outcome = "error"
        try:
            async for text in self._stream:
                now = clock()
                if last is None:
                    metrics.ttft.observe(now - self._started_s)
                else:
                    metrics.itl.observe(now - last)
                last = now
                yield text
            outcome = "cancelled" if self._stream.cancelled else (self._stream.finish_reason or "stop")
        finally:
            if outcome == "error" and self._stream.cancelled:
                outcome = "cancelled"
            self._record(outcome)

    def _record(self, outcome: str) -> None:
        metrics, usage = self._metrics, self._stream.usage
        metrics.requests.labels(metrics.model, outcome).inc()
        metrics.prompt_tokens.inc(usage.prompt_tokens)
        metrics.generation_tokens.inc(usage.completion_tokens)
        metrics.cached_prompt_tokens.inc(usage.cached_tokens)
        self._on_end()


class Meter:
    """The metrics of one served model: wraps generations, counts those in flight."""

    def __init__(self, metrics: WorkerMetrics, engine: Engine, *, queue_size: int) -> None:
        self.metrics = metrics
        self._in_flight = 0
        queue_depth: Callable[[], int] = lambda: int(getattr(engine, "queue_depth", 0))  # noqa: E731
        metrics.queue_depth.set_function(queue_depth)
        metrics.queue_capacity.set(queue_size)
        metrics.running.set_function(lambda: max(0, self._in_flight - queue_depth()))
        metrics.requests.labels(metrics.model, "rejected")  # a series from the start

    def wrap(self, stream: TokenStream, started_s: float) -> MeteredStream:
        self._in_flight += 1
        return MeteredStream(stream, self.metrics, started_s=started_s, on_end=self._ended)

    def rejected(self) -> None:
        self.metrics.requests.labels(self.metrics.model, "rejected").inc()

    def _ended(self) -> None:
        self._in_flight -= 1
