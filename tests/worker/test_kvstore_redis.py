"""The Redis tier against a real redis-server: pointers, the shared bound, TTLs, outages, damage."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest
import redis
from tests.redis_server import RedisServer, redis_server  # noqa: F401  (the fixture)
from tests.worker.kvstore_support import BLOCK, COMPAT, hashes, held, state

from corral.prefix.events import MEDIUM_REDIS, BlockRemoved
from corral.worker.kv_events import KVEventLog
from corral.worker.kvstore.codec import encode, encoded_size
from corral.worker.kvstore.redis_tier import CHECK_EVERY_S, RedisTier, connect
from corral.worker.kvstore.tier import Candidate
from corral.worker.kvstore.tiered import load_state

pytestmark = pytest.mark.slow

CHUNK_BLOCKS = 2  # chunks of 8 tokens
LONG = list(range(1, 33))  # four chunks
OTHER = list(range(500, 516))  # two chunks
THIRD = list(range(900, 916))
STATE_BYTES = 2000
BLOB_BYTES = encoded_size(state(OTHER, STATE_BYTES))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Ticking:
    """A wall clock that moves 10 ms per reading: uses in a row have distinct LRU scores."""

    def __init__(self, skew_s: float = 0.0) -> None:
        self.now = time.time() + skew_s

    def __call__(self) -> float:
        self.now += 0.01
        return self.now


def make_tier(url: str, *, max_bytes: int = 1 << 20, ttl_s: float = 60.0, timeout_s: float = 1.0,
              clock: Clock | None = None, wall: Ticking | None = None,
              events: KVEventLog | None = None) -> RedisTier:
    return RedisTier(
        connect(url, timeout_s=timeout_s), compat=COMPAT, block_size=BLOCK, chunk_blocks=CHUNK_BLOCKS,
        max_bytes=max_bytes, ttl_s=ttl_s, events=events or KVEventLog(block_size=BLOCK),
        clock=wall or Ticking(), monotonic=clock or Clock(),
    )


def store(tier: RedisTier, tokens: list[int]) -> None:
    tier.store(hashes(tokens), encode(state(tokens, STATE_BYTES), COMPAT))


def load(tier: RedisTier, prompt: list[int]) -> list[int] | None:
    candidate = tier.match(hashes(prompt))
    loaded = None if candidate is None else load_state(tier, candidate, COMPAT)
    return None if loaded is None else loaded.tokens.tolist()


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:  # noqa: F811
    with redis.Redis.from_url(redis_server.url) as connection:
        yield connection


def test_a_prompt_sharing_only_the_first_chunks_finds_the_prefix(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    events = KVEventLog(block_size=BLOCK)
    tier = make_tier(redis_server.url, events=events)
    store(tier, LONG)
    prompt = LONG[:20] + [7] * 12  # two whole chunks and half of the third in common
    candidate = tier.match(hashes(prompt))
    assert candidate == Candidate(hashes(LONG)[-1], 2 * CHUNK_BLOCKS, pointer=hashes(prompt)[3])
    assert load(tier, prompt) == LONG  # the whole state; the engine keeps what matches
    assert tier.match(hashes(OTHER)) is None
    assert tier.match(hashes(LONG[:6])) is None  # not even one whole chunk
    assert held(events) == {"redis": set(hashes(LONG))}
    assert tier.stats().stored == 1


def test_every_key_has_a_ttl(redis_server: RedisServer, client: redis.Redis) -> None:  # noqa: F811
    tier = make_tier(redis_server.url, ttl_s=300)
    store(tier, LONG)
    store(tier, OTHER)
    keys = list(client.scan_iter("corral:kv:*"))
    assert len(keys) == 2 + 4 + 2 + 4  # blobs, pointers, and lru, sizes, ptrs, bytes
    assert all(0 < client.pttl(key) <= 300_000 for key in keys)


def test_all_workers_share_one_byte_bound_and_the_least_recently_used_goes(
    redis_server: RedisServer, client: redis.Redis,  # noqa: F811
) -> None:
    events_one, events_two = KVEventLog(block_size=BLOCK), KVEventLog(block_size=BLOCK)
    bound = 2 * BLOB_BYTES + BLOB_BYTES // 2
    wall = Ticking()
    one = make_tier(redis_server.url, max_bytes=bound, wall=wall, events=events_one)
    two = make_tier(redis_server.url, max_bytes=bound, wall=wall, events=events_two)
    store(one, OTHER)
    store(two, THIRD)
    assert load(two, OTHER) == OTHER  # worker two uses what worker one stored: OTHER is fresh
    store(two, LONG[:16])
    assert load(one, THIRD) is None and load(two, OTHER) == OTHER and load(one, LONG[:16]) == LONG[:16]
    total = int(client.get("corral:kv:bytes") or 0)
    assert total == 2 * BLOB_BYTES <= bound
    assert sum(int(v) for v in client.hvals("corral:kv:sizes")) == total
    assert not [k for k in client.scan_iter("corral:kv:*:p:*") if client.get(k).split()[0].endswith(  # type: ignore[union-attr]
        f"{hashes(THIRD)[-1]:016x}".encode())]  # the evicted blob's pointers went with it
    assert held(events_two) == {"redis": set(hashes(LONG[:16]))}  # two wrote THIRD, saw it go
    assert held(events_one) == {"redis": set(hashes(OTHER))}
    assert two.stats().evicted == 1


def test_a_longer_prefix_replaces_the_blob_it_contains(
    redis_server: RedisServer, client: redis.Redis,  # noqa: F811
) -> None:
    tier = make_tier(redis_server.url)
    store(tier, LONG[:16])
    store(tier, LONG)
    blobs = list(client.scan_iter("corral:kv:*:b:*"))
    assert blobs == [tier.blob_key(hashes(LONG)[-1]).encode()]
    assert load(tier, LONG[:16] + [3] * 8) == LONG
    assert int(client.get("corral:kv:bytes") or 0) == encoded_size(state(LONG, STATE_BYTES))


def test_a_damaged_blob_is_discarded_and_counted(redis_server: RedisServer, client: redis.Redis) -> None:  # noqa: F811
    tier = make_tier(redis_server.url)
    store(tier, OTHER)
    key = tier.blob_key(hashes(OTHER)[-1])
    client.setrange(key, 100, b"\xff\xff\xff")
    assert load(tier, OTHER) is None
    assert tier.stats().errors == {"corrupt": 1}
    assert not list(client.scan_iter("corral:kv:*:[bp]:*"))
    assert int(client.get("corral:kv:bytes") or 0) == 0


def test_a_blob_gone_meanwhile_is_a_miss_and_its_pointer_is_cleaned(
    redis_server: RedisServer, client: redis.Redis,  # noqa: F811
) -> None:
    tier = make_tier(redis_server.url)
    store(tier, OTHER)
    client.delete(tier.blob_key(hashes(OTHER)[-1]))  # expired, or evicted by maxmemory
    assert load(tier, OTHER) is None and tier.stats().errors == {}
    assert client.get(tier.pointer_key(hashes(OTHER)[-1])) is None


def test_an_outage_is_a_miss_logged_once_and_redis_is_tried_again_later(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture,  # noqa: F811
) -> None:
    clock = Clock()
    events = KVEventLog(block_size=BLOCK)
    tier = make_tier(redis_server.url, clock=clock, timeout_s=0.5, events=events)
    store(tier, OTHER)
    redis_server.stop()
    assert held(events) == {"redis": set(hashes(OTHER))}
    assert load(tier, OTHER) is None  # refused connection: a miss
    assert not tier.available() and held(events) == {}  # nothing to count on while it is down
    assert load(tier, OTHER) is None and tier.match(hashes(OTHER)) is None  # not even tried
    store(tier, THIRD)
    assert tier.stats().errors == {"unavailable": 1}
    clock.now += 1.0  # past the first backoff
    assert load(tier, OTHER) is None  # tried again: still down, a longer backoff
    assert tier.stats().errors == {"unavailable": 2}
    assert caplog.text.count("Redis failed") == 1  # one warning per outage
    redis_server.start()  # back, empty
    clock.now += 5.0
    assert load(tier, OTHER) is None
    assert "Redis answers again" in caplog.text
    store(tier, OTHER)
    assert load(tier, OTHER) == OTHER


def test_a_hung_redis_is_a_miss_after_the_timeout(redis_server: RedisServer) -> None:  # noqa: F811
    tier = make_tier(redis_server.url, timeout_s=0.2)
    store(tier, OTHER)
    assert redis_server.pid is not None
    os.kill(redis_server.pid, signal.SIGSTOP)
    try:
        assert load(tier, OTHER) is None
        assert tier.stats().errors == {"unavailable": 1}
    finally:
        os.kill(redis_server.pid, signal.SIGCONT)


def blobs(client: redis.Redis) -> set[bytes]:
    return set(client.scan_iter("corral:kv:*:b:*"))


def test_skewed_worker_clocks_neither_reorder_the_lru_nor_break_the_bound(
    redis_server: RedisServer, client: redis.Redis,  # noqa: F811
) -> None:
    bound = 2 * BLOB_BYTES + BLOB_BYTES // 2
    ahead = make_tier(redis_server.url, max_bytes=bound, wall=Ticking(skew_s=3600.0))
    behind = make_tier(redis_server.url, max_bytes=bound, wall=Ticking(skew_s=-3600.0))
    store(ahead, OTHER)
    store(ahead, THIRD)
    assert load(behind, OTHER) == OTHER  # used last, by Redis' clock (first, by the workers')
    store(behind, LONG[:16])  # over the bound: THIRD is the least recently used
    assert blobs(client) == {behind.blob_key(hashes(k)[-1]).encode() for k in (OTHER, LONG[:16])}
    assert int(client.get("corral:kv:bytes") or 0) == 2 * BLOB_BYTES
    scores = [score for _, score in client.zrange("corral:kv:lru", 0, -1, withscores=True)]
    redis_now_us = client.time()[0] * 1_000_000
    assert all(abs(score - redis_now_us) < 60_000_000 for score in scores)  # Redis' time, not a worker's

    assert load(ahead, OTHER) == OTHER  # newest again
    small = make_tier(redis_server.url, max_bytes=BLOB_BYTES + BLOB_BYTES // 2,
                      wall=Ticking(skew_s=-7200.0))
    store(small, THIRD)  # its bound holds one blob: every other one goes, whatever the clocks say
    assert blobs(client) == {small.blob_key(hashes(THIRD)[-1]).encode()}
    assert int(client.get("corral:kv:bytes") or 0) == BLOB_BYTES
    assert small.stats().evicted == 2


def test_blobs_another_worker_evicted_are_withdrawn_at_the_next_check(
    redis_server: RedisServer, client: redis.Redis,  # noqa: F811
) -> None:
    events_a = KVEventLog(block_size=BLOCK)
    clock_a = Clock()
    bound = BLOB_BYTES + BLOB_BYTES // 2  # one blob at a time
    a = make_tier(redis_server.url, max_bytes=bound, clock=clock_a, events=events_a)
    b = make_tier(redis_server.url, max_bytes=bound)
    store(a, OTHER)
    seq = events_a.seq
    assert load(a, OTHER) == OTHER  # a use of its own blob: still published, no event
    store(b, THIRD)  # evicts a's blob
    assert blobs(client) == {b.blob_key(hashes(THIRD)[-1]).encode()}
    assert a.match(hashes(LONG)) is None and held(events_a) == {"redis": set(hashes(OTHER))}  # not due
    clock_a.now += CHECK_EVERY_S
    assert a.match(hashes(LONG)) is None  # the check rides on this lookup's round trip
    assert held(events_a) == {}
    batches = events_a.since(seq)
    assert batches is not None
    assert [e for batch in batches for e in batch.events] == [BlockRemoved(tuple(hashes(OTHER)), MEDIUM_REDIS)]
    assert a.stats().entries == 0 and a.stats().errors == {}

    store(a, LONG[:16])  # evicts b's THIRD; a publishes its new blob
    store(b, OTHER)  # evicts a's LONG[:16]
    assert held(events_a) == {"redis": set(hashes(LONG[:16]))}
    clock_a.now += CHECK_EVERY_S
    store(a, THIRD)  # the check also rides on a store: the gone blob is withdrawn, the new one stays
    assert held(events_a) == {"redis": set(hashes(THIRD))}
    assert not a.holds(hashes(LONG[:16]))  # so the writer would store it again
