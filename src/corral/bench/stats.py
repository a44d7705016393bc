"""Serving metrics as `vllm bench serve` defines them (see docs/bench.md). Pure functions.

Per request (successful ones only, as vLLM):
    TTFT  first chunk time - start (start: just before the POST)
    ITL   gaps between consecutive chunks, pooled over all requests
    TPOT  (E2EL - TTFT) / (output_tokens - 1), only when output_tokens > 1
    E2EL  last chunk time - start
    TTST  second text chunk time - first text chunk time (genai-perf's time to second
          token; a chat stream's role-only chunk carries no token, so it is skipped here
          although TTFT and ITL count it, exactly as vLLM does)
    E2EL per token  E2EL / output_tokens: guidellm's TPOT and llmperf's ITL
    queue  start - scheduled: time spent waiting for a --max-concurrency slot
Run-wide: throughputs over the wall duration, peak output tokens in a 1-second bucket,
peak concurrency, goodput against SLOs. Distributions are in milliseconds: mean, median,
population std (numpy's default, as vLLM) and linear-interpolated percentiles.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from corral.bench.records import RequestResult

DEFAULT_PERCENTILES: tuple[float, ...] = (50, 90, 95, 99)
DISTRIBUTIONS: tuple[str, ...] = ("ttft", "tpot", "itl", "e2el", "ttst", "e2el_per_token", "queue")


@dataclass(frozen=True, slots=True)
class Distribution:
    count: int
    mean_ms: float
    median_ms: float
    std_ms: float
    percentiles_ms: dict[float, float]


def distribution(values_s: Sequence[float], percentiles: Sequence[float]) -> Distribution | None:
    """Summary in ms of values in seconds; None when there are none."""
    if len(values_s) == 0:
        return None
    ms = np.asarray(values_s, dtype=float) * 1000.0
    return Distribution(
        count=len(ms),
        mean_ms=float(np.mean(ms)),
        median_ms=float(np.median(ms)),
        std_ms=float(np.std(ms)),
        percentiles_ms={float(p): float(np.percentile(ms, p)) for p in percentiles},
    )


@dataclass(frozen=True, slots=True)
class Slo:
    """Service-level objectives in ms; a request is good when it meets every one given."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2el_ms: float | None = None

    def as_dict(self) -> dict[str, float]:
        pairs = (("ttft", self.ttft_ms), ("tpot", self.tpot_ms), ("e2el", self.e2el_ms))
        return {name: value for name, value in pairs if value is not None}


def parse_slo(text: str) -> Slo:
    """``ttft=500,tpot=50,e2el=2000`` (ms); vLLM's ``ttft:500 tpot:50`` is accepted too."""
    values: dict[str, float] = {}
    compact = re.sub(r"\s*([=:])\s*", r"\1", text.strip())
    for item in filter(None, re.split(r"[,\s]+", compact)):
        name, sep, raw = item.replace(":", "=", 1).partition("=")
        name = name.strip().lower()
        if not sep or name not in ("ttft", "tpot", "e2el"):
            raise ValueError(f"'{item}' is not NAME=MS with NAME one of ttft, tpot, e2el")
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"'{item}': '{raw}' is not a number of milliseconds") from None
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"'{item}': the limit must be a positive number of milliseconds")
        values[name] = value
    if not values:
        raise ValueError("give at least one of ttft=MS, tpot=MS, e2el=MS")
    return Slo(values.get("ttft"), values.get("tpot"), values.get("e2el"))


def tpot_s(result: RequestResult) -> float | None:
    """(E2EL - TTFT) / (output_tokens - 1); None unless there are at least two output tokens."""
    latency, ttft, tokens = result.latency_s, result.ttft_s, result.output_tokens
    if latency is None or ttft is None or tokens is None or tokens <= 1:
        return None
    return (latency - ttft) / (tokens - 1)


def meets_slo(result: RequestResult, slo: Slo) -> bool:
    """vLLM's goodput test; a request with one output token counts as TPOT 0."""
    ttft, latency = result.ttft_s, result.latency_s
    if ttft is None or latency is None:
        return False
    checks = (
        (slo.ttft_ms, ttft),
        (slo.tpot_ms, tpot_s(result) or 0.0),
        (slo.e2el_ms, latency),
    )
    return all(limit is None or value * 1000.0 <= limit for limit, value in checks)


def peak_output_tokens_per_s(results: Sequence[RequestResult]) -> float:
    """Most chunks in any 1-second bucket counted from the earliest start (vLLM: one chunk is
    one token, so speculative bundles count once)."""
    ok = [r for r in results if r.success and r.chunk_times_s]
    if not ok:
        return 0.0
    origin = min(r.start_s for r in ok)
    buckets = Counter(int(t - origin) for r in ok for t in r.chunk_times_s)
    return float(max(buckets.values()))


def peak_concurrency(results: Sequence[RequestResult]) -> int:
    """Most requests in flight at once: a sweep over the intervals [start, start + E2EL)."""
    events: list[tuple[float, int]] = []
    for r in results:
        if r.success and r.latency_s is not None:
            events += [(r.start_s, 1), (r.start_s + r.latency_s, -1)]
    events.sort()  # at equal times -1 sorts first: the intervals are half-open
    peak = current = 0
    for _, step in events:
        current += step
        peak = max(peak, current)
    return peak


def peak_concurrency_per_second(results: Sequence[RequestResult]) -> int:
    """vLLM's code: requests active during any part of a 1-second bucket (>= the sweep value)."""
    ok = [r for r in results if r.success and r.latency_s is not None]
    if not ok:
        return 0
    origin = min(r.start_s for r in ok)
    buckets: Counter[int] = Counter()
    for r in ok:
        first, last = int(r.start_s - origin), int(r.start_s + r.latency_s - origin)  # type: ignore[operator]
        buckets.update(range(first, last + 1))
    return max(buckets.values())


@dataclass(frozen=True, slots=True)
class Metrics:
    completed: int
    failed: int
    duration_s: float
    total_input_tokens: int
    total_output_tokens: int
    request_throughput: float
    output_throughput: float
    total_token_throughput: float
    max_output_tokens_per_s: float
    max_concurrent_requests: int
    max_concurrent_requests_per_second: int
    request_goodput: float | None = None
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    output_tokens_sources: dict[str, int] = field(default_factory=dict)
    distributions: dict[str, Distribution | None] = field(default_factory=dict)


def compute_metrics(
    results: Sequence[RequestResult],
    duration_s: float,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    slo: Slo | None = None,
) -> Metrics:
    ok = [r for r in results if r.success]
    failed = [r for r in results if not r.success]
    total_in = sum(r.prompt_tokens or 0 for r in ok)
    total_out = sum(r.output_tokens or 0 for r in ok)

    def per_s(x: float) -> float:
        return x / duration_s if duration_s > 0 else 0.0

    return Metrics(
        completed=len(ok),
        failed=len(failed),
        duration_s=duration_s,
        total_input_tokens=total_in,
        total_output_tokens=total_out,
        request_throughput=per_s(len(ok)),
        output_throughput=per_s(total_out),
        total_token_throughput=per_s(total_in + total_out),
        max_output_tokens_per_s=peak_output_tokens_per_s(ok),
        max_concurrent_requests=peak_concurrency(ok),
        max_concurrent_requests_per_second=peak_concurrency_per_second(ok),
        request_goodput=None if slo is None else per_s(sum(meets_slo(r, slo) for r in ok)),
        errors_by_kind=dict(Counter(r.error or "unknown" for r in failed)),
        output_tokens_sources=dict(Counter(r.output_tokens_source or "none" for r in ok)),
        distributions={
            name: distribution(values, percentiles) for name, values in samples(ok).items()
        },
    )


def samples(ok: Sequence[RequestResult]) -> dict[str, list[float]]:
    """The values in seconds behind each distribution, from successful requests."""
    tpots = [t for r in ok if (t := tpot_s(r)) is not None]
    per_token = [
        r.latency_s / r.output_tokens
        for r in ok
        if r.latency_s is not None and r.output_tokens
    ]
    return {
        "ttft": [r.ttft_s for r in ok if r.ttft_s is not None],
        "tpot": tpots,
        "itl": [gap for r in ok for gap in r.itl_s],
        "e2el": [r.latency_s for r in ok if r.latency_s is not None],
        "ttst": [t for r in ok if (t := r.ttst_s) is not None],
        "e2el_per_token": per_token,
        "queue": [r.queue_s for r in ok],
    }
