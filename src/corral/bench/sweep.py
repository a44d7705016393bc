"""Sweeps over request rates or concurrency levels, and when to stop them.

A level is **saturated** when any of these holds (checked in this order):

1. ``errors``: more than half of its requests failed;
2. ``rate`` sweeps only, ``falls behind``: the completion rate, (completed - 1) / (last end -
   first end), is below ``keep_up`` (default 0.9) x the offered rate, (arrivals - 1) / (last
   arrival - first arrival). Measuring both between first and last event cancels the latency
   of a single request, so a server that keeps up scores ~1.0 whatever its latency;
3. ``plateau``: its output token throughput is less than ``1 + min_gain`` (default 1.05) x the
   best of the levels before it.

The sweep runs levels in the order given and stops after the first saturated one (it is
kept in the results, marked).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from corral.bench.records import RequestResult
from corral.bench.stats import Metrics

SweepKind = Literal["rate", "concurrency"]


@dataclass(frozen=True, slots=True)
class SweepSpec:
    kind: SweepKind
    levels: tuple[float, ...]
    keep_up: float = 0.9
    min_gain: float = 0.05


def parse_sweep(text: str) -> SweepSpec:
    """``rate=1,2,4,8`` (requests/s) or ``concurrency=1,4,16``."""
    kind, sep, raw = text.partition("=")
    kind = kind.strip().lower()
    if not sep or kind not in ("rate", "concurrency"):
        raise ValueError(f"'{text}' is not rate=R1,R2,... or concurrency=C1,C2,...")
    levels: list[float] = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        try:
            value = float(item)
        except ValueError:
            raise ValueError(f"'{item}' is not a number") from None
        if not value > 0 or math.isnan(value) or (kind == "concurrency" and value != int(value)):
            expected = "a whole number >= 1" if kind == "concurrency" else "a rate > 0"
            raise ValueError(f"'{item}' is not {expected}")
        levels.append(value)
    if not levels:
        raise ValueError(f"'{text}' lists no levels")
    return SweepSpec(kind, tuple(levels))  # type: ignore[arg-type]


def keep_up_ratio(results: Sequence[RequestResult], arrivals_s: Sequence[float]) -> float | None:
    """Completion rate / offered rate (see the module docstring); None when undefined."""
    ends = sorted(r.start_s + r.latency_s for r in results if r.success and r.latency_s is not None)
    arrivals = sorted(arrivals_s)
    if len(ends) < 2 or len(arrivals) < 2:
        return None
    offered_span, completed_span = arrivals[-1] - arrivals[0], ends[-1] - ends[0]
    if offered_span <= 0 or completed_span <= 0:
        return None
    completion_rate = (len(ends) - 1) / completed_span
    offered_rate = (len(arrivals) - 1) / offered_span
    return completion_rate / offered_rate


def saturation(
    spec: SweepSpec,
    metrics: Metrics,
    ratio: float | None,
    best_output_throughput: float | None,
) -> str | None:
    """Why this level is saturated, or None. ``ratio`` is :func:`keep_up_ratio`'s value."""
    total = metrics.completed + metrics.failed
    if total and metrics.failed > total / 2:
        return f"errors: {metrics.failed} of {total} requests failed"
    if spec.kind == "rate" and ratio is not None and ratio < spec.keep_up:
        return f"falls behind: completes {ratio:.0%} of the offered rate (< {spec.keep_up:.0%})"
    if best_output_throughput is not None:
        floor = best_output_throughput * (1 + spec.min_gain)
        if metrics.output_throughput < floor:
            return (
                f"plateau: {metrics.output_throughput:.1f} tok/s is less than "
                f"{1 + spec.min_gain:.2f} x the best so far ({best_output_throughput:.1f})"
            )
    return None
