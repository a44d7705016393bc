"""Every metric from synthetic timestamps, against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from corral.bench.records import RequestResult
from corral.bench.stats import (
    Slo,
    compute_metrics,
    distribution,
    meets_slo,
    parse_slo,
    peak_concurrency,
    peak_concurrency_per_second,
    peak_output_tokens_per_s,
    tpot_s,
)


def ok(start: float, chunks: list[float], output: int | None, prompt: int | None = 10, **kw: object) -> RequestResult:
    kw.setdefault("text_times_s", tuple(chunks))
    return RequestResult(True, start, kw.pop("scheduled", start), tuple(chunks), prompt, output, "usage", **kw)  # type: ignore[arg-type]


def failed(start: float, kind: str = "http_503") -> RequestResult:
    return RequestResult(False, start, start, error=kind)


# r1: TTFT 100, E2EL 250, 3 tokens -> TPOT (250-100)/2 = 75, ITL [50, 100], TTST 50
# r2: TTFT 200, E2EL 200, 1 token  -> no TPOT (0 for goodput), no ITL
# r3: failed
# r4: TTFT 300, E2EL 600, 4 tokens -> TPOT 300/3 = 100, ITL [100, 100, 100], TTST 100
R1 = ok(0.0, [0.10, 0.15, 0.25], 3, prompt=10)
R2 = ok(0.05, [0.25], 1, prompt=20)
R3 = failed(0.1)
R4 = ok(1.2, [1.5, 1.6, 1.7, 1.8], 4, prompt=5)
RUN = [R1, R2, R3, R4]


def test_per_request_values():
    assert R1.ttft_s == pytest.approx(0.10)
    assert R1.latency_s == pytest.approx(0.25)
    assert R1.itl_s == pytest.approx([0.05, 0.10])
    assert tpot_s(R1) == pytest.approx(0.075)
    assert tpot_s(R2) is None  # one output token: TPOT undefined
    assert R2.itl_s == []
    assert tpot_s(R4) == pytest.approx(0.1)


def test_counts_and_throughputs():
    m = compute_metrics(RUN, duration_s=2.0)
    assert (m.completed, m.failed) == (3, 1)
    assert m.errors_by_kind == {"http_503": 1}
    assert m.total_input_tokens == 35  # failed requests' prompts are not counted (vLLM)
    assert m.total_output_tokens == 8
    assert m.request_throughput == pytest.approx(1.5)
    assert m.output_throughput == pytest.approx(4.0)
    assert m.total_token_throughput == pytest.approx(21.5)
    assert m.request_goodput is None


def test_latency_distributions_in_ms():
    d = compute_metrics(RUN, duration_s=2.0, percentiles=(50, 90, 99)).distributions
    ttft = d["ttft"]
    assert ttft is not None
    assert (ttft.count, ttft.mean_ms, ttft.median_ms) == (3, pytest.approx(200), pytest.approx(200))
    assert ttft.std_ms == pytest.approx(math.sqrt(20000 / 3))  # population std, as numpy/vLLM
    assert ttft.percentiles_ms[90] == pytest.approx(280)  # linear: 200 + 0.8 * 100
    assert ttft.percentiles_ms[50] == pytest.approx(200)
    assert d["tpot"].mean_ms == pytest.approx(87.5)  # type: ignore[union-attr]
    itl = d["itl"]
    assert itl is not None and itl.count == 5  # pooled over requests
    assert (itl.mean_ms, itl.median_ms) == (pytest.approx(90), pytest.approx(100))
    assert d["e2el"].mean_ms == pytest.approx(350)  # type: ignore[union-attr]
    assert d["ttst"].mean_ms == pytest.approx(75)  # type: ignore[union-attr]
    # guidellm's TPOT / llmperf's ITL: E2EL / output tokens = 83.3, 200, 150
    assert d["e2el_per_token"].mean_ms == pytest.approx((250 / 3 + 200 + 150) / 3)  # type: ignore[union-attr]


def test_peaks():
    ok_only = [R1, R2, R4]
    assert peak_output_tokens_per_s(RUN) == 4.0  # bucket [1 s, 2 s) holds R4's four chunks
    assert peak_concurrency(RUN) == 2  # R1 and R2 overlap; R4 alone
    assert peak_concurrency_per_second(ok_only) == 2


def test_peak_concurrency_intervals_are_half_open():
    back_to_back = [ok(0.0, [0.5, 1.0], 2), ok(1.0, [1.5, 2.0], 2)]
    assert peak_concurrency(back_to_back) == 1
    assert peak_concurrency_per_second(back_to_back) == 2  # vLLM's buckets count both in [1, 2)


def test_goodput():
    assert compute_metrics(RUN, 2.0, slo=Slo(ttft_ms=250, tpot_ms=80)).request_goodput == pytest.approx(1.0)
    assert compute_metrics(RUN, 2.0, slo=Slo(e2el_ms=220)).request_goodput == pytest.approx(0.5)
    assert meets_slo(R2, Slo(tpot_ms=0.001))  # one token counts as TPOT 0, as vLLM
    assert not meets_slo(R1, Slo(tpot_ms=74.9))


def test_missing_usage_and_no_requests():
    no_usage = ok(0.0, [0.1, 0.2], None)
    m = compute_metrics([no_usage], 1.0)
    assert m.total_output_tokens == 0
    assert m.distributions["tpot"] is None  # no token count, no TPOT
    assert m.distributions["itl"].count == 1  # type: ignore[union-attr]
    empty = compute_metrics([failed(0.0), failed(0.1, "timeout")], 1.0)
    assert (empty.completed, empty.failed) == (0, 2)
    assert empty.errors_by_kind == {"http_503": 1, "timeout": 1}
    assert all(d is None for d in empty.distributions.values())
    assert (empty.max_output_tokens_per_s, empty.max_concurrent_requests) == (0.0, 0)
    assert compute_metrics([], 0.0).request_throughput == 0.0


def test_queue_time_is_separate_from_ttft():
    waited = ok(0.5, [0.6], 1, scheduled=0.0)
    d = compute_metrics([waited], 1.0).distributions
    assert d["queue"].mean_ms == pytest.approx(500)  # type: ignore[union-attr]
    assert d["ttft"].mean_ms == pytest.approx(100)  # type: ignore[union-attr]


def test_distribution_of_nothing_is_none():
    assert distribution([], (50,)) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ttft=500", Slo(ttft_ms=500)),
        ("ttft=500,tpot=50,e2el=2000", Slo(500, 50, 2000)),
        ("ttft:500 tpot:50", Slo(500, 50)),
        (" TTFT = 1.5 ", Slo(ttft_ms=1.5)),
    ],
)
def test_parse_slo(text, expected):
    assert parse_slo(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ttft=abc", "'abc' is not a number"),
        ("latency=5", "NAME one of ttft, tpot, e2el"),
        ("ttft", "is not NAME=MS"),
        ("ttft=-1", "positive"),
        ("", "at least one"),
    ],
)
def test_parse_slo_errors(text, message):
    with pytest.raises(ValueError, match=message):
        parse_slo(text)
