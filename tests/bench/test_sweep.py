"""Sweep levels and the saturation rule."""

from __future__ import annotations

import pytest

from corral.bench.records import RequestResult
from corral.bench.stats import Metrics
from corral.bench.sweep import SweepSpec, keep_up_ratio, parse_sweep, saturation


def metrics(output_throughput: float, completed: int = 10, failed: int = 0) -> Metrics:
    return Metrics(completed, failed, 1.0, 0, 0, 0.0, output_throughput, 0.0, 0.0, 0, 0)


def done(start: float, end: float) -> RequestResult:
    return RequestResult(True, start, start, (end,), output_tokens=1)


def test_parse_sweep():
    assert parse_sweep("rate=1,2.5,8") == SweepSpec("rate", (1.0, 2.5, 8.0))
    assert parse_sweep("concurrency=1, 4,16") == SweepSpec("concurrency", (1.0, 4.0, 16.0))


@pytest.mark.parametrize(
    ("text", "message"),
    [("speed=1", "is not rate="), ("rate=", "lists no levels"), ("rate=1,x", "'x' is not a number"),
     ("rate=0", "a rate > 0"), ("concurrency=1.5", "a whole number"), ("rate=nan", "a rate > 0")],
)
def test_parse_sweep_errors(text, message):
    with pytest.raises(ValueError, match=message):
        parse_sweep(text)


def test_keep_up_ratio_cancels_latency():
    # 5 arrivals 1 s apart; each takes 3 s: completions are also 1 s apart -> keeps up fully
    arrivals = [0.0, 1.0, 2.0, 3.0, 4.0]
    assert keep_up_ratio([done(a, a + 3) for a in arrivals], arrivals) == pytest.approx(1.0)
    # served one at a time, 2 s each: completions 2 s apart -> half the offered rate
    serial = [done(a, 2.0 * (i + 1)) for i, a in enumerate(arrivals)]
    assert keep_up_ratio(serial, arrivals) == pytest.approx(0.5)
    assert keep_up_ratio([done(0, 1)], [0.0]) is None


def test_saturation_rules():
    rate = SweepSpec("rate", (1, 2, 4))
    conc = SweepSpec("concurrency", (1, 2, 4))
    assert saturation(rate, metrics(100), 0.95, None) is None
    assert "falls behind: completes 80%" in (saturation(rate, metrics(100), 0.8, None) or "")
    assert saturation(conc, metrics(100), 0.5, None) is None  # keep-up applies to rate sweeps only
    assert "plateau" in (saturation(conc, metrics(104), None, 100.0) or "")
    assert saturation(conc, metrics(106), None, 100.0) is None
    assert "errors: 6 of 10" in (saturation(conc, metrics(500, 4, 6), None, 100.0) or "")
