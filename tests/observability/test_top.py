import math

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from corral.metrics import EndpointState, RouterMetrics
from corral.observability.top import bucket_quantile, model_rows, parse_samples, render_rows


def test_bucket_quantile_interpolates_like_prometheus():
    buckets = {0.1: 10.0, 0.5: 30.0, 1.0: 40.0, math.inf: 40.0}
    assert bucket_quantile(0.25, buckets) == pytest.approx(0.1)  # rank 10 ends the first bucket
    assert bucket_quantile(0.5, buckets) == pytest.approx(0.1 + 0.4 * (10 / 20))
    assert bucket_quantile(0.99, buckets) == pytest.approx(0.5 + 0.5 * (9.6 / 10))
    assert bucket_quantile(0.5, {0.1: 0.0, math.inf: 0.0}) is None
    assert bucket_quantile(0.99, {0.1: 1.0, math.inf: 10.0}) == pytest.approx(0.1)  # past the last finite bound


def _scrape(metrics: RouterMetrics) -> dict:
    return parse_samples(generate_latest(metrics.registry).decode())


def test_rates_and_windowed_ttft_between_two_scrapes():
    metrics = RouterMetrics(CollectorRegistry())
    endpoints = [EndpointState("chat", "http://a", True, 0), EndpointState("chat", "http://b", False, 0)]
    metrics.watch_endpoints(lambda: endpoints)
    metrics.requests.labels("chat", "http://a", "200").inc(5)
    metrics.ttft.labels("chat").observe(9.0)  # before the window: must not count
    before = _scrape(metrics)
    metrics.requests.labels("chat", "http://a", "200").inc(8)
    metrics.requests.labels("chat", "http://a", "503").inc(2)
    for _ in range(10):
        metrics.ttft.labels("chat").observe(0.02)
    metrics.completion_tokens.labels("chat").inc(100)
    metrics.prompt_tokens.labels("chat").inc(400)
    metrics.cached_tokens_actual.labels("chat").inc(300)
    endpoints[0] = EndpointState("chat", "http://a", True, 3)
    (row,) = model_rows(before, _scrape(metrics), interval_s=2.0)
    assert row.model == "chat"
    assert row.requests_per_s == pytest.approx(5.0) and row.errors_per_s == pytest.approx(1.0)
    assert row.completion_tokens_per_s == pytest.approx(50.0)
    assert row.cache_hit_ratio == pytest.approx(0.75)
    assert row.in_flight == 3
    assert 0.01 <= row.ttft_p50_s <= 0.025 and row.ttft_p99_s <= 0.025
    assert (row.healthy_endpoints, row.endpoints) == (1, 2)
    assert render_rows([row], "http://127.0.0.1:8000", 2.0).row_count == 1


def test_a_restarted_router_counts_from_zero():
    metrics = RouterMetrics(CollectorRegistry())
    metrics.requests.labels("chat", "http://a", "200").inc(50)
    before = _scrape(metrics)
    fresh = RouterMetrics(CollectorRegistry())
    fresh.requests.labels("chat", "http://a", "200").inc(4)
    (row,) = model_rows(before, _scrape(fresh), interval_s=1.0)
    assert row.requests_per_s == pytest.approx(4.0)
