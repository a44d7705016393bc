"""The tiers' metrics, read from the engine's stats at scrape time, and their JSON."""

from __future__ import annotations

from types import MappingProxyType

from prometheus_client import CollectorRegistry, generate_latest

from corral.metrics import WorkerMetrics
from corral.worker.kvstore.stats import TierCounters, TierStats
from corral.worker.prefix_store import PrefixStats


def test_each_tier_is_a_labelled_series_read_at_scrape_time() -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry, model="smol", with_process=False)
    tiers: list[TierStats] = []
    metrics.watch_kv_tiers(lambda: tiers)
    assert b"corral_worker_kv_tier_hits_total{" not in generate_latest(registry)
    tiers[:] = [
        TierStats("ram", hits=3, hit_tokens=300, entries=2, nbytes=1000),
        TierStats("redis", hits=1, misses=4, stored=2, errors=MappingProxyType({"unavailable": 5})),
    ]
    text = generate_latest(registry).decode()
    assert 'corral_worker_kv_tier_hits_total{model="smol",tier="ram"} 3.0' in text
    assert 'corral_worker_kv_tier_hit_tokens_total{model="smol",tier="ram"} 300.0' in text
    assert 'corral_worker_kv_tier_misses_total{model="smol",tier="redis"} 4.0' in text
    assert 'corral_worker_kv_tier_stores_total{model="smol",tier="redis"} 2.0' in text
    assert 'corral_worker_kv_tier_errors_total{kind="unavailable",model="smol",tier="redis"} 5.0' in text
    assert 'corral_worker_kv_tier_bytes{model="smol",tier="ram"} 1000.0' in text
    assert 'corral_worker_kv_tier_entries{model="smol",tier="ram"} 2.0' in text


def test_the_stats_json_carries_every_tier() -> None:
    counters = TierCounters("disk")
    counters.hit(64)
    counters.error("write", "disk full")
    counters.error("write", "disk full")
    stats = PrefixStats(1, 2, 300, 1000, hits=1)
    stats = stats._replace(tiers=(stats.ram_tier(), counters.snapshot(entries=1, nbytes=10)))
    body = stats.to_dict()
    assert body["hits"] == 1 and body["tiers"]["ram"]["nbytes"] == 300
    assert body["tiers"]["disk"] == {
        "tier": "disk", "hits": 1, "hit_tokens": 64, "misses": 0, "stored": 0, "evicted": 0,
        "entries": 1, "nbytes": 10, "errors": {"write": 2},
    }
